"""Closed-form estimates of one training step: step time, a lower bound, peak memory — in
milliseconds, without the event simulation. One estimator serves `screen` (a summary like the
simulation's) and the capacity planner (`hwsim.studies.planner`, which ranks thousands of plans
with it before simulating the promising ones).

The same building blocks as the simulation — the compiler's per-layer kernel times
(`_layer_work`, `time_ops`), collectives priced on the real topology, the pipeline schedules,
the memory formulas — put together in closed form:

    step ≈ pipeline makespan of the schedule with per-chunk forward/backward times (the
           schedules' closed forms, `pipeline_makespan`, with the p2p hop as t_comm)
         + the extra work of the heaviest stage (embedding, logits) × micro-batches
         + exposed data-parallel communication (what the last backward cannot hide)
         + optimizer step.

    lower bound (holds for the simulation): no device's compute stream can finish before it has
         run all its kernels and its optimizer step, nor the last stage before the first
         micro-batch's forward has crossed the stages before it. The estimate is never below it.

    memory = static (weights, gradients, optimizer state of the fullest stage) + the activations
         the schedule holds at its fullest (the compiler frees a layer's at its B step) + the
         transients of the layer running (a full recompute's layer, ZeRO-3's two gathered layers):
         each stage's in-flight micro-batches through its largest chunk, the last stage walked
         step by step with the logits held from the last chunk's forward to its backward.

Collectives are priced for the representative's own group alone (no contention between
concurrent groups: the fat-trees of the presets have full bisection, so this is the cheaper
approximation DESIGN.md allows for screening). `tests/unit/test_screen.py` checks it against
the simulation; use the simulation (hwsim.simulate.run_step) for anything you will report.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from hwsim.config.schema import Dtype, NetworkModelKind, Recompute, ScenarioConfig, Schedule
from hwsim.hardware.kernels import KernelModel
from hwsim.hardware.topology import build_topology
from hwsim.network.collectives import CollectiveOp, collective_time
from hwsim.network.maxmin import Ideal, MaxMinFair
from hwsim.software.host import host_plan
from hwsim.software.profiles import effective_scenario, resolve_software
from hwsim.units import TFLOP
from hwsim.workload import ops as O
from hwsim.workload.compiler import Granularity, _layer_work, serial_seconds, time_ops
from hwsim.workload.memory import moe_static_memory_bytes, stage_param_split, stage_params
from hwsim.workload.plan import Plan, resolve_plan
from hwsim.workload.schedules import (Action, chunk_layers, pipeline_schedule, simulate_unit_times,
                                      split_backward)
from hwsim.workload.shard import Shard, is_moe_layer

__all__ = ["Estimate", "Estimator", "screen", "pipeline_makespan", "in_flight_chunks"]

_NO_TIME = (0.0, 0.0, 0.0)   # (compute s, exposed comm s, FLOP) of no work
_MAX_CACHED = 32             # estimators (and their topologies) kept for the next scenario


def pipeline_makespan(kind: Schedule, pp: int, m: int, v: int, t_f: float, t_b: float, t_w: float,
                      t_comm: float, schedule=None) -> float:
    """Makespan of a pipeline of uniform stages whose whole forward, backward (input gradient)
    and weight-gradient times per micro-batch are t_f, t_b, t_w — in closed form, so its cost
    does not grow with the number of micro-batches:
      GPipe, 1F1B:      (m + p − 1)(t_f + t_b)                 (Narayanan et al. 2021)
      interleaved (v):  m(t_f + t_b) + (p − 1)(t_f + t_b)/v    (Narayanan et al. SC'21)
      ZB-H1 (m ≥ p, t_w ≤ t_b): m(t_f + t_b + t_w) + (p − 1)(t_f + t_b − t_w)  (Qi et al. 2023)
    plus the pipeline hops of the warm-up and cool-down chains, 2(p·v − 1)·t_comm. Cases outside
    the closed forms (ZB-H1 with m < p or t_w > t_b) fall back to the schedule's recurrence.
    tests/unit/test_screen.py checks these against `simulate_unit_times`."""
    hops = 2 * (pp * v - 1) * t_comm if pp > 1 else 0.0
    if kind in (Schedule.GPIPE, Schedule.ONE_F_ONE_B) or (kind == Schedule.INTERLEAVED and v == 1):
        return (m + pp - 1) * (t_f + t_b) + hops
    if kind == Schedule.INTERLEAVED:
        return m * (t_f + t_b) + (pp - 1) * (t_f + t_b) / v + hops
    if m >= pp and t_w <= t_b:
        return m * (t_f + t_b + t_w) + (pp - 1) * (t_f + t_b - t_w) + hops
    schedule = schedule or pipeline_schedule(kind, pp, m, v)
    return simulate_unit_times(schedule, pp, v, t_f / v, t_b / v, t_w / v, t_comm)


def in_flight_chunks(kind: Schedule, pp: int, m: int, v: int, stage: int,
                     released_by: Action = Action.B) -> int:
    """How many (micro-batch, chunk) activation sets stage `stage` holds at its peak, each held
    from its F to its `released_by` step: GPipe m·v; 1F1B min(p − s, m); ZB-H1 the same when
    released at B (as the compiler does), min(p, m) when released at W (deferred weight
    gradients keep their inputs); interleaved Megatron's warm-up + 1 = 2(p − s − 1) + (v − 1)p + 1,
    at most m·v (m·v when m = p, where every forward runs first). Checked against
    `schedules.peak_in_flight` in tests/unit/test_screen.py."""
    if kind == Schedule.GPIPE:
        return m * v
    if kind == Schedule.ZERO_BUBBLE and released_by == Action.W:
        return min(pp, m)
    if kind == Schedule.INTERLEAVED and v > 1:   # with m == p Megatron runs every forward first
        return m * v if m == pp else min(m * v, 2 * (pp - stage - 1) + (v - 1) * pp + 1)
    return min(pp - stage, m)


def _fullest_moments(steps, v: int) -> tuple[tuple[tuple[int, ...], int, int], ...]:
    """The moments at which a stage's memory can peak, in the compiler's order of allocation, as
    (activation sets held per chunk, logits held, transient: 0 none, 1 a forward's, 2 a
    backward's, 3 the loss's): F of chunk c allocates its activations (its layers' transients on
    top while they run), then the last chunk's F the logits (the loss's transient on top while it
    runs); B of the last chunk runs the loss's backward (its transient on top), frees the logits,
    then runs its layers (transients on top) and frees the chunk's activations. Distinct moments only, so
    that a candidate's peak is a max over a few dot products instead of a walk of the schedule."""
    held, logits, last = [0] * v, 0, v - 1
    moments: dict[tuple, None] = {}
    for st in steps:
        if st.action == Action.F:
            held[st.chunk] += 1
            moments[(tuple(held), logits, 1)] = None
            if st.chunk == last:
                logits += 1
                moments[(tuple(held), logits, 3)] = None
        elif st.action == Action.B:
            if st.chunk == last:
                moments[(tuple(held), logits, 3)] = None
            logits -= st.chunk == last
            moments[(tuple(held), logits, 2)] = None
            held[st.chunk] -= 1
    return tuple(moments)


