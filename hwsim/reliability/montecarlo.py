"""Monte Carlo of a whole training run with failures: numpy, vectorised over runs, seeded.

The run needs `work_s` of compute. Compute comes in checkpoint periods of `interval_s`, each
followed by a stall of `stall_s` (the checkpoint). Interruptions arrive as a Poisson process
in wall time (exponential gaps, the sum of the components' rates); each picks its component in
proportion to its rate. Per interruption, by its kind:

- job (a failure that stops the job): the compute since the last durable checkpoint is lost,
  and the job is down `downtime_s` (detection, restart, checkpoint load); an interruption
  during that recovery starts it again (failures arrive in wall time, recovery included, as
  the published counts are per calendar day). An async checkpoint
  is durable `durable_lag_s` after its snapshot: a failure before that also loses the period
  before it.
- planned (maintenance): a checkpoint is taken first, nothing is lost; down for its downtime.
- replica (with recovery: replica): only the failed data-parallel replicas stop; the others
  keep training. The run loses `capacity_frac` of the cluster for the downtime and for half a
  step (the step in flight), added to the wall time as that much capacity lost.

Runs are simulated in chunks of CHUNK_RUNS, chunk i drawing from the i-th child of
`numpy.random.SeedSequence(seed)`: the same seed and run count give bit-identical results, and
the first runs of a larger count are the runs of a smaller one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Callable

import numpy as np

__all__ = ["EventKind", "EventClass", "RunModel", "RunResults", "simulate_runs", "CHUNK_RUNS"]

CHUNK_RUNS = 100


class EventKind(IntEnum):
    JOB = 0
    PLANNED = 1
    REPLICA = 2


@dataclass(frozen=True, slots=True)
class EventClass:
    name: str               # the component
    rate_per_s: float
    kind: EventKind
    downtime_s: float
    capacity_frac: float    # 1 for job and planned; the stopped share of the cluster for replica


@dataclass(frozen=True, slots=True)
class RunModel:
    work_s: float
    step_s: float
    interval_s: float
    stall_s: float
    durable_lag_s: float
    events: tuple[EventClass, ...]


@dataclass
class RunResults:
    """Per run (arrays of length n_runs), and the events of run 0 for the timeline."""

    wall_s: np.ndarray
    lost_s: np.ndarray          # compute redone (and capacity lost in flight)
    down_s: np.ndarray          # recovery time (capacity-weighted for replica events)
    stall_s: np.ndarray         # checkpoint stalls
    n_events: np.ndarray        # (n_runs, n_classes) interruptions per component
    timeline: list[tuple[float, int, float, float]]   # run 0: (wall_s at the event, class, lost_s, down_s)


def _chunk(model: RunModel, n: int, rng: np.random.Generator, record: bool) -> RunResults:
    tau, c, a = model.interval_s, model.stall_s, model.interval_s + model.stall_s
    rates = np.array([e.rate_per_s for e in model.events], dtype=float)
    total_rate = float(rates.sum())
    cum = np.cumsum(rates) / total_rate if total_rate > 0 else np.ones(len(rates))
    kind = np.array([int(e.kind) for e in model.events], dtype=np.int64)
    down = np.array([e.downtime_s for e in model.events], dtype=float)
    frac = np.array([e.capacity_frac for e in model.events], dtype=float)
    committed, pending, recovering = np.zeros(n), np.zeros(n), np.zeros(n)
    since_snap = np.full(n, np.inf)
    wall, lost, down_t, stall = (np.zeros(n) for _ in range(4))
    counts = np.zeros((n, len(rates)), dtype=np.int64)
    timeline: list[tuple[float, int, float, float]] = []
    active = np.arange(n)
    while active.size:
        m = active.size
        gap = rng.exponential(1.0 / total_rate, m) if total_rate > 0 else np.full(m, np.inf)
        cls = np.minimum(np.searchsorted(cum, rng.random(m), side="right"), len(rates) - 1)
        # a job in recovery: an interruption before it ends starts the recovery again
        rec = recovering[active]
        hit = gap < rec
        if hit.any():
            h, hc = active[hit], cls[hit]
            wall[h] += gap[hit]
            down_t[h] += gap[hit]
            counts[h, hc] += 1
            restarts = kind[hc] != EventKind.REPLICA      # a replica's failure is absorbed by the restart
            recovering[h] = np.where(restarts, down[hc], rec[hit] - gap[hit])
            if record and h[0] == 0:
                timeline.append((float(wall[0]), int(hc[0]), 0.0, float(recovering[0])))
        up = ~hit
        active_up, gap, cls, rec = active[up], gap[up] - rec[up], cls[up], rec[up]
        wall[active_up] += rec
        down_t[active_up] += rec
        recovering[active_up] = 0.0
        # up time: finish before the next interruption?
        p, remaining = pending[active_up], model.work_s - committed[active_up] - pending[active_up]
        boundaries = np.maximum(np.ceil((p + remaining) / tau) - 1.0, 0.0)
        finish = remaining + boundaries * c
        done = gap >= finish
        fin = active_up[done]
        wall[fin] += finish[done]
        stall[fin] += boundaries[done] * c
        committed[fin] += pending[fin] + remaining[done]
        pending[fin] = 0.0
        # the others: progress over `gap` of up time, then the interruption
        go, x, k_cls, p = active_up[~done], gap[~done], cls[~done], p[~done]
        first = tau - p + c                       # up time to the end of the current checkpoint
        crossed = x >= first
        extra = np.where(crossed, np.floor((x - first) / a), 0.0)
        partial = np.where(crossed, x - first - extra * a, x)
        committed[go] += np.where(crossed, tau - p + extra * tau, 0.0)
        pending[go] = np.where(crossed, np.minimum(partial, tau), np.minimum(p + x, tau))
        since_snap[go] = np.where(crossed, partial, since_snap[go] + x)
        stall[go] += np.where(crossed, 1.0 + extra, 0.0) * c
        wall[go] += x
        at = float(wall[0]) if record and go.size and go[0] == 0 else 0.0
        kinds = kind[k_cls]
        counts[go, k_cls] += 1
        job, planned, replica = kinds == EventKind.JOB, kinds == EventKind.PLANNED, kinds == EventKind.REPLICA
        # job: lose what is not durable; planned: checkpoint first, lose nothing
        not_durable = job & (since_snap[go] < model.durable_lag_s) & (committed[go] >= tau)
        loss = np.where(job, pending[go] + np.where(not_durable, tau, 0.0), 0.0)
        committed[go] += np.where(planned, pending[go], 0.0) - np.where(not_durable, tau, 0.0)
        pending[go] = np.where(replica, pending[go], 0.0)
        since_snap[go] = np.where(replica, since_snap[go], np.inf)
        recovering[go] = np.where(replica, 0.0, down[k_cls])
        stall[go] += np.where(planned, c, 0.0)
        # replica: the stopped share's recovery and in-flight step, as capacity lost
        replica_cost = np.where(replica, frac[k_cls] * (down[k_cls] + 0.5 * model.step_s), 0.0)
        loss = loss + np.where(replica, frac[k_cls] * 0.5 * model.step_s, 0.0)
        wall[go] += replica_cost + np.where(planned, c, 0.0)
        down_t[go] += np.where(replica, frac[k_cls] * down[k_cls], 0.0)
        lost[go] += loss
        if record and go.size and go[0] == 0:
            timeline.append((at, int(k_cls[0]), float(loss[0]), float(down[k_cls[0]] * (frac[k_cls[0]] if
                                                                                         replica[0] else 1.0))))
        active = np.concatenate([active[hit], go])
        active.sort()
    return RunResults(wall, lost, down_t, stall, counts, timeline)


def simulate_runs(model: RunModel, n_runs: int, seed: int,
                  on_chunk: Callable[[int], None] | None = None) -> RunResults:
    """`n_runs` independent training runs (see the module docstring)."""
    if n_runs < 1:
        raise ValueError("n_runs must be at least 1")
    if not (model.work_s > 0 and model.interval_s > 0 and model.stall_s >= 0):
        raise ValueError(f"work_s and interval_s must be positive, stall_s not negative: {model}")
    n_chunks = -(-n_runs // CHUNK_RUNS)
    children = np.random.SeedSequence(seed).spawn(n_chunks)
    parts = []
    for i, child in enumerate(children):
        n = min(CHUNK_RUNS, n_runs - i * CHUNK_RUNS)
        parts.append(_chunk(model, n, np.random.Generator(np.random.PCG64(child)), record=i == 0))
        if on_chunk:
            on_chunk(n)
    return RunResults(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                        ("wall_s", "lost_s", "down_s", "stall_s", "n_events")), parts[0].timeline)
