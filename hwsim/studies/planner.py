"""Capacity planning: which parallel plan to run a model on a cluster with, and how many devices
a deadline needs.

The search (`plan`):
1. enumerate the plans (tp, pp, dp, cp, ep, virtual stages and schedule, ZeRO stage,
   recompute, micro-batch) that `hwsim.workload.plan.resolve_plan` accepts;
2. estimate each one's peak memory (static memory of `hwsim.workload.memory` plus the
   activations of the micro-batches in flight, `peak_in_flight` of its schedule) and drop
   those that do not fit;
3. estimate each one's step time from the same kernel times the compiler uses (per-layer ops
   timed by `time_ops`, collectives timed alone on the real topology) and the schedules'
   closed-form bubbles; and a LOWER BOUND that holds for the simulation: no device's compute
   stream can finish before it has run all its kernels, nor the last stage before the first
   micro-batch's forward has crossed the stages before it;
4. simulate them (layer granularity) in the order of their estimates, never one whose lower
   bound is already slower than the best simulated plan, up to `max_simulations`;
5. rank the simulated plans that fit in memory by throughput (or cost, the same order on a
   fixed cluster) and say why the best wins.

Dominance prunes before estimating: sequence parallelism is always on with tp > 1 (same
collective volume, activations split over tp: Korthikanti et al. 2022, "Reducing Activation
Recomputation in Large Transformer Models", §4.2.2); GPipe is left out (1F1B has the same
bubble and holds fewer micro-batches: Narayanan et al. 2021, PipeDream-Flush); of plans with
the same estimated time the one with the least memory is kept.

This module is longer than the usual 400 lines because the search, the estimate it prunes
with and the deadline search share their private state (topology, kernel and collective caches).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Callable, Iterator, Sequence

from hwsim.config.schema import (Dtype, NetworkModelKind, ParallelConfig, Recompute, ScenarioConfig, Schedule)
from hwsim.errors import ConfigError, HwsimError, PlanError
from hwsim.hardware.kernels import KernelModel
from hwsim.hardware.topology import build_topology
from hwsim.network.collectives import CollectiveOp, collective_time
from hwsim.network.maxmin import Ideal, MaxMinFair
from hwsim.studies.executors import Executor, SerialExecutor
from hwsim.units import GiB, fmt_time
from hwsim.workload import ops as O
from hwsim.workload.compiler import GRAD_REDUCE_BYTES, time_ops
from hwsim.workload.memory import stage_params, static_memory_bytes
from hwsim.workload.plan import Plan, resolve_plan
from hwsim.workload.schedules import Action, chunk_layers, peak_in_flight, pipeline_schedule, split_backward
from hwsim.workload.shard import Shard, is_moe_layer, layer_param_count

__all__ = ["RankBy", "SearchSpace", "Candidate", "Estimate", "PlannedRun", "PlanReport", "DeadlineReport",
           "enumerate_candidates", "Estimator", "plan_search", "fewest_devices", "simulate_candidate"]

SECONDS_PER_DAY = 86400.0


class RankBy(StrEnum):
    THROUGHPUT = "throughput"
    COST = "cost"


@dataclass(frozen=True)
class SearchSpace:
    """The values tried per dimension; None: every value that can be valid (tp up to a node)."""

    tp: tuple[int, ...] | None = None
    pp: tuple[int, ...] | None = None
    cp: tuple[int, ...] = (1, 2, 4, 8)
    ep: tuple[int, ...] | None = None
    virtual_stages: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    schedules: tuple[Schedule, ...] = (Schedule.ONE_F_ONE_B, Schedule.INTERLEAVED, Schedule.ZERO_BUBBLE)
    zero_stages: tuple[int, ...] = (0, 1, 2, 3)
    recompute: tuple[Recompute, ...] = (Recompute.NONE, Recompute.SELECTIVE, Recompute.FULL)
    micro_batch: tuple[int, ...] = (1, 2, 4, 8)


@dataclass(frozen=True, slots=True)
class Candidate:
    tp: int
    pp: int
    dp: int
    cp: int
    ep: int
    virtual_stages: int
    schedule: Schedule
    zero_stage: int
    recompute: Recompute
    micro_batch: int
    sequence_parallel: bool

    @property
    def label(self) -> str:
        """'tp4 pp4 dp64 v8 zero2 rc=sel mb1': v8 = interleaved with 8 virtual stages, zb = zero-bubble
        (ZB-H1); rc = recompute none | sel(ective) | full; mb = micro-batch."""
        sched = {Schedule.INTERLEAVED: f" v{self.virtual_stages}", Schedule.ZERO_BUBBLE: " zb",
                 Schedule.GPIPE: " gpipe"}.get(self.schedule, "") if self.pp > 1 else ""
        extra = "".join(f" {k}{v}" for k, v in (("cp", self.cp), ("ep", self.ep)) if v > 1)
        sp = " no-sp" if self.tp > 1 and not self.sequence_parallel else ""
        rc = {Recompute.SELECTIVE: "sel"}.get(self.recompute, self.recompute.value)
        return f"tp{self.tp} pp{self.pp} dp{self.dp}{extra}{sched} zero{self.zero_stage} rc={rc} mb{self.micro_batch}{sp}"

    def apply(self, scenario: ScenarioConfig) -> ScenarioConfig:
        par = scenario.parallel.model_copy(update=dict(
            tp=self.tp, pp=self.pp, dp=self.dp, cp=self.cp, ep=self.ep, virtual_stages=self.virtual_stages,
            schedule=self.schedule, zero_stage=self.zero_stage, recompute=self.recompute,
            sequence_parallel=self.sequence_parallel))
        training = scenario.training.model_copy(update={"micro_batch": self.micro_batch})
        return scenario.model_copy(update={"parallel": par, "training": training})

    @classmethod
    def of(cls, plan: Plan) -> "Candidate":
        return cls(plan.tp, plan.pp, plan.dp, plan.cp, plan.ep, plan.virtual_stages, plan.schedule,
                   plan.zero_stage, plan.recompute, plan.micro_batch, plan.sequence_parallel)


@dataclass(frozen=True)
class Estimate:
    candidate: Candidate
    memory_bytes: float       # estimated peak memory of the fullest device
    step_time_s: float        # estimated step time (orders the simulations)
    lower_bound_s: float      # the simulated step time cannot be shorter


@dataclass
class PlannedRun:
    candidate: Candidate
    estimate: Estimate | None
    scenario: dict[str, Any]
    summary: dict[str, Any] | None = None
    error: str | None = None
    duration_s: float = 0.0
    baseline: bool = False

    @property
    def fits(self) -> bool:
        return self.summary is not None and bool(self.summary["fits_in_memory"])

    @property
    def step_time_s(self) -> float:
        return self.summary["step_time_s"] if self.summary else math.inf


@dataclass
class PlanReport:
    devices: int
    rank_by: RankBy
    ranked: list[PlannedRun]            # simulated, fit in memory (and budget), best first
    rejected: list[PlannedRun]          # simulated but out of memory, over budget, or failed
    baseline: PlannedRun | None
    counts: dict[str, int]
    elapsed_s: float
    explanation: list[str] = field(default_factory=list)

    @property
    def best(self) -> PlannedRun | None:
        return self.ranked[0] if self.ranked else None


def _weighted_peak(steps, chunk_bytes: Sequence[float]) -> float:
    """Most bytes held at once when F of chunk c allocates chunk_bytes[c] and B frees it."""
    held = peak = 0.0
    for st in steps:
        if st.action == Action.F:
            held += chunk_bytes[st.chunk]
            peak = max(peak, held)
        elif st.action == Action.B:
            held -= chunk_bytes[st.chunk]
    return peak


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def enumerate_candidates(scenario: ScenarioConfig, space: SearchSpace = SearchSpace(),
                         counts: dict[str, int] | None = None) -> Iterator[Candidate]:
    """Every plan of `space` that resolve_plan accepts (with sequence parallelism on when tp > 1)."""
    counts = counts if counts is not None else {}
    model, cluster, train = scenario.model, scenario.cluster, scenario.training
    n = cluster.n_devices
    tps = space.tp or [d for d in _divisors(model.heads) if d <= cluster.devices_per_node]
    for tp in tps:
        for cp in space.cp:
            if n % (tp * cp) or model.seq_len % cp:
                continue
            for pp in space.pp or _divisors(n // (tp * cp)):
                if (n // (tp * cp)) % pp or pp > model.layers:
                    continue
                dp = n // (tp * cp * pp)
                eps = ([1] if model.moe is None else
                       space.ep or [e for e in _divisors(model.moe.experts) if (dp * cp) % e == 0])
                for ep, (sched, v), zero, rec, mb in _product(
                        eps, _schedules(space, pp, model.layers), space.zero_stages if dp > 1 else (0,),
                        space.recompute, space.micro_batch):
                    if train.global_batch % (mb * dp):
                        continue
                    counts["enumerated"] = counts.get("enumerated", 0) + 1
                    cand = Candidate(tp, pp, dp, cp, ep, v, sched, zero, rec, mb, tp > 1)
                    try:
                        resolve_plan(cand.apply(scenario))
                    except PlanError:
                        counts["invalid"] = counts.get("invalid", 0) + 1
                        continue
                    yield cand


def _schedules(space: SearchSpace, pp: int, layers: int) -> list[tuple[Schedule, int]]:
    if pp == 1:
        return [(Schedule.ONE_F_ONE_B, 1)]
    out = []
    for s in space.schedules:
        if s == Schedule.INTERLEAVED:
            out += [(s, v) for v in space.virtual_stages if v > 1 and pp * v <= layers]
        else:
            out.append((s, 1))
    return out


def _product(*lists: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
    if not lists:
        yield ()
        return
    for head in lists[0]:
        for rest in _product(*lists[1:]):
            yield (head, *rest)


@dataclass(frozen=True)
class _LayerTimes:
    fwd_s: float           # compute
    bwd_s: float           # compute, whole backward
    bwd_weight_s: float    # of which weight gradients (zero-bubble's W)
    fwd_comm_s: float      # blocking collectives (tp, cp, ep)
    bwd_comm_s: float
    act_bytes: float
    act_full_bytes: float  # without any recompute (the transient of a full recompute)
    n_params: float


class Estimator:
    """Estimates memory and step time of candidates on one scenario's cluster and model."""

    def __init__(self, scenario: ScenarioConfig):
        self.scenario = scenario
        self.topology = build_topology(scenario.cluster)
        self.kernels = KernelModel(scenario.cluster.accelerator)
        cap = self.topology.capacity_bytes_per_s
        self.network = MaxMinFair(cap) if scenario.simulation.network_model == NetworkModelKind.MAXMIN else Ideal(cap)
        self._layers: dict[tuple, _LayerTimes] = {}
        self._works: dict[tuple, tuple] = {}
        self._cache: dict[tuple, Any] = {}
        self._ends: dict[tuple, tuple[float, float, float, float]] = {}
        self._comm: dict[tuple, float] = {}
        self._groups: dict[tuple, tuple] = {}
        self._in_flight: dict[tuple, tuple[int, ...]] = {}

    def _shard(self, plan: Plan) -> Shard:
        return Shard(micro_batch=plan.micro_batch, seq_len=self.scenario.model.seq_len, tp=plan.tp, cp=plan.cp,
                     ep=plan.ep, sequence_parallel=plan.sequence_parallel,
                     dtype_bytes=4 if plan.precision == Dtype.FP32 else 2, fp8=plan.fp8)

    def _group_of(self, plan: Plan, axis: str) -> tuple:
        key = (axis, plan.tp, plan.cp, plan.dp, plan.pp, plan.ep, plan.order)
        if key not in self._groups:
            if axis == "ep":
                groups = plan.ep_groups(0)
            elif axis == "pp":
                groups = tuple((r, plan.rank(**{**plan.coords(r), "pp": 1})) for r in range(plan.n_devices)
                               if plan.coords(r)["pp"] == 0)
            else:
                groups = plan.groups(axis, 0)
            self._groups[key] = groups
        return self._groups[key]

    def comm_s(self, plan: Plan, op: str, axis: str, size_bytes: float) -> float:
        """One collective of every `axis` group of stage 0 at once (as the compiler charges it)."""
        key = (op, axis, size_bytes, plan.tp, plan.cp, plan.dp, plan.pp, plan.ep)
        if key not in self._comm:
            groups = self._group_of(plan, axis)
            if op == "send-recv" and axis == "cp":
                groups = tuple((g[i], g[(i + 1) % len(g)]) for g in groups for i in range(len(g)))
            if not groups or size_bytes <= 0 or all(len(g) < 2 for g in groups):
                self._comm[key] = 0.0
            else:
                self._comm[key] = collective_time(self.topology, self.network, CollectiveOp(op), groups, size_bytes)
        return self._comm[key]

    def _sum(self, works, plan: Plan) -> tuple[float, float]:
        """(compute seconds, exposed collective seconds): a blocking collective in full, an
        overlapped one by how much it outlasts the kernel it runs beside."""
        compute = comm = 0.0
        for i, w in enumerate(works):
            if w.comm is None:
                compute += w.duration_s
            elif not w.overlapped:
                comm += self.comm_s(plan, *w.comm)
            else:
                beside = works[i + 1].duration_s if i + 1 < len(works) else 0.0
                comm += max(self.comm_s(plan, *w.comm) - beside, 0.0)
        return compute, comm

    def _layer_works(self, plan: Plan, moe: bool) -> tuple[list, list, float, float, float, float]:
        key = (plan.tp, plan.cp, plan.ep, plan.micro_batch, plan.sequence_parallel, plan.precision,
               plan.recompute, moe)
        if key not in self._works:
            model, shard = self.scenario.model, self._shard(plan)
            bwd_ops = O.layer_backward_ops(model, shard, moe)
            weight = time_ops([o for o in bwd_ops if o.phase == O.Phase.BWD_WEIGHT], self.kernels, plan, "w")
            self._works[key] = (time_ops(O.layer_forward_ops(model, shard, moe), self.kernels, plan, "fwd"),
                                time_ops(bwd_ops, self.kernels, plan, "bwd"),
                                sum(w.duration_s for w in weight if w.comm is None),
                                O.layer_activation_bytes(model, shard, plan.recompute, moe_layer=moe),
                                O.layer_activation_bytes(model, shard, Recompute.NONE, moe_layer=moe),
                                float(layer_param_count(model, moe, plan.tp, plan.ep)))
        return self._works[key]

    def layer_times(self, plan: Plan, moe: bool) -> _LayerTimes:
        key = (plan.tp, plan.cp, plan.ep, plan.dp, plan.pp, plan.micro_batch, plan.sequence_parallel,
               plan.precision, plan.recompute, moe)
        if key not in self._layers:
            fwd, bwd, w, act, act_full, n_params = self._layer_works(plan, moe)
            f, fc = self._sum(fwd, plan)
            b, bc = self._sum(bwd, plan)
            self._layers[key] = _LayerTimes(f, b, w, fc, bc, act, act_full, n_params)
        return self._layers[key]

    def _end_times(self, plan: Plan) -> tuple[float, float, float, float]:
        """(embedding fwd+bwd compute, its comm, head fwd+bwd compute, its comm) per micro-batch."""
        key = (plan.tp, plan.cp, plan.dp, plan.pp, plan.micro_batch, plan.sequence_parallel, plan.precision)
        if key not in self._ends:
            model, shard = self.scenario.model, self._shard(plan)
            out = []
            for pair in (O.embedding_ops(model, shard), O.head_ops(model, shard)):
                works = time_ops(pair.forward, self.kernels, plan, "f") + time_ops(pair.backward, self.kernels, plan, "b")
                out += list(self._sum(works, plan))
            self._ends[key] = tuple(out)
        return self._ends[key]

    def _schedule(self, plan: Plan):
        key = (plan.schedule, plan.pp, plan.n_micro, plan.virtual_stages)
        if key not in self._in_flight:
            sched = pipeline_schedule(plan.schedule, plan.pp, plan.n_micro, plan.virtual_stages)
            self._in_flight[key] = (sched, tuple(peak_in_flight(s) for s in sched))
        return self._in_flight[key]

    def _chunk_kinds(self, pp: int, v: int) -> list[list[tuple[int, int]]]:
        """[stage][chunk] -> (dense layers, MoE layers) of that chunk."""
        key = ("chunks", pp, v)
        if key not in self._cache:
            model = self.scenario.model
            self._cache[key] = [[(sum(1 for i in c if not is_moe_layer(model, i)),
                                  sum(1 for i in c if is_moe_layer(model, i))) for c in stage]
                                for stage in chunk_layers(model.layers, pp, v)]
        return self._cache[key]

    def _stage_params(self, plan: Plan, stage: int) -> float:
        key = ("params", plan.pp, plan.virtual_stages, plan.tp, plan.ep, stage)
        if key not in self._cache:
            self._cache[key] = stage_params(self.scenario.model, plan.pp, stage, plan.virtual_stages, plan.tp,
                                            plan.ep)
        return self._cache[key]

    def _optimizer_s(self, plan: Plan, stage: int) -> float:
        shard = plan.dp if plan.zero_stage >= 1 else 1
        key = ("opt", plan.pp, plan.virtual_stages, plan.tp, plan.ep, stage, shard)
        if key not in self._cache:
            works = time_ops(O.optimizer_ops(self._stage_params(plan, stage) / shard), self.kernels, plan, "opt")
            self._cache[key] = sum(w.duration_s for w in works)
        return self._cache[key]

    def _chunk_sum(self, plan: Plan, kinds: tuple[int, int], attr: str) -> float:
        dense, moe = kinds
        total = dense * getattr(self.layer_times(plan, False), attr) if dense else 0.0
        return total + (moe * getattr(self.layer_times(plan, True), attr) if moe else 0.0)

    def memory_bytes(self, plan: Plan) -> float:
        """Static memory + the activations the schedule holds at its fullest (each stage: its
        peak in-flight micro-batches through its largest chunk; the last stage walked step by
        step, with the logits kept from the forward to the backward of the last chunk) + the
        transients (a full recompute's layer, ZeRO-3's gathered layers)."""
        model, train = self.scenario.model, self.scenario.training
        kinds = self._chunk_kinds(plan.pp, plan.virtual_stages)
        sched, peaks = self._schedule(plan)
        shard = self._shard(plan)
        moe_flags = (False, True) if model.moe else (False,)
        transient = max((self.layer_times(plan, f).act_full_bytes - self.layer_times(plan, f).act_bytes)
                        if plan.recompute == Recompute.FULL else 0.0 for f in moe_flags)
        if plan.zero_stage >= 3:
            transient += 2 * max(self.layer_times(plan, f).n_params for f in moe_flags) * shard.dtype_bytes
        worst = 0.0
        for s in range(plan.pp):
            static = sum(static_memory_bytes(self._stage_params(plan, s), plan.zero_stage, plan.dp, plan.precision,
                                             train.optimizer).values())
            chunk_act = [self._chunk_sum(plan, k, "act_bytes") for k in kinds[s]]
            if s == plan.pp - 1:
                chunk_act[-1] += O.head_activation_bytes(model, shard)
                act = _weighted_peak(sched[s], chunk_act)
            else:
                act = peaks[s] * max(chunk_act)
            worst = max(worst, static + act + transient)
        return worst

    def estimate(self, plan: Plan, memory_bytes: float | None = None) -> Estimate:
        memory = self.memory_bytes(plan) if memory_bytes is None else memory_bytes
        model = self.scenario.model
        pp, v, m = plan.pp, plan.virtual_stages, plan.n_micro
        kinds = self._chunk_kinds(pp, v)
        emb_c, emb_x, head_c, head_x = self._end_times(plan)
        full = plan.recompute == Recompute.FULL
        zero3 = plan.zero_stage >= 3
        dtype_bytes = self._shard(plan).dtype_bytes
        per_layer = {}   # moe flag -> (fwd incl. exposed comm, bwd incl. comm and recompute, W, compute)
        for flag in ((False, True) if model.moe else (False,)):
            lt = self.layer_times(plan, flag)
            lf = lt.fwd_s + lt.fwd_comm_s
            lb = lt.bwd_s + lt.bwd_comm_s + (lf if full else 0.0)
            if zero3:
                gather = self.comm_s(plan, "all-gather", "dp", lt.n_params * dtype_bytes)
                scatter = self.comm_s(plan, "reduce-scatter", "dp", lt.n_params * GRAD_REDUCE_BYTES)
                lf, lb = max(lf, gather), max(lb, gather, scatter)
            per_layer[flag] = (lf, lb, lt.bwd_weight_s, lt.fwd_s * (2 if full else 1) + lt.bwd_s)
        stage_f, stage_b, stage_w, stage_compute, opt = [], [], [], [], []
        for s in range(pp):
            dense = sum(k[0] for k in kinds[s])
            moe = sum(k[1] for k in kinds[s])
            f, b, w, compute = (dense * per_layer[False][i] + (moe * per_layer[True][i] if moe else 0.0)
                                for i in range(4))
            if s == 0:
                f, b, compute = f + emb_x + emb_c / 2, b + emb_c / 2, compute + emb_c
            if s == pp - 1:
                f, b, compute = f + head_x + head_c / 2, b + head_c / 2, compute + head_c
            stage_f.append(f)
            stage_b.append(b)
            stage_w.append(w)
            stage_compute.append(compute * m)
            opt.append(self._optimizer_s(plan, s))
        tf, tb, tw = max(stage_f), max(stage_b), max(stage_w)
        if plan.schedule == Schedule.INTERLEAVED:
            pipe = (m + (pp - 1) / v) * (tf + tb)
        elif split_backward(plan.schedule):
            pipe = m * (tf + tb) + (pp - 1) * (tf + max(tb - 2 * tw, 0.0))
        else:
            pipe = (m + pp - 1) * (tf + tb)
        extra = 0.0
        if pp > 1:
            p2p = plan.micro_batch * model.seq_len / plan.cp * model.hidden * dtype_bytes / plan.tp
            extra += 2 * (pp * v - 1) * self.comm_s(plan, "send-recv", "pp", p2p)
        if plan.dp > 1 and not zero3:
            grads = self._stage_params(plan, 0) * GRAD_REDUCE_BYTES
            reduce = self.comm_s(plan, "all-reduce" if plan.zero_stage == 0 else "reduce-scatter", "dp", grads)
            extra += max(reduce - tb, 0.0)
            if plan.zero_stage in (1, 2):
                extra += self.comm_s(plan, "all-gather", "dp",
                                     self._chunk_sum(plan, kinds[0][0], "n_params") * dtype_bytes)
        step = pipe + extra + max(opt)
        first_chunk_f = min(self._chunk_sum(plan, kinds[s][0], "fwd_s") for s in range(pp))
        lower = max(max(c + o for c, o in zip(stage_compute, opt)),
                    (pp - 1) * first_chunk_f + stage_compute[-1] + opt[-1])
        return Estimate(Candidate.of(plan), memory, max(step, lower), lower)