@dataclass(frozen=True, slots=True)
class Estimate:
    memory_bytes: float       # estimated peak memory of the fullest device
    step_time_s: float        # estimated step time (never below the lower bound)
    lower_bound_s: float      # the simulated step time cannot be shorter


@dataclass(frozen=True, slots=True)
class _Layer:
    """One layer, one micro-batch: (compute s, exposed comm s, FLOP) per phase, and its memory."""

    fwd: tuple[float, float, float]
    bwd: tuple[float, float, float]          # input gradient only with a split backward
    recompute: tuple[float, float, float]
    bwd_weight: tuple[float, float, float]   # zero-bubble's W, else no work
    act_bytes: float
    recompute_extra_bytes: float
    param_bytes: float                       # this device's share (16-bit copy)
    n_params: float


@dataclass(frozen=True, slots=True)
class _Step:
    pipeline_s: float
    dp_exposed_s: float
    optimizer_s: float
    lower_bound_s: float

    @property
    def step_time_s(self) -> float:
        return max(self.pipeline_s + self.dp_exposed_s + self.optimizer_s, self.lower_bound_s)


class Estimator:
    """Step time, lower bound and peak memory of plans for one scenario's model and cluster.

    Everything plans share is cached: kernel times per layer shape, collective times per group
    layout, schedules, stage parameter counts. `of(scenario)` reuses the estimator of an earlier
    scenario with the same model, cluster and network model."""

    _instances: dict[str, "Estimator"] = {}

    def __init__(self, scenario: ScenarioConfig) -> None:
        self.software = resolve_software(scenario)    # the same framework profile as the simulation
        scenario = effective_scenario(scenario, self.software)
        self.grad_bytes = self.software.grad_reduce_bytes
        self.loss = self.software.loss.value
        self.model, self.cluster = scenario.model, scenario.cluster
        self.optimizer, self.dp_bucket_bytes = scenario.training.optimizer, scenario.parallel.dp_bucket
        self.topology = build_topology(self.cluster)
        self.kernels = KernelModel(self.cluster.accelerator, scenario.training.attention.value)
        cap = self.topology.capacity_bytes_per_s
        maxmin = scenario.simulation.network_model == NetworkModelKind.MAXMIN
        self.network = MaxMinFair(cap) if maxmin else Ideal(cap)
        self._moe_flags = (False, True) if self.model.moe else (False,)
        self._cache: dict[tuple, Any] = {}

    @classmethod
    def of(cls, scenario: ScenarioConfig) -> "Estimator":
        key = "|".join((scenario.model.model_dump_json(), scenario.cluster.model_dump_json(),
                        scenario.simulation.network_model, scenario.training.optimizer,
                        scenario.training.attention.value,
                        repr(scenario.parallel.dp_bucket),
                        scenario.software.model_dump_json() if scenario.software else "",
                        repr(scenario.simulation.host_model)))
        if key not in cls._instances:
            if len(cls._instances) >= _MAX_CACHED:
                cls._instances.clear()
            cls._instances[key] = cls(scenario)
        return cls._instances[key]

    def _cached(self, key: tuple, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    # --- building blocks ------------------------------------------------------------------------

    @staticmethod
    def _shape(plan: Plan) -> tuple:
        """What a layer's kernels depend on."""
        return (plan.tp, plan.cp, plan.ep, plan.etp, plan.micro_batch, plan.sequence_parallel, plan.precision,
                plan.flash)

    @staticmethod
    def _layout(plan: Plan) -> tuple:
        """What the representative's collective groups depend on."""
        return (plan.tp, plan.cp, plan.dp, plan.pp, plan.ep, plan.etp, plan.order)

    def _shard(self, plan: Plan) -> Shard:
        return Shard(micro_batch=plan.micro_batch, seq_len=self.model.seq_len, tp=plan.tp, cp=plan.cp, ep=plan.ep,
                     sequence_parallel=plan.sequence_parallel,
                     dtype_bytes=4 if plan.precision == Dtype.FP32 else 2, fp8=plan.fp8, etp=plan.etp,
                     dispatcher=self.software.moe_dispatcher.value)

    def comm_s(self, plan: Plan, op: str, axis: str, size_bytes: float) -> float:
        """One collective of rank 0's `axis` group, alone on the topology (send-recv: cp's ring,
        each rank to its successor; pp: stage 0 to stage 1)."""
        def price() -> float:
            expert = {"ep": plan.ep_groups, "etp": plan.etp_groups, "tpep": plan.tpep_groups, "edp": plan.edp_groups}
            group = (expert[axis](0)[0] if axis in expert else plan.grad_groups(0)[0] if axis == "dp"
                     else plan.group(axis, 0))
            if len(group) < 2 or size_bytes <= 0:
                return 0.0
            if axis == "pp":
                groups = ((group[0], group[1]),)
            elif op == "send-recv":
                groups = tuple((group[i], group[(i + 1) % len(group)]) for i in range(len(group)))
            else:
                groups = (group,)
            return collective_time(self.topology, self.network, CollectiveOp(op), groups, size_bytes)
        return self._cached(("comm", op, axis, size_bytes, self._layout(plan)), price)

    def _serial(self, plan: Plan, works) -> tuple[float, float, float]:
        """(compute, exposed comm, FLOPs); a host slower than the GPU stretches the compute
        (the GPU waits for its launches): the works take max(GPU time, host time)."""
        if not works:
            return _NO_TIME
        compute, comm, flop = serial_seconds(works, lambda op, axis, size: self.comm_s(plan, op, axis, size))
        host = sum(w.host_s for w in works)
        return max(compute, host - comm), comm, flop

    def _host(self, plan: Plan):
        return host_plan(self.software, plan.recompute == Recompute.FULL, plan.precision == Dtype.FP16)

    def _layer(self, plan: Plan, moe: bool) -> _Layer:
        split = split_backward(plan.schedule)
        selective = self.software.selective_recompute.value
        if plan.recompute == Recompute.SELECTIVE and selective == "layer":
            # every k-th layer fully recomputed, the others not: the average layer
            k = max(self.software.selective_layer_interval, 1)
            full = self._layer(replace(plan, recompute=Recompute.FULL), moe)
            none = self._layer(replace(plan, recompute=Recompute.NONE), moe)
            mix = lambda a, b: tuple((x + (k - 1) * y) / k for x, y in zip(a, b))  # noqa: E731
            return _Layer(mix(full.fwd, none.fwd), mix(full.bwd, none.bwd), mix(full.recompute, none.recompute),
                          mix(full.bwd_weight, none.bwd_weight), none.act_bytes, full.recompute_extra_bytes,
                          full.param_bytes, full.n_params)
        lw = self._cached(("works", moe, split, plan.recompute, self._shape(plan)),
                          lambda: _layer_work(self.model, self._shard(plan), plan, self.kernels, moe, split,
                                              Granularity.OP, self._host(plan), self.software))
        return self._cached(
            ("layer", moe, split, plan.recompute, self._shape(plan), self._layout(plan)),
            lambda: _Layer(self._serial(plan, lw.fwd), self._serial(plan, lw.bwd), self._serial(plan, lw.recompute),
                           self._serial(plan, lw.bwd_weight), lw.act_bytes, lw.recompute_extra_bytes,
                           lw.param_bytes_local, lw.n_params_local))

    def _ends(self, plan: Plan) -> tuple[tuple[float, float, float], ...]:
        """(embedding fwd, embedding bwd, head fwd, head bwd), one micro-batch each."""
        def works() -> list:
            model, shard, host = self.model, self._shard(plan), self._host(plan)
            out = [time_ops(ops, self.kernels, plan, category) for pair in (O.embedding_ops(model, shard),
                                                                            O.head_ops(model, shard, self.loss))
                   for ops, category in zip(pair, ("fwd", "bwd"))]
            return out if host is None else [host.apply(w, c) for w, c in zip(out, ("fwd", "bwd", "fwd", "bwd"))]
        ends = self._cached(("end-works", self._shape(plan), plan.recompute), works)
        return self._cached(("ends", self._shape(plan), self._layout(plan)),
                            lambda: tuple(self._serial(plan, w) for w in ends))

    def _mtp_proj_s(self, plan: Plan) -> float:
        """The forward of one MTP module's 2h -> h projection (its backward: twice), as the compiler times it."""
        def time() -> float:
            shard, h = self._shard(plan), self.model.hidden
            proj = O.Op("mtp_proj", O.OpKind.GEMM, O.Phase.FWD, flop=2.0 * shard.tokens * h * 2 * h / plan.tp,
                        gemm=(shard.tokens, h // plan.tp, 2 * h))
            return sum(w.duration_s for w in time_ops([proj], self.kernels, plan, "fwd"))
        return self._cached(("mtp proj", self._shape(plan)), time)

    def _chunk_kinds(self, pp: int, v: int) -> list[list[tuple[int, int]]]:
        """[stage][chunk] -> (dense layers, MoE layers) of that chunk."""
        return self._cached(("chunks", pp, v), lambda: [
            [(sum(1 for i in c if not is_moe_layer(self.model, i)), sum(1 for i in c if is_moe_layer(self.model, i)))
             for c in stage] for stage in chunk_layers(self.model.layers, pp, v)])

    def _stage_params(self, plan: Plan, stage: int) -> float:
        return self._cached(("params", plan.pp, plan.virtual_stages, plan.tp, plan.ep, plan.etp, stage),
                            lambda: stage_params(self.model, plan.pp, stage, plan.virtual_stages, plan.tp, plan.ep,
                                                 plan.etp))

    def _stage_split(self, plan: Plan, stage: int) -> tuple[float, float]:
        """(dense, routed-expert) parameters of a device of `stage`: ZeRO shards the first over dp·cp,
        the second over the expert-data-parallel group."""
        return self._cached(("split", plan.pp, plan.virtual_stages, plan.tp, plan.ep, plan.etp, stage),
                            lambda: stage_param_split(self.model, plan.pp, stage, plan.virtual_stages, plan.tp,
                                                      plan.ep, plan.etp))

    def _optimizer_s(self, plan: Plan, stage: int) -> float:
        dense, expert = self._stage_split(plan, stage)
        n_params = (dense / plan.grad_shards + expert / plan.expert_grad_shards if plan.zero_stage >= 1
                    else dense + expert)
        return self._cached(("opt", n_params, self._layout(plan)), lambda: sum(
            self._serial(plan, time_ops(O.optimizer_ops(n_params), self.kernels, plan, "optimizer"))[:2]))

    def _last_stage_moments(self, plan: Plan) -> tuple[tuple[tuple[int, ...], int, int], ...]:
        key = (plan.schedule, plan.pp, plan.n_micro, plan.virtual_stages)
        return self._cached(("moments", *key),
                            lambda: _fullest_moments(pipeline_schedule(*key)[-1], plan.virtual_stages))

    def _per_chunk(self, kinds: tuple[int, int], values: dict[bool, float]) -> float:
        dense, moe = kinds
        return dense * values[False] + (moe * values[True] if moe else 0.0)

    # --- the estimates --------------------------------------------------------------------------

    def memory_bytes(self, plan: Plan) -> float:
        """Peak memory of the fullest device (module docstring)."""
        pp, v, m = plan.pp, plan.virtual_stages, plan.n_micro
        kinds = self._chunk_kinds(pp, v)
        layers = {f: self._layer(plan, f) for f in self._moe_flags}
        act = {f: lt.act_bytes for f, lt in layers.items()}
        # ZeRO-3 gathers two layers at a time; under pp it keeps the stage's layers gathered and their
        # unsharded fp32 gradients for the whole step (the compiler's keep_gathered)
        keep = plan.zero_stage >= 3 and pp > 1
        gathered = 2 * max(lt.param_bytes for lt in layers.values()) if plan.zero_stage >= 3 and not keep else 0.0
        kept = {f: lt.param_bytes + lt.n_params * self.grad_bytes for f, lt in layers.items()}
        transient = gathered + max(lt.recompute_extra_bytes for lt in layers.values())
        logits = self._cached(("logits", self._shape(plan)),
                              lambda: O.head_activation_bytes(self.model, self._shard(plan), self.loss))
        if self.model.mtp_layers:
            # the compiler's multi-token prediction on the last stage: per module one more layer's
            # activations (a MoE layer for a MoE model) and the head's again, held per micro-batch
            logits += self.model.mtp_layers * (act[is_moe_layer(self.model, self.model.layers)] + logits)
        loss_transient = self._cached(("loss transient", self._shape(plan)),
                                      lambda: O.head_transient_bytes(self.model, self._shard(plan), self.loss))
        worst = 0.0
        for s in range(pp):
            static = sum(moe_static_memory_bytes(*self._stage_split(plan, s), plan.zero_stage, plan.grad_shards,
                                                 plan.expert_grad_shards, plan.precision, self.optimizer).values())
            if keep:
                static += sum(self._per_chunk(k, kept) for k in kinds[s])
            chunk_act = [self._per_chunk(k, act) for k in kinds[s]]
            if s == pp - 1:
                extra = (0.0, gathered, transient, loss_transient)
                held = max(sum(n * a for n, a in zip(counts, chunk_act)) + n_logits * logits + extra[t]
                           for counts, n_logits, t in self._last_stage_moments(plan))
            else:   # the peak is reached with a backward running: its transient on top
                held = in_flight_chunks(plan.schedule, pp, m, v, s) * max(chunk_act) + transient
            worst = max(worst, static + held)
        return worst

    def _step(self, plan: Plan) -> _Step:
        pp, v, m = plan.pp, plan.virtual_stages, plan.n_micro
        kinds = self._chunk_kinds(pp, v)
        layers = {f: self._layer(plan, f) for f in self._moe_flags}
        fwd = {f: lt.fwd[0] + lt.fwd[1] for f, lt in layers.items()}
        bwd = {f: sum(lt.bwd[:2]) + sum(lt.recompute[:2]) for f, lt in layers.items()}
        wgt = {f: lt.bwd_weight[0] + lt.bwd_weight[1] for f, lt in layers.items()}
        kernels = {f: lt.fwd[0] + lt.bwd[0] + lt.recompute[0] + lt.bwd_weight[0] for f, lt in layers.items()}
        emb_f, emb_b, head_f, head_b = self._ends(plan)
        t_f, t_b, t_w, work, compute, opt = [], [], [], [], [], []
        for s in range(pp):
            stage = (sum(k[0] for k in kinds[s]), sum(k[1] for k in kinds[s]))
            f, b, w, c = (self._per_chunk(stage, x) for x in (fwd, bwd, wgt, kernels))
            if s == 0:
                f, b, c = f + emb_f[0] + emb_f[1], b + emb_b[0] + emb_b[1], c + emb_f[0] + emb_b[0]
            if s == pp - 1:
                f, b, c = f + head_f[0] + head_f[1], b + head_b[0] + head_b[1], c + head_f[0] + head_b[0]
                if self.model.mtp_layers:   # the compiler's MTP modules: projection, one layer, the head again
                    n, mf = self.model.mtp_layers, is_moe_layer(self.model, self.model.layers)
                    proj = self._mtp_proj_s(plan)
                    f += n * (proj + fwd[mf] + head_f[0] + head_f[1])
                    b += n * (2 * proj + bwd[mf] + head_b[0] + head_b[1])
                    w += n * wgt[mf]
                    c += n * (3 * proj + kernels[mf] + head_f[0] + head_b[0])
            t_f.append(f)
            t_b.append(b)
            t_w.append(w)
            work.append(f + b + w)
            compute.append(c * m)
            opt.append(self._optimizer_s(plan, s))
        shard = self._shard(plan)
        p2p_bytes = plan.micro_batch * self.model.seq_len / plan.cp * self.model.hidden * shard.dtype_bytes / plan.tp
        pipe = pipeline_makespan(plan.schedule, pp, m, v, sum(t_f) / pp, sum(t_b) / pp, sum(t_w) / pp,
                                 self.comm_s(plan, "send-recv", "pp", p2p_bytes))
        pipe += m * (max(work) - sum(work) / pp)

        # data-parallel reduction of the heaviest stage: what the last micro-batch's backward of
        # the first chunk cannot hide (buckets overlap the rest of the backward)
        n_local = max(self._stage_params(plan, s) for s in range(pp))
        dp_exposed = 0.0
        if plan.grad_shards > 1 and plan.zero_stage < 3:
            grad_bytes = n_local * self.grad_bytes
            t_dp = self.comm_s(plan, "all-reduce" if plan.zero_stage == 0 else "reduce-scatter", "dp", grad_bytes)
            bucket = min(1.0, self.dp_bucket_bytes / max(grad_bytes, 1.0))
            dp_exposed = max(t_dp * bucket, t_dp - sum(t_b) / pp / v)
            if plan.zero_stage in (1, 2):
                t_ag = self.comm_s(plan, "all-gather", "dp", n_local * shard.dtype_bytes)
                dp_exposed += max(0.0, t_ag - sum(t_f) / pp / v)
        elif plan.grad_shards > 1 and pp > 1:   # ZeRO-3 under pp: one gather, one reduction per step
            first = is_moe_layer(self.model, 0)
            t_ag = self.comm_s(plan, "all-gather", "dp", layers[first].param_bytes)
            t_rs = self.comm_s(plan, "reduce-scatter", "dp", n_local * self.grad_bytes)
            dp_exposed = t_ag + max(0.0, t_rs - sum(t_b) / pp / v)
        elif plan.grad_shards > 1:   # ZeRO-3: per layer and micro-batch, gathers and reductions behind compute
            first = is_moe_layer(self.model, 0)
            lt = layers[first]
            t_ag = self.comm_s(plan, "all-gather", "dp", lt.param_bytes)
            t_rs = self.comm_s(plan, "reduce-scatter", "dp", lt.n_params * self.grad_bytes)
            per_mb_layer = max(0.0, 2 * t_ag + t_rs - kernels[first])
            dp_exposed = per_mb_layer * m * sum(kinds[0][0]) * v + t_ag

        first_chunk_f = min(self._per_chunk(kinds[s][0], {f: lt.fwd[0] for f, lt in layers.items()})
                            for s in range(pp))
        lower = max(max(c + o for c, o in zip(compute, opt)), (pp - 1) * first_chunk_f + compute[-1] + opt[-1])
        return _Step(pipe, dp_exposed, max(opt), lower)

    def estimate(self, plan: Plan, memory_bytes: float | None = None) -> Estimate:
        """Peak memory, step time and its lower bound (pass `memory_bytes` if already known)."""
        step = self._step(plan)
        memory = self.memory_bytes(plan) if memory_bytes is None else memory_bytes
        return Estimate(memory, step.step_time_s, step.lower_bound_s)

    def summary(self, plan: Plan, name: str) -> dict[str, Any]:
        """The simulation's summary keys that a closed form can give, and a coarse breakdown."""
        step = self._step(plan)
        step_s, peak = step.step_time_s, self.memory_bytes(plan)
        tokens = plan.global_batch * self.model.seq_len
        model_flop = O.model_flop_per_step(self.model, plan.global_batch)
        n = plan.n_devices
        peak_dtype = Dtype.FP8 if plan.fp8 else plan.precision
        return {
            "name": name, "step_time_s": step_s, "tokens_per_s": tokens / step_s,
            "tokens_per_s_per_device": tokens / step_s / n, "tflops_per_device": model_flop / step_s / n / TFLOP,
            "mfu": model_flop / step_s / n / self.kernels.peak_flop_per_s(peak_dtype),
            "peak_memory_bytes": peak, "memory_capacity_bytes": self.cluster.accelerator.hbm,
            "fits_in_memory": peak <= self.cluster.accelerator.hbm, "devices": n,
            "breakdown": {"pipeline (compute, tp/cp/ep comm, bubble)": step_s - step.dp_exposed_s - step.optimizer_s,
                          "exposed_comm.dp": step.dp_exposed_s, "optimizer": step.optimizer_s},
            "screened": True,
        }


def screen(scenario: ScenarioConfig) -> dict[str, Any]:
    """A summary (step time, throughput, MFU, peak memory, a coarse breakdown) in closed form."""
    return Estimator.of(scenario).summary(resolve_plan(scenario), scenario.name)
