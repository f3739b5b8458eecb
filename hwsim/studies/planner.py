"""Capacity planning: which parallel plan to run a model on a cluster with, and how many devices
a deadline needs.

The search (`plan`):
1. enumerate the plans (tp, pp, dp, cp, ep, virtual stages and schedule, ZeRO stage,
   recompute, micro-batch) that `hwsim.workload.plan.resolve_plan` accepts;
2. estimate each one's peak memory with `hwsim.studies.screen.Estimator` (static memory plus
   the activations its schedule holds) and drop those that do not fit;
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
from hwsim.units import GiB
from hwsim.software.profiles import resolve_software
from hwsim.workload.plan import Plan, resolve_plan

__all__ = ["RankBy", "Objective", "SearchSpace", "Candidate", "Estimate", "PlannedRun", "PlanReport", "DeadlineReport",
           "enumerate_candidates", "Estimator", "plan_search", "fewest_devices", "simulate_candidate"]

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


def _framework_etp(scenario: ScenarioConfig) -> int | None:
    from hwsim.workload.plan import _framework_etp as etp_of
    return etp_of(scenario)


def _enumerate(scenario: ScenarioConfig, space: SearchSpace,
               counts: dict[str, int]) -> Iterator[tuple[Candidate, Plan]]:
    """(candidate, its checked plan) of every valid plan of `space`; counts enumerated and invalid."""
    model, cluster, train = scenario.model, scenario.cluster, scenario.training
    n = cluster.n_devices
    # tp stays inside one scale-up domain (the node, or the NVLink domain when it spans nodes)
    tps = space.tp or [d for d in _divisors(model.heads) if d <= cluster.domain_size]
    # sequence parallelism with tp > 1, unless the named framework version does not offer it
    offered = resolve_software(scenario).plan_space
    sp = offered is None or offered.sequence_parallel is not False
    for tp in tps:
        for cp in space.cp:
            if n % (tp * cp) or model.seq_len % cp:
                continue
            for pp in space.pp or _divisors(n // (tp * cp)):
                if (n // (tp * cp)) % pp or pp > model.layers:
                    continue
                dp = n // (tp * cp * pp)
                # MoE parallel folding: ep only has to divide the tp·cp·dp ranks of a stage (with etp,
                # the framework's default or tp), not dp·cp
                etp = scenario.parallel.etp or _framework_etp(scenario) or tp
                eps = ([1] if model.moe is None else
                       space.ep or [e for e in _divisors(model.moe.experts) if (tp * cp * dp) % (etp * e) == 0])
                for ep, (sched, v), zero, rec, mb in itertools.product(
                        eps, _schedules(space, pp, model.layers), space.zero_stages if dp > 1 else (0,),
                        space.recompute, space.micro_batch):
                    if train.global_batch % (mb * dp):
                        continue
                    counts["enumerated"] = counts.get("enumerated", 0) + 1
                    cand = Candidate(tp, pp, dp, cp, ep, v, sched, zero, rec, mb, tp > 1 and sp)
                    try:
                        plan = resolve_plan(cand.apply(scenario))
                    except PlanError:
                        counts["invalid"] = counts.get("invalid", 0) + 1
                        continue
                    yield cand, plan


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
    capacity = scenario.cluster.accelerator.hbm
    estimator = Estimator.of(scenario)
    estimates: dict[tuple, tuple[Candidate, Estimate]] = {}   # dominance: same estimated time -> least memory
    for cand, plan in _enumerate(scenario, space, counts):
        if estimator.software.plan_violations(plan):   # a plan the named framework version cannot run
            counts["framework"] = counts.get("framework", 0) + 1
            continue
        memory = estimator.memory_bytes(plan)
        if memory > capacity:
            counts["over_memory_estimate"] = counts.get("over_memory_estimate", 0) + 1
            continue
        est = estimator.estimate(plan, memory)
        key = (round(est.step_time_s, 12), round(est.lower_bound_s, 12))
        kept = estimates.get(key)
        if kept is None or est.memory_bytes < kept[1].memory_bytes:
            estimates[key] = (cand, est)
        counts["dominated"] = counts.get("dominated", 0) + 1
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
    estimator = Estimator.of(scenario)
    best = None
    for _, plan in _enumerate(scenario, space, {}):
        memory = estimator.memory_bytes(plan)
        if memory <= scenario.cluster.accelerator.hbm:
            est = estimator.estimate(plan, memory)
            best = est.step_time_s if best is None else min(best, est.step_time_s)
    return best