# --- the search ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _SimTask:
    index: int
    scenario: ScenarioConfig
    granularity: str | None
    fold: bool | None


def simulate_candidate(task: _SimTask) -> tuple[int, dict[str, Any] | None, str | None, float]:
    """(index, summary or None, error or None, seconds): a worker's unit (never raises)."""
    from hwsim.simulate import run_step
    from hwsim.studies.store import json_clean

    start = time.perf_counter()
    try:
        summary = json_clean(run_step(task.scenario, fold=task.fold, granularity=task.granularity).summary)
        return task.index, summary, None, time.perf_counter() - start
    except HwsimError as exc:
        return task.index, None, f"{type(exc).__name__}: {exc}", time.perf_counter() - start


def _cost_key(run: PlannedRun) -> float:
    ttt = run.summary.get("time_to_train") if run.summary else None
    if ttt:
        return ttt["cost_usd"]
    return run.step_time_s * run.summary["devices"] if run.summary else math.inf


def plan_search(scenario: ScenarioConfig, space: SearchSpace = SearchSpace(), rank_by: RankBy = RankBy.THROUGHPUT,
                max_simulations: int = 16, executor: Executor | None = None, granularity: str | None = "layer",
                include_baseline: bool = True, budget_usd: float | None = None,
                on_event: Callable[[str, int, int], None] | None = None) -> PlanReport:
    """Search the plans of `space` for `scenario`'s cluster, model and training (its own
    `parallel` is the baseline, simulated too when `include_baseline`). `on_event(stage, done,
    total)` reports progress ("estimate", "simulate")."""
    start = time.perf_counter()
    executor = executor or SerialExecutor()
    counts: dict[str, int] = {}
    capacity = scenario.cluster.accelerator.hbm
    estimator = Estimator(scenario)
    estimates: dict[tuple, Estimate] = {}   # dominance: same estimated time -> least memory
    for cand in enumerate_candidates(scenario, space, counts):
        plan = resolve_plan(cand.apply(scenario))
        memory = estimator.memory_bytes(plan)
        if memory > capacity:
            counts["over_memory_estimate"] = counts.get("over_memory_estimate", 0) + 1
            continue
        est = estimator.estimate(plan, memory)
        key = (round(est.step_time_s, 12), round(est.lower_bound_s, 12))
        kept = estimates.get(key)
        if kept is None or est.memory_bytes < kept.memory_bytes:
            estimates[key] = est
        counts["dominated"] = counts.get("dominated", 0) + 1
    counts["dominated"] = counts.get("dominated", 0) - len(estimates)
    ordered = sorted(estimates.values(), key=lambda e: (e.step_time_s, e.memory_bytes, e.candidate.label))
    counts["fit_estimate"] = len(ordered)
    if on_event:
        on_event("estimate", len(ordered), len(ordered))

    runs: list[PlannedRun] = []
    baseline: PlannedRun | None = None
    if include_baseline:
        try:
            base_cand = Candidate.of(resolve_plan(scenario))
            baseline = PlannedRun(base_cand, None, scenario.model_dump(mode="json"), baseline=True)
        except PlanError as exc:
            baseline = PlannedRun(_NO_PLAN, None, scenario.model_dump(mode="json"), error=str(exc), baseline=True)
    best = [math.inf]
    sims = [0]

    def tasks() -> Iterator[_SimTask]:
        if baseline is not None and baseline.error is None:
            runs.append(baseline)
            yield _SimTask(0, scenario, granularity, None)
        for i, est in enumerate(ordered):
            if baseline is not None and est.candidate == baseline.candidate:
                continue
            if sims[0] >= max_simulations:
                counts["not_simulated_limit"] = len(ordered) - i
                return
            if est.lower_bound_s >= best[0]:
                counts["pruned_by_bound"] = counts.get("pruned_by_bound", 0) + 1
                continue
            sims[0] += 1
            sc = est.candidate.apply(scenario)
            runs.append(PlannedRun(est.candidate, est, sc.model_dump(mode="json")))
            yield _SimTask(len(runs) - 1, sc, granularity, None)

    done = 0
    for index, summary, error, seconds in executor.map_unordered(simulate_candidate, tasks()):
        run = runs[index]
        run.summary, run.error, run.duration_s = summary, error, seconds
        if run.fits:
            best[0] = min(best[0], run.step_time_s)
        done += 1
        if on_event:
            on_event("simulate", done, min(max_simulations, len(ordered)) + (1 if baseline else 0))
    counts["simulated"] = sims[0] + (1 if baseline is not None and baseline.error is None else 0)

    ranked, rejected = [], []
    for run in runs:
        reason = _rejection(run, budget_usd)
        if reason:
            run.error = run.error or reason
            rejected.append(run)
        else:
            ranked.append(run)
    key = (lambda r: (_cost_key(r), r.candidate.label)) if rank_by == RankBy.COST else \
        (lambda r: (r.step_time_s, r.candidate.label))
    ranked.sort(key=key)
    report = PlanReport(scenario.cluster.n_devices, rank_by, ranked, rejected, baseline, counts,
                        time.perf_counter() - start)
    report.explanation = explain(report)
    return report


