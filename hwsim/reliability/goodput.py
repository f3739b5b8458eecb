"""Goodput and time-to-train: one simulated step (folded, `hwsim.simulate.run_step`, on the
topology with any degraded links), the cluster's failure rates, the checkpoint's cost, then
the whole run in Monte Carlo (`hwsim.reliability.montecarlo`).

Effective training time (the Llama 3 paper's measure) is the compute the run needs over its
wall time: 1 - (lost work + recovery + checkpoint stalls) / wall time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from hwsim import units
from hwsim.config.reliability import CheckpointMode, Per, RecoveryScope
from hwsim.config.schema import ScenarioConfig
from hwsim.errors import ConfigError
from hwsim.reliability.checkpoint import (CheckpointCost, checkpoint_cost, expected_wall_per_work, optimal_interval_s,
                                          young_daly_interval_s)
from hwsim.reliability.failures import ComponentLoad, component_loads, interruptions_per_day
from hwsim.reliability.montecarlo import EventClass, EventKind, RunModel, RunResults, simulate_runs
from hwsim.reliability.spec import ReliabilitySpec, resolve_reliability
from hwsim.workload.plan import Plan, resolve_plan

__all__ = ["GoodputModel", "GoodputResult", "build_goodput_model", "run_goodput", "step_times"]

JOULES_PER_MWH = 3.6e9
SECONDS_PER_HOUR = units.HOUR


@dataclass(frozen=True)
class GoodputModel:
    """Everything the Monte Carlo needs, and what the report says about where it came from."""

    name: str
    n_devices: int
    tokens: float
    n_steps: float
    step_s: float
    healthy_step_s: float
    spec: ReliabilitySpec
    loads: tuple[ComponentLoad, ...]
    checkpoint: CheckpointCost
    interval_s: float
    interval_note: str
    rollback_mtbf_s: float
    replica_devices: int            # devices of one data-parallel replica (tp·pp·cp)
    n_replicas: int
    run: RunModel
    power_w: float
    price_per_device_hour: float


@dataclass
class GoodputResult:
    model: GoodputModel
    runs: RunResults
    seed: int
    summary: dict[str, Any]


def step_times(scenario: ScenarioConfig, spec: ReliabilitySpec, fold: bool | None = None) -> tuple[float, float]:
    """(step with the degraded links, healthy step): one simulation each (one if none degraded)."""
    from hwsim.reliability.links import run_degraded_step
    from hwsim.simulate import run_step

    healthy = run_step(scenario, fold=fold).summary["step_time_s"]
    if not spec.degraded_links:
        return healthy, healthy
    return run_degraded_step(scenario, spec.degraded_links, fold=fold).summary["step_time_s"], healthy


def _groups_per_node(plan: Plan) -> int:
    """Data-parallel replicas one node's devices belong to (Megatron order: tp, cp, then dp)."""
    return max(1, min(plan.dp, plan.devices_per_node // max(1, plan.tp * plan.cp)))


def _replica_transfer_s(scenario: ScenarioConfig, plan: Plan, total_bytes: float, replica_devices: int) -> float:
    """A restarted replica takes the model state from a healthy one over its NICs (or its
    node's fabric within one node)."""
    cluster = scenario.cluster
    if cluster.nodes > 1 and cluster.inter_node is not None:
        nodes = -(-replica_devices // cluster.devices_per_node)
        nics = min(cluster.inter_node.nics_per_node, cluster.devices_per_node)
        bandwidth = nodes * nics * cluster.inter_node.nic_bandwidth
    else:
        bandwidth = replica_devices * cluster.intra_node.bandwidth
    return total_bytes / bandwidth


def _event_classes(scenario: ScenarioConfig, plan: Plan, spec: ReliabilitySpec, loads: tuple[ComponentLoad, ...],
                   cost: CheckpointCost, replica_devices: int) -> tuple[EventClass, ...]:
    job_down = spec.detection_s + spec.restart_s + cost.read_s
    planned_down = spec.restart_s + cost.read_s
    replica_down = spec.detection_s + spec.restart_s + _replica_transfer_s(scenario, plan, cost.total_bytes,
                                                                           replica_devices)
    by_replica = spec.recovery == RecoveryScope.REPLICA and plan.dp > 1
    out = []
    for load in loads:
        if load.planned:
            out.append(EventClass(load.component.value, load.rate_per_s, EventKind.PLANNED, planned_down, 1.0))
        elif by_replica and load.per != Per.JOB:
            groups = 1 if load.per == Per.DEVICE else _groups_per_node(plan)
            frac = min(1.0, groups * replica_devices / plan.n_devices)
            out.append(EventClass(load.component.value, load.rate_per_s, EventKind.REPLICA, replica_down, frac))
        else:
            out.append(EventClass(load.component.value, load.rate_per_s, EventKind.JOB, job_down, 1.0))
    return tuple(out)


MAX_INTERRUPTIONS_PER_RUN = 1e5   # past this, a Monte Carlo run is not worth drawing (nor the run worth training)


def _check_finishes(run: RunModel) -> None:
    """The run must end: expected wall time per unit of work (Daly 2006 for the failures that
    roll back, failures during recovery included; the others' recovery as time lost) and the
    interruptions within reach; else a ConfigError naming the fields to change."""
    rate = sum(e.rate_per_s for e in run.events)
    if rate <= 0:
        return
    rollback = [e for e in run.events if e.kind == EventKind.JOB and e.rate_per_s > 0]
    others_busy = sum(e.rate_per_s * e.downtime_s * e.capacity_frac for e in run.events if e.kind != EventKind.JOB)
    try:
        if rollback:
            job_rate = sum(e.rate_per_s for e in rollback)
            down = max(e.downtime_s for e in rollback)
            per_work = math.exp(down * job_rate) * expected_wall_per_work(run.interval_s, run.stall_s, 1.0 / job_rate)
        else:
            per_work = (run.interval_s + run.stall_s) / run.interval_s
        per_work = per_work / (1.0 - others_busy) if others_busy < 1.0 else math.inf
    except OverflowError:
        per_work = math.inf
    if not per_work < 1e4 or rate * per_work * run.work_s > MAX_INTERRUPTIONS_PER_RUN:
        raise ConfigError(
            f"reliability: the job would be interrupted every {units.fmt_time(1.0 / rate)} on average, against "
            f"recoveries of up to {units.fmt_time(max(e.downtime_s for e in run.events))} and a checkpoint period of "
            f"{units.fmt_time(run.interval_s + run.stall_s)}: it would practically never finish (about "
            f"{per_work:.3g} s of wall time per second of work, {rate * run.work_s:.3g} interruptions). Check "
            f"reliability.components (an mtbf too short, or a fit too large), reliability.detection and "
            f"reliability.restart")


def build_goodput_model(scenario: ScenarioConfig, step_time_s: float | None = None, fold: bool | None = None,
                        healthy_step_time_s: float | None = None) -> GoodputModel:
    """The scenario's goodput inputs. `step_time_s`: a step time already simulated (the
    planner's); None simulates it here."""
    if not scenario.training.tokens:
        raise ConfigError("training.tokens: goodput needs a token budget; add training.tokens (e.g. 15.6e12) to "
                          "the scenario, or --set training.tokens=15.6e12")
    spec = resolve_reliability(scenario.reliability)
    plan = resolve_plan(scenario)
    if step_time_s is None:
        step_time_s, healthy_step_time_s = step_times(scenario, spec, fold)
    healthy = step_time_s if healthy_step_time_s is None else healthy_step_time_s
    if not (step_time_s > 0 and math.isfinite(step_time_s)):
        raise ConfigError(f"the simulated step time {step_time_s!r} s is not a positive number: this scenario "
                          f"cannot be trained (check the parallel plan)")
    tokens_per_step = scenario.training.global_batch * scenario.model.seq_len
    n_steps = scenario.training.tokens / tokens_per_step
    work_s = n_steps * step_time_s
    loads = component_loads(scenario.cluster, spec.components)
    cost = checkpoint_cost(scenario, plan, spec.checkpoint)
    replica_devices = plan.tp * plan.pp * plan.cp
    events = _event_classes(scenario, plan, spec, loads, cost, replica_devices)
    rollback_rate = sum(e.rate_per_s for e in events if e.kind == EventKind.JOB)
    rollback_mtbf_s = math.inf if rollback_rate <= 0 else 1.0 / rollback_rate
    if spec.checkpoint.interval_s is not None:
        interval, note = spec.checkpoint.interval_s, "scenario"
    else:
        interval = optimal_interval_s(cost.stall_s, rollback_mtbf_s) if cost.stall_s > 0 else step_time_s
        note = "optimum (Young/Daly)"
    lag = cost.write_s - cost.snapshot_s if spec.checkpoint.mode == CheckpointMode.ASYNC else 0.0
    if interval < lag:
        interval, note = lag, f"{note}, raised to the async write time (one write at a time)"
    interval = min(max(interval, step_time_s), work_s)
    run = RunModel(work_s, step_time_s, interval, cost.stall_s, lag, events)
    _check_finishes(run)
    acc = scenario.cluster.accelerator
    return GoodputModel(scenario.name, plan.n_devices, scenario.training.tokens, n_steps, step_time_s, healthy, spec,
                        loads, cost, interval, note, rollback_mtbf_s, replica_devices, plan.dp, run,
                        acc.power_limit or acc.tdp, acc.price_per_hour)


def _spread(values: np.ndarray) -> dict[str, float]:
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return {"mean": float(values.mean()), "p10": float(p10), "p50": float(p50), "p90": float(p90)}


def summarize(model: GoodputModel, runs: RunResults, seed: int) -> dict[str, Any]:
    wall, work = runs.wall_s, model.run.work_s
    device_s = model.n_devices * wall
    wasted_s = model.n_devices * (wall - work)
    per_day = runs.n_events.sum(axis=1) / (wall / units.DAY)
    ck = model.checkpoint
    return {
        "name": model.name, "devices": model.n_devices, "tokens": model.tokens, "steps": model.n_steps,
        "step_time_s": model.step_s, "healthy_step_time_s": model.healthy_step_s,
        "degraded_slowdown": model.step_s / model.healthy_step_s,
        "failure_mix": model.spec.mix, "recovery": model.spec.recovery.value,
        "replica_devices": model.replica_devices, "replicas": model.n_replicas,
        "failure_free_days": work / units.DAY,
        "interruptions_per_day_expected": interruptions_per_day(model.loads),
        "interruptions_per_day_by_component": {l.component.value: l.per_day for l in model.loads},
        "job_mtbf_h": units.DAY / interruptions_per_day(model.loads) / SECONDS_PER_HOUR
        if interruptions_per_day(model.loads) > 0 else math.inf,
        "detection_s": model.spec.detection_s, "restart_s": model.spec.restart_s,
        "downtime_per_interruption_s": {e.name: e.downtime_s * e.capacity_frac for e in model.run.events},
        "checkpoint": {"storage": model.spec.checkpoint.storage.tier.value, "mode": model.spec.checkpoint.mode.value,
                       "total_bytes": ck.total_bytes, "device_bytes": ck.device_bytes, "write_s": ck.write_s,
                       "read_s": ck.read_s, "stall_s": ck.stall_s, "interval_s": model.interval_s,
                       "interval_note": model.interval_note,
                       "young_daly_interval_s": young_daly_interval_s(ck.stall_s, model.rollback_mtbf_s)},
        "runs": int(wall.size), "seed": seed,
        "time_to_train_days": _spread(wall / units.DAY),
        "effective_training_time": _spread(work / wall),
        "interruptions_per_day": _spread(per_day),
        "lost_work_hours": _spread(runs.lost_s / SECONDS_PER_HOUR),
        "recovery_hours": _spread(runs.down_s / SECONDS_PER_HOUR),
        "checkpoint_stall_hours": _spread(runs.stall_s / SECONDS_PER_HOUR),
        "cost_usd": _spread(device_s / SECONDS_PER_HOUR * model.price_per_device_hour),
        "cost_of_failures_usd": _spread(wasted_s / SECONDS_PER_HOUR * model.price_per_device_hour),
        "energy_mwh": _spread(device_s * model.power_w / JOULES_PER_MWH),
        "energy_of_failures_mwh": _spread(wasted_s * model.power_w / JOULES_PER_MWH),
        "energy_note": "devices at their power limit (TDP if none) for the whole wall time, recovery included "
                       "(an upper bound; no host, network or cooling)",
    }


def run_goodput(model: GoodputModel, runs: int = 1000, seed: int = 0,
                on_chunk: Callable[[int], None] | None = None) -> GoodputResult:
    if runs < 1:
        raise ConfigError(f"--runs: {runs} must be at least 1")
    if seed < 0:
        raise ConfigError(f"--seed: {seed} must not be negative")
    results = simulate_runs(model.run, runs, seed, on_chunk)
    return GoodputResult(model, results, seed, summarize(model, results, seed))
