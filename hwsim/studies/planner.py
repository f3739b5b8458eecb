"""Capacity planning: which parallel plan to run a model on a cluster with, and how many devices
a deadline needs.

The search (`plan`):
1. enumerate the plans (tp, pp, dp, cp, ep and etp, virtual stages and schedule, ZeRO stage,
   recompute, micro-batch) that `hwsim.workload.plan.resolve_plan` accepts; with experts, etp
   1 and tp, so that ep can fold over the tp ranks (MoE parallel folding);
2. estimate each one's peak memory with `hwsim.studies.screen.Estimator` (static memory plus
   the activations its schedule holds) and drop those that do not fit (in parallel, one task
   per (tp, cp); without estimating those whose weights and optimizer state alone do not fit,
   or that hold more activations than a plan already over memory);
3. estimate each one's step time with the same estimator (the compiler's kernel times, the
   schedules' closed forms), and a LOWER BOUND that holds for the simulation;
4. simulate them (layer granularity) in the order of their estimates, never one whose lower
   bound is already slower than the best simulated plan, up to `max_simulations`;
5. rank the simulated plans that fit in memory by throughput (or cost, the same order on a
   fixed cluster) and say why the best wins.

Dominance prunes before estimating: sequence parallelism is always on with tp > 1 (same
collective volume, activations split over tp: Korthikanti et al. 2022, "Reducing Activation
Recomputation in Large Transformer Models", §4.2.2); GPipe is left out (1F1B has the same
bubble and holds fewer micro-batches: Narayanan et al. 2021, PipeDream-Flush); of plans with
the same estimated time the one with the least memory is kept.

The words that explain a report are `hwsim.studies.explain`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Callable, Iterator

from hwsim.config.schema import ParallelConfig, Recompute, ScenarioConfig, Schedule
from hwsim.errors import ConfigError, HwsimError, PlanError
from hwsim.studies.executors import Executor, SerialExecutor
from hwsim.studies.screen import Estimate, Estimator
from hwsim.units import GiB, fmt_time
from hwsim.software.profiles import resolve_software
from hwsim.workload.memory import moe_static_memory_bytes
from hwsim.workload.plan import Plan, framework_etp, resolve_plan

__all__ = ["RankBy", "Objective", "SearchSpace", "Candidate", "Estimate", "PlannedRun", "PlanReport", "DeadlineReport",
           "enumerate_candidates", "Estimator", "plan_search", "fewest_devices", "simulate_candidate",
           "job_nvlink_domain", "expert_layout_lines"]

SECONDS_PER_DAY = 86400.0


class RankBy(StrEnum):
    THROUGHPUT = "throughput"
    COST = "cost"


class Objective(StrEnum):
    """What `hwsim plan` optimises: one clean step (ranked by --rank), or the time to train the
    token budget under failures (hwsim.reliability.commands.rank_plans_by_goodput)."""

    STEP = "step"
    TIME_TO_TRAIN = "time-to-train"


@dataclass(frozen=True)
class SearchSpace:
    """The values tried per dimension; None: every value that can be valid (tp up to a node)."""

    tp: tuple[int, ...] | None = None
    pp: tuple[int, ...] | None = None
    cp: tuple[int, ...] = (1, 2, 4, 8)
    ep: tuple[int, ...] | None = None
    etp: tuple[int, ...] | None = None          # None: 1 and tp (and the framework's default), see _etps
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
    etp: int = 1        # expert tensor parallel (MoE parallel folding); a dense model's plan: tp

    @property
    def label(self) -> str:
        """'tp4 pp4 dp64 v8 zero2 rc=sel mb1': v8 = interleaved with 8 virtual stages, zb = zero-bubble
        (ZB-H1); rc = recompute none | sel(ective) | full; mb = micro-batch; with experts spread
        over ep ranks and tp > 1, etp = their expert tensor parallelism ('tp2 ... ep64 etp1')."""
        sched = {Schedule.INTERLEAVED: f" v{self.virtual_stages}", Schedule.ZERO_BUBBLE: " zb",
                 Schedule.GPIPE: " gpipe"}.get(self.schedule, "") if self.pp > 1 else ""
        extra = "".join(f" {k}{v}" for k, v in (("cp", self.cp), ("ep", self.ep)) if v > 1)
        extra += f" etp{self.etp}" if self.ep > 1 and self.tp > 1 else ""
        sp = " no-sp" if self.tp > 1 and not self.sequence_parallel else ""
        rc = {Recompute.SELECTIVE: "sel"}.get(self.recompute, self.recompute.value)
        return f"tp{self.tp} pp{self.pp} dp{self.dp}{extra}{sched} zero{self.zero_stage} rc={rc} mb{self.micro_batch}{sp}"

    @property
    def folded(self) -> bool:
        """Experts laid out over tp·cp·dp independently of attention (MoE parallel folding): the
        ep group is not inside dp·cp, or the experts are split over fewer ranks than attention."""
        return self.ep > 1 and ((self.dp * self.cp) % self.ep != 0 or self.etp != self.tp)

    def apply(self, scenario: ScenarioConfig) -> ScenarioConfig:
        par = scenario.parallel.model_copy(update=dict(
            tp=self.tp, pp=self.pp, dp=self.dp, cp=self.cp, ep=self.ep, virtual_stages=self.virtual_stages,
            etp=self.etp if scenario.model.moe is not None else None,
            schedule=self.schedule, zero_stage=self.zero_stage, recompute=self.recompute,
            sequence_parallel=self.sequence_parallel))
        training = scenario.training.model_copy(update={"micro_batch": self.micro_batch})
        return scenario.model_copy(update={"parallel": par, "training": training})

    @classmethod
    def of(cls, plan: Plan) -> "Candidate":
        return cls(plan.tp, plan.pp, plan.dp, plan.cp, plan.ep, plan.virtual_stages, plan.schedule,
                   plan.zero_stage, plan.recompute, plan.micro_batch, plan.sequence_parallel, plan.etp)


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


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def enumerate_candidates(scenario: ScenarioConfig, space: SearchSpace = SearchSpace(),
                         counts: dict[str, int] | None = None) -> Iterator[Candidate]:
    """Every plan of `space` that resolve_plan accepts (with sequence parallelism on when tp > 1)."""
    return (cand for cand, _ in _enumerate(scenario, space, {} if counts is None else counts))


_RECOMPUTE_RANK = {Recompute.NONE: 0, Recompute.SELECTIVE: 1, Recompute.FULL: 2}   # activation memory: less


def _tps(scenario: ScenarioConfig, space: SearchSpace) -> list[int]:
    # tp stays inside one scale-up domain (the node, or the NVLink domain when it spans nodes)
    return list(space.tp or [d for d in _divisors(scenario.model.heads) if d <= scenario.cluster.domain_size])


def _enumerate(scenario: ScenarioConfig, space: SearchSpace, counts: dict[str, int],
               skip: Callable[[Candidate], bool] | None = None,
               only: tuple[int, int] | None = None) -> Iterator[tuple[Candidate, Plan]]:
    """(candidate, its checked plan) of every valid plan of `space`; counts enumerated and invalid.
    Per plan shape, the most recompute and the smallest micro-batch come first; `skip(candidate)`
    true: known over memory (counted so, not resolved); `only`: just the plans of that (tp, cp)."""
    model, cluster, train = scenario.model, scenario.cluster, scenario.training
    n = cluster.n_devices
    tps = _tps(scenario, space) if only is None else [only[0]]
    # sequence parallelism with tp > 1, unless the named framework version does not offer it
    offered = resolve_software(scenario).plan_space
    sp = offered is None or offered.sequence_parallel is not False
    recomputes = sorted(space.recompute, key=lambda r: -_RECOMPUTE_RANK[r])
    micro_batches = sorted(space.micro_batch)
    for tp in tps:
        for cp in (space.cp if only is None else (only[1],)):
            if n % (tp * cp) or model.seq_len % cp:
                continue
            for pp in space.pp or _divisors(n // (tp * cp)):
                if (n // (tp * cp)) % pp or pp > model.layers:
                    continue
                dp = n // (tp * cp * pp)
                # MoE parallel folding: the experts get a layout of their own over the tp·cp·dp ranks
                # of a stage, etp·ep of them per expert-data-parallel replica; so ep only has to
                # divide tp·cp·dp / etp, not dp·cp (which is all it can divide when etp = tp)
                pairs = [(1, tp)] if model.moe is None else [
                    (e, etp) for etp in _etps(scenario, space, tp)
                    for e in (space.ep or _divisors(model.moe.experts)) if (tp * cp * dp) % (etp * e) == 0]
                for (ep, etp), (sched, v), zero, rec, mb in itertools.product(
                        pairs, _schedules(space, pp, model.layers), space.zero_stages if dp > 1 else (0,),
                        recomputes, micro_batches):
                    if train.global_batch % (mb * dp):
                        continue
                    counts["enumerated"] = counts.get("enumerated", 0) + 1
                    cand = Candidate(tp, pp, dp, cp, ep, v, sched, zero, rec, mb, tp > 1 and sp, etp)
                    if skip is not None and skip(cand):
                        counts["over_memory_estimate"] = counts.get("over_memory_estimate", 0) + 1
                        continue
                    try:
                        plan = resolve_plan(cand.apply(scenario))
                    except PlanError:
                        counts["invalid"] = counts.get("invalid", 0) + 1
                        continue
                    yield cand, plan


def _etps(scenario: ScenarioConfig, space: SearchSpace, tp: int) -> list[int]:
    """Expert tensor parallel sizes tried with attention tp: `space.etp`, else 1 (each expert whole
    on a rank: the Megatron-Bridge recipes' choice, and what lets ep fold over the tp ranks) and tp
    (Megatron-Core's default), plus the scenario's or its framework's etp when it writes one; only
    those dividing the experts' hidden size."""
    moe = scenario.model.moe
    hidden = moe.moe_ffn_hidden or scenario.model.ffn_hidden
    if space.etp is not None:
        wanted = set(space.etp)
    else:
        wanted = {1, tp} | {e for e in (scenario.parallel.etp, framework_etp(scenario)) if e is not None}
    return sorted(e for e in wanted if hidden % e == 0)


def _static_memory_bytes(estimator: Estimator, plan: Plan) -> float:
    """The fullest stage's weights, gradients and optimizer state (ZeRO-sharded): a lower bound of
    `estimator.memory_bytes(plan)`, which adds the activations and transients on top."""
    return max(sum(moe_static_memory_bytes(*estimator._stage_split(plan, s), plan.zero_stage, plan.grad_shards,
                                           plan.expert_grad_shards, plan.precision, estimator.optimizer).values())
               for s in range(plan.pp))


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


@dataclass(frozen=True)
class _EstimateTask:
    index: int
    scenario: ScenarioConfig
    space: SearchSpace
    only: tuple[int, int]       # (tp, cp)


def _chunks(scenario: ScenarioConfig, space: SearchSpace) -> list[tuple[int, int]]:
    """The (tp, cp) pairs of `space` that can divide the cluster, in enumeration order."""
    model, n = scenario.model, scenario.cluster.n_devices
    return [(tp, cp) for tp in _tps(scenario, space) for cp in space.cp
            if n % (tp * cp) == 0 and model.seq_len % cp == 0]


def _estimate_plans(task: _EstimateTask) -> tuple[int, list[tuple[Candidate, Estimate]], dict[str, int]]:
    """(index, [(candidate, estimate)] of the plans of one (tp, cp) that fit, least memory per
    estimated time, counts): a worker's unit of the search's estimating stage."""
    scenario, space = task.scenario, task.space
    counts: dict[str, int] = {}
    capacity = scenario.cluster.accelerator.hbm
    estimator = Estimator.of(scenario)
    # A plan over memory makes every plan that differs only by a larger micro-batch or less recompute
    # over memory too (more activations, the same weights: the estimate is monotone in both, and
    # _enumerate yields the most recompute and the smallest micro-batch first), so those are not
    # estimated. ZeRO stages are not ordered so (ZeRO-3 with pp holds gathered weights).
    over: dict[Candidate, list[tuple[int, int]]] = {}   # plan less mb and recompute -> (mb, recompute rank)

    def _shape(cand: Candidate) -> Candidate:
        return dataclasses.replace(cand, micro_batch=0, recompute=Recompute.NONE)

    # the weights, gradients and optimizer state alone (no activations) bound the memory from below and
    # depend on neither micro-batch, recompute nor schedule: the MoE plans whose experts do not fit
    # are dropped without estimating their layers
    static: dict[tuple, float] = {}

    def _static_key(c: Candidate) -> tuple:
        return c.tp, c.pp, c.dp, c.cp, c.ep, c.etp, c.virtual_stages, c.zero_stage

    def known_over(cand: Candidate) -> bool:
        if static.get(_static_key(cand), 0.0) > capacity:
            return True
        r = _RECOMPUTE_RANK[cand.recompute]
        return any(m <= cand.micro_batch and rr >= r for m, rr in over.get(_shape(cand), ()))

    estimates: dict[tuple, tuple[Candidate, Estimate]] = {}
    for cand, plan in _enumerate(scenario, space, counts, skip=known_over, only=task.only):
        if estimator.software.plan_violations(plan):   # a plan the named framework version cannot run
            counts["framework"] = counts.get("framework", 0) + 1
            continue
        skey = _static_key(cand)
        if skey not in static:
            static[skey] = _static_memory_bytes(estimator, plan)
        memory = static[skey]
        if memory <= capacity:
            memory = estimator.memory_bytes(plan)
        if memory > capacity:
            over.setdefault(_shape(cand), []).append((cand.micro_batch, _RECOMPUTE_RANK[cand.recompute]))
            counts["over_memory_estimate"] = counts.get("over_memory_estimate", 0) + 1
            continue
        est = estimator.estimate(plan, memory)
        key = (round(est.step_time_s, 12), round(est.lower_bound_s, 12))
        kept = estimates.get(key)
        if kept is None or est.memory_bytes < kept[1].memory_bytes:
            estimates[key] = (cand, est)
        counts["dominated"] = counts.get("dominated", 0) + 1   # fits: less those kept, in plan_search
    return task.index, list(estimates.values()), counts


def plan_search(scenario: ScenarioConfig, space: SearchSpace = SearchSpace(), rank_by: RankBy = RankBy.THROUGHPUT,
                max_simulations: int = 16, executor: Executor | None = None, granularity: str | None = "layer",
                include_baseline: bool = True, budget_usd: float | None = None,
                on_event: Callable[[str, int, int], None] | None = None) -> PlanReport:
    """Search the plans of `space` for `scenario`'s cluster, model and training (its own
    `parallel` is the baseline, simulated too when `include_baseline`). `on_event(stage, done,
    total)` reports progress ("estimate", "simulate")."""
    from hwsim.studies.explain import explain   # imported here: explain reads this module's reports

    start = time.perf_counter()
    executor = executor or SerialExecutor()
    counts: dict[str, int] = {}
    # estimate the plans in parallel, one task per (tp, cp) (module function _estimate_plans), then
    # keep, in enumeration order, the least memory of the plans with the same estimated times
    chunks = _chunks(scenario, space)
    parts: dict[int, list[tuple[Candidate, Estimate]]] = {}
    for index, kept_part, part_counts in executor.map_unordered(
            _estimate_plans, (_EstimateTask(i, scenario, space, c) for i, c in enumerate(chunks))):
        parts[index] = kept_part
        for k, v in part_counts.items():
            counts[k] = counts.get(k, 0) + v
        if on_event:
            on_event("estimate", len(parts), len(chunks))
    estimates: dict[tuple, tuple[Candidate, Estimate]] = {}   # dominance: same estimated time -> least memory
    for index in sorted(parts):
        for cand, est in parts[index]:
            key = (round(est.step_time_s, 12), round(est.lower_bound_s, 12))
            kept = estimates.get(key)
            if kept is None or est.memory_bytes < kept[1].memory_bytes:
                estimates[key] = (cand, est)
    counts["dominated"] = counts.get("dominated", 0) - len(estimates)
    ordered = sorted(estimates.values(), key=lambda ce: (ce[1].step_time_s, ce[1].memory_bytes, ce[0].label))
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
        for i, (cand, est) in enumerate(ordered):
            if baseline is not None and cand == baseline.candidate:
                continue
            if sims[0] >= max_simulations:
                counts["not_simulated_limit"] = len(ordered) - i
                return
            if est.lower_bound_s >= best[0]:
                counts["pruned_by_bound"] = counts.get("pruned_by_bound", 0) + 1
                continue
            sims[0] += 1
            sc = cand.apply(scenario)
            runs.append(PlannedRun(cand, est, sc.model_dump(mode="json")))
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
    if report.best is not None and report.best.candidate.ep > 1:
        report.explanation[1:1] = expert_layout_lines(scenario, report.best)
    return report


def expert_layout_lines(scenario: ScenarioConfig, run: PlannedRun) -> list[str]:
    """Plain words for an MoE plan: how the experts are laid out over a stage's ranks (folded or
    not), whether the ep groups stay in one NVLink domain, and the all-to-all's share of the step."""
    c = run.candidate
    plan = resolve_plan(c.apply(scenario))
    per_stage = c.tp * c.cp * c.dp
    group = plan.ep_groups(0)[0]
    spans = {axis: len({plan.coords(r)[axis] for r in group}) for axis in ("tp", "cp", "dp")}
    over = " × ".join(f"{n} {axis}" for axis, n in spans.items() if n > 1)
    why = []
    if (c.dp * c.cp) % c.ep:
        why.append(f"ep {c.ep} does not divide dp·cp = {c.dp * c.cp}")
    if c.etp != c.tp:
        why.append(f"etp {c.etp} ≠ tp {c.tp}: attention splits a layer over {c.tp} ranks, an expert over {c.etp}")
    kind = "folded (MoE parallel folding" + ("; " + "; ".join(why) if why else "") + ")" if c.folded else \
        "not folded (ep inside dp·cp, etp = tp)"
    lines = [f"  experts: etp{c.etp}·ep{c.ep} over the tp·cp·dp = {per_stage} ranks of a stage, {kind}; an ep "
             f"group spans {over or 'one rank'} ranks, {scenario.model.moe.experts // c.ep} experts per rank, "
             f"expert data parallel {plan.edp}"]
    domain = scenario.cluster.domain_size
    inside = all(min(g) // domain == max(g) // domain for g in plan.ep_groups(0))
    where = (f"inside one NVLink domain of {domain} devices" if inside
             else f"across NVLink domains of {domain} devices (through the NICs)")
    s = run.summary or {}
    a2a = (s.get("breakdown") or {}).get("exposed_comm.ep")
    if a2a is not None and s.get("step_time_s"):
        lines.append(f"  all-to-all (exposed_comm.ep): {fmt_time(a2a, 3)} of the {fmt_time(s['step_time_s'], 3)} "
                     f"step ({a2a / s['step_time_s']:.1%}), ep groups {where}")
    else:
        lines.append(f"  ep groups {where}")
    return lines


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


def job_nvlink_domain(devices: int, per_node: int, domain: int | None) -> int | None:
    """The NVLink domain a job of `devices` gets on racks of `domain` devices (NVL72) when it does
    not fill whole racks: the same number of nodes in every rack it uses (a scheduler's equal
    segments, e.g. Slurm topology/block `--segment`), the largest such whole-node share of a rack
    that divides the job: 256 GB200 -> 4 racks of 64 (16 trays each), not 3 full racks and a
    partial one. None: the domain stands (the job fills whole racks, or fits in one)."""
    if domain is None or domain <= per_node or devices <= domain or devices % domain == 0:
        return None
    return next(d for d in range(domain - domain % per_node, 0, -per_node) if devices % d == 0)


def _with_nodes(scenario: ScenarioConfig, nodes: int) -> ScenarioConfig:
    cluster = scenario.cluster.model_copy(update={"nodes": nodes})
    segment = job_nvlink_domain(cluster.n_devices, cluster.devices_per_node, cluster.nvlink_domain)
    if segment is not None:
        cluster = cluster.model_copy(update={"nvlink_domain": segment})
    if nodes > 1 and cluster.inter_node is None:
        raise ConfigError("cluster.inter_node: searching over node counts needs an inter-node network; "
                          "give a node preset (--node dgx-h100) or cluster.inter_node in the scenario")
    return scenario.model_copy(update={"cluster": cluster, "parallel": ParallelConfig()})


def _best_estimate(scenario: ScenarioConfig, space: SearchSpace) -> float | None:
    """The best estimated step time of the plans that fit (the search's estimating stage, serially)."""
    times = [est.step_time_s for i, chunk in enumerate(_chunks(scenario, space))
             for _, est in _estimate_plans(_EstimateTask(i, scenario, space, chunk))[1]]
    return min(times) if times else None