_NO_PLAN = Candidate(1, 1, 1, 1, 1, 1, Schedule.ONE_F_ONE_B, 0, Recompute.NONE, 1, False)


def _rejection(run: PlannedRun, budget_usd: float | None) -> str | None:
    if run.summary is None:
        return run.error or "not simulated"
    if not run.fits:
        s = run.summary
        return (f"does not fit: peak {s['peak_memory_bytes'] / GiB:.1f} GiB of "
                f"{s['memory_capacity_bytes'] / GiB:.1f} GiB")
    ttt = run.summary.get("time_to_train")
    if budget_usd is not None and ttt and ttt["cost_usd"] > budget_usd:
        return f"over budget: ${ttt['cost_usd']:,.0f} > ${budget_usd:,.0f}"
    return None


_RECOMPUTE_COST = {Recompute.NONE: 0, Recompute.SELECTIVE: 1, Recompute.FULL: 2}


def _why(a: Candidate, b: Candidate) -> list[str]:
    """Plain words for what changes from plan a to plan b."""
    out = []
    if a.recompute != b.recompute:
        less = _RECOMPUTE_COST[b.recompute] < _RECOMPUTE_COST[a.recompute]
        out.append(f"recompute {a.recompute.value} → {b.recompute.value}: " +
                   ("the backward re-runs less of the forward" if less else "keeps less activation memory"))
    if a.virtual_stages != b.virtual_stages:
        out.append(f"virtual stages {a.virtual_stages} → {b.virtual_stages}: " +
                   ("the pipeline bubble shrinks as (pp−1)/v" if b.virtual_stages > a.virtual_stages
                    else "fewer pipeline hops per micro-batch"))
    if a.micro_batch != b.micro_batch:
        out.append(f"micro-batch {a.micro_batch} → {b.micro_batch}: " +
                   ("larger kernels run closer to peak, fewer pipeline steps" if b.micro_batch > a.micro_batch
                    else "more micro-batches per step fill the pipeline bubble"))
    if a.zero_stage != b.zero_stage:
        out.append(f"ZeRO stage {a.zero_stage} → {b.zero_stage} (sharded over dp: 1 the optimizer state, "
                   f"2 also the gradients, 3 also the weights, gathered per layer)")
    for name, field_, what in (("tensor parallelism", "tp", "the per-layer collectives and GEMM shapes"),
                               ("pipeline depth", "pp", "the bubble and the memory per stage"),
                               ("context parallelism", "cp", "the attention ring and the tokens per device"),
                               ("expert parallelism", "ep", "the all-to-all and the experts per device")):
        if getattr(a, field_) != getattr(b, field_):
            out.append(f"{name} {getattr(a, field_)} → {getattr(b, field_)}: changes {what}")
    if a.schedule != b.schedule:
        out.append(f"schedule {a.schedule.value} → {b.schedule.value}")
    return ["  " + line for line in out]


def explain(report: PlanReport) -> list[str]:
    best = report.best
    if best is None:
        return ["no simulated plan fits in memory" + (" within the budget" if report.rejected else "")]
    s = best.summary
    lines = [f"best: {best.candidate.label}: {s['tokens_per_s']:,.0f} tokens/s, step {fmt_time(s['step_time_s'], 4)}, "
             f"MFU {s['mfu']:.1%}, peak memory {s['peak_memory_bytes'] / GiB:.1f} of "
             f"{s['memory_capacity_bytes'] / GiB:.1f} GiB"]
    others = [("baseline", report.baseline)] if report.baseline is not None and report.baseline is not best else []
    if len(report.ranked) > 1:
        others.append(("runner-up", report.ranked[1]))
    for name, other in others:
        if other.summary is None:
            label = "the scenario's own plan" if other.candidate is _NO_PLAN else other.candidate.label
            lines.append(f"the {name} ({label}) could not be simulated: {other.error}")
            continue
        gain = other.summary["step_time_s"] / s["step_time_s"] - 1
        lines.append(f"{gain:+.1%} throughput over the {name} {other.candidate.label}"
                     + ("" if other.fits else " (which does not fit in memory)"))
        lines += _why(other.candidate, best.candidate)
        deltas = sorted(((k, s["breakdown"].get(k, 0.0) - other.summary["breakdown"].get(k, 0.0))
                         for k in set(s["breakdown"]) | set(other.summary["breakdown"])), key=lambda kv: kv[1])
        moved = [f"{k} {'+' if d > 0 else '−'}{fmt_time(abs(d), 3)}" for k, d in deltas
                 if abs(d) > 1e-3 * s["step_time_s"]]
        if moved:
            lines.append("  time per step by part (best − " + name + "): " + ", ".join(moved))
    c = report.counts
    lines.append(f"searched {c.get('enumerated', 0)} plans: {c.get('invalid', 0)} invalid, "
                 f"{c.get('over_memory_estimate', 0)} over memory (estimate), {c.get('dominated', 0)} dominated, "
                 f"{c.get('simulated', 0)} simulated, {c.get('pruned_by_bound', 0)} pruned by the lower bound, "
                 f"{c.get('not_simulated_limit', 0)} left unsimulated by the limit")
    return lines


# --- the inverse question: fewest devices for a deadline ----------------------------------------

@dataclass
class DeadlineReport:
    deadline_days: float
    devices: int | None                 # fewest devices found to meet the deadline (None: none did)
    report: PlanReport | None           # the plan search at that device count
    curve: list[tuple[int, float]]      # (devices, estimated days of the best estimated plan)
    checked: list[tuple[int, float]]    # (devices, simulated days of the best simulated plan)


def _node_counts(max_nodes: int) -> list[int]:
    out = {max_nodes}
    k = 1
    while k <= max_nodes:
        out.add(k)
        if 3 * k // 2 <= max_nodes and k >= 2:
            out.add(3 * k // 2)
        k *= 2
    return sorted(out)


def fewest_devices(scenario: ScenarioConfig, deadline_days: float, max_devices: int,
                   space: SearchSpace = SearchSpace(), max_simulations: int = 8, executor: Executor | None = None,
                   granularity: str | None = "layer", budget_usd: float | None = None,
                   slack: float = 0.15) -> DeadlineReport:
    """The fewest devices (whole nodes: 1, 2, 3, 4, 6, 8, 12, ... up to `max_devices`) whose best
    plan trains `training.tokens` within `deadline_days`. Each count's best plan is estimated;
    from the first count whose estimate is within `slack` of the deadline, counts are
    simulated (a plan search each) in increasing order until one meets it."""
    if not scenario.training.tokens:
        raise ConfigError("--days: a deadline needs a token budget; give --tokens (e.g. --tokens 300e9) or "
                          "training.tokens in the scenario")
    dpn = scenario.cluster.devices_per_node
    if max_devices < dpn:
        raise ConfigError(f"--devices: {max_devices} is less than one node ({dpn} devices)")
    tokens_per_step = scenario.training.global_batch * scenario.model.seq_len
    steps = scenario.training.tokens / tokens_per_step
    curve, checked = [], []
    for nodes in _node_counts(max_devices // dpn):
        sc = _with_nodes(scenario, nodes)
        best_est = _best_estimate(sc, space)
        days = math.inf if best_est is None else best_est * steps / SECONDS_PER_DAY
        curve.append((sc.cluster.n_devices, days))
        if days > deadline_days * (1 + slack):
            continue
        report = plan_search(sc, space, RankBy.THROUGHPUT, max_simulations, executor, granularity,
                             include_baseline=False, budget_usd=budget_usd)
        sim_days = report.best.step_time_s * steps / SECONDS_PER_DAY if report.best else math.inf
        checked.append((sc.cluster.n_devices, sim_days))
        if sim_days <= deadline_days:
            return DeadlineReport(deadline_days, sc.cluster.n_devices, report, curve, checked)
    return DeadlineReport(deadline_days, None, None, curve, checked)


def _with_nodes(scenario: ScenarioConfig, nodes: int) -> ScenarioConfig:
    cluster = scenario.cluster.model_copy(update={"nodes": nodes})
    if nodes > 1 and cluster.inter_node is None:
        raise ConfigError("cluster.inter_node: searching over node counts needs an inter-node network; "
                          "give a node preset (--node dgx-h100) or cluster.inter_node in the scenario")
    return scenario.model_copy(update={"cluster": cluster, "parallel": ParallelConfig()})


def _best_estimate(scenario: ScenarioConfig, space: SearchSpace) -> float | None:
    estimator = Estimator(scenario)
    best = None
    for cand in enumerate_candidates(scenario, space):
        plan = resolve_plan(cand.apply(scenario))
        memory = estimator.memory_bytes(plan)
        if memory <= scenario.cluster.accelerator.hbm:
            est = estimator.estimate(plan, memory)
            best = est.step_time_s if best is None else min(best, est.step_time_s)
    return best
