"""The critical path through an executed step, and what its time was spent on.

`critical_path(graph, trace)` walks back from the task that ended last. A task started as soon
as all its dependencies had ended and it was at the head of each of its streams (the
executor's rule), so at each task the thing that made it start when it did is whichever ended
last of: its dependencies (data), and the task before it on each of its streams (resource: a
stream runs in order). The walk moves to that blocker; a gap between the blocker's end and the
task's start is time nobody on the path worked (idle). The steps tile [0, step time].

`account_path(...)` splits the path's time into causes:
- on devices of the *reference stage* (the pipeline stage where the path spends most time):
  kernel overhead (kernels that took more than `OVERHEAD_FACTOR` times their roofline time
  flop/peak + bytes/bandwidth: small kernels dominated by launch cost and low efficiency),
  else compute-bound kernels (arithmetic intensity flop/byte at or above the accelerator's
  ridge point, peak FLOP/s ÷ HBM bandwidth) or memory-bound kernels (below it); recompute;
  the optimizer step; and exposed communication by collective kind (tp, cp, ep, pp, dp) and
  by the tier of each transfer phase's bottleneck link (nvlink, network, ...), host copies
  counted as communication of kind "copy" on the host link;
- on other stages only: pipeline bubble (the reference stage waits on the rest of the pipeline:
  fill, drain and imbalance);
- gaps: idle.
The parts add up to the step time. For exposed communication the account also gives the time
spent in fixed latencies and the utilization of the bottleneck links while those phases ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from hwsim.analysis.intervals import link_rates, window_utilization
from hwsim.engine.task import TaskKind
from hwsim.engine.taskgraph import TaskGraph
from hwsim.engine.trace import Trace
from hwsim.hardware.topology import Topology
from hwsim.workload.plan import Plan

__all__ = ["Via", "PathStep", "Cause", "PathPart", "PathAccount", "critical_path",
           "account_path", "NO_TIER", "HOST_TIER", "OVERHEAD_FACTOR"]

NO_TIER = "-"  # a collective that ran as a fixed duration, without transfers
HOST_TIER = "host"  # host <-> device copies (offload), on the copy stream
# A kernel that took more than this many times its roofline time is overhead-bound. A judgement
# threshold, not a calibration, and generous on purpose: large GEMMs and fused attention run well
# inside a factor of 4 of their roofline (FlashAttention-2, Dao 2023, abstract: "50-73% of the
# theoretical maximum FLOPs/s on A100").
OVERHEAD_FACTOR = 4.0


class Via(StrEnum):
    """Why a task on the path started when it did."""

    START = "start"    # nothing before it (the walk's first task)
    DATA = "data"      # its dependency that ended last
    STREAM = "stream"  # the task before it on one of its streams


@dataclass(frozen=True, slots=True)
class PathStep:
    task_id: int
    start_s: float
    end_s: float
    via: Via            # how the walk reached the task before this one
    blocker: int        # that task's id, -1 for the first step
    wait_s: float       # idle between the blocker's end (or 0) and this task's start


class Cause(StrEnum):
    COMPUTE = "compute"                  # compute-bound kernels: matrix multiplies, attention
    MEMORY_BOUND = "memory-bound"        # kernels limited by HBM bandwidth: norms, activations, ...
    OVERHEAD = "kernel-overhead"         # small kernels: launch cost and low efficiency dominate
    RECOMPUTE = "recompute"              # forward recomputation for the backward
    OPTIMIZER = "optimizer"
    COMM = "exposed-comm"                # collectives the step waited for
    HOST = "host"                        # the GPU waited for its host thread (dispatch, syncs)
    BUBBLE = "pipeline-bubble"           # the reference stage waited on other stages
    IDLE = "idle"                        # nothing on the path ran


@dataclass
class PathPart:
    cause: Cause
    kind: str = ""        # COMM: tp, cp, ep, pp, dp
    tier: str = ""        # COMM: tier of the bottleneck link (nvlink, network, ...) or NO_TIER
    seconds: float = 0.0
    n_tasks: int = 0
    latency_s: float = 0.0                    # COMM: of which fixed per-phase latency
    link_utilization_frac: float | None = None  # COMM: bottleneck links' utilization meanwhile
    links: tuple[int, ...] = ()               # COMM: the bottleneck links (first few)

    @property
    def key(self) -> str:
        if self.cause is Cause.COMM:
            return f"exposed_comm.{self.kind}.{self.tier}" if self.tier else f"exposed_comm.{self.kind}"
        return self.cause.value.replace("-", "_")


@dataclass
class PathAccount:
    step_time_s: float
    reference_stage: int
    parts: list[PathPart]                     # largest first
    steps: list[PathStep] = field(repr=False, default_factory=list)

    @property
    def total_s(self) -> float:
        return sum(p.seconds for p in self.parts)

    def seconds(self, cause: Cause, kind: str | None = None, tier: str | None = None) -> float:
        return sum(p.seconds for p in self.parts if p.cause is cause
                   and (kind is None or p.kind == kind) and (tier is None or p.tier == tier))


def _stream_predecessors(graph: TaskGraph) -> dict[int, list[int]]:
    prev: dict[int, list[int]] = {}
    for order in graph.stream_order().values():
        for before, task_id in zip(order, order[1:]):
            prev.setdefault(task_id, []).append(before)
    return prev


def critical_path(graph: TaskGraph, trace: Trace) -> list[PathStep]:
    """The chain of tasks that set the step time, in time order (see the module docstring)."""
    n = len(graph.tasks)
    if n == 0:
        return []
    start, end = trace.start_s, trace.end_s
    duration = end - start
    # the task that ended last; among ties (lock-step peers) the first issued
    current = int(np.flatnonzero(end == end.max())[0])
    stream_prev = _stream_predecessors(graph)
    steps: list[PathStep] = []
    tasks = graph.tasks
    for _ in range(n):
        # the candidate that ended last; among exact ties (lock-step peers of an unfolded run)
        # one on the same device as the current task, then a dependency over a stream
        # predecessor, then the longer task, then the earlier issued
        here = tasks[current].devices
        best: tuple | None = None  # (end, same device, via rank, duration, -id)
        best_via = Via.START
        for candidates, via_rank, via in ((graph.preds[current], 1, Via.DATA),
                                          (stream_prev.get(current, ()), 0, Via.STREAM)):
            for other in candidates:
                same = any(d in here for d in tasks[other].devices)
                key = (end[other], same, via_rank, duration[other], -other)
                if best is None or key > best:
                    best, best_via = key, via
        blocker = -1 if best is None else -best[4]
        blocker_end = 0.0 if best is None else float(best[0])
        steps.append(PathStep(current, float(start[current]), float(end[current]), best_via,
                              blocker, max(float(start[current]) - blocker_end, 0.0)))
        if blocker < 0:
            break
        current = blocker
    steps.reverse()
    return steps


def _bottleneck(transfer, capacity: np.ndarray) -> int:
    """The link of a transfer phase with the most bytes per capacity (-1 if it moves nothing)."""
    best, best_load = -1, -1.0
    for link, n_bytes in transfer.link_bytes:
        cap = capacity[link]
        load = n_bytes / cap if cap > 0.0 else float("inf")
        if load > best_load:
            best, best_load = link, load
    return best


def _compute_cause(task, seconds: float, peak_flop_per_s: float, hbm_bytes_per_s: float) -> Cause:
    if task.category == "recompute":
        return Cause.RECOMPUTE
    if task.category == "optimizer":
        return Cause.OPTIMIZER
    if peak_flop_per_s <= 0.0 or hbm_bytes_per_s <= 0.0:
        return Cause.COMPUTE
    roofline_s = task.flop / peak_flop_per_s + task.bytes_moved / hbm_bytes_per_s
    if seconds > OVERHEAD_FACTOR * roofline_s:
        return Cause.OVERHEAD
    if task.flop * hbm_bytes_per_s < peak_flop_per_s * task.bytes_moved:  # below the ridge point
        return Cause.MEMORY_BOUND
    return Cause.COMPUTE


def _group_tier(task, plan: Plan | None, topology: Topology, capacity: np.ndarray) -> str:
    """The tier of the slowest link between a collective's group members, for a collective
    charged as a fixed duration (no transfers): its group comes from the plan."""
    device = task.devices[0]
    members: tuple[int, ...] = task.devices
    if plan is not None and task.category in ("tp", "cp", "dp", "pp"):
        members = plan.group(task.category, device)
    elif plan is not None and task.category == "ep":
        stage = plan.coords(device)["pp"]
        members = next((g for g in plan.ep_groups(stage) if device in g), members)
    slowest, tier = float("inf"), NO_TIER
    for other in members:
        if other == device:
            continue
        for link in topology.route(device, other):
            if capacity[link] < slowest:
                slowest, tier = float(capacity[link]), topology.links[link].tier.value
    return tier


def account_path(steps: list[PathStep], trace: Trace, topology: Topology,
                 stage_of: dict[int, int], peak_flop_per_s: float, hbm_bytes_per_s: float,
                 plan: Plan | None = None) -> PathAccount:
    """Split the path's time into causes (see the module docstring); parts sorted by seconds,
    largest first (ties: the order of Cause, then kind and tier). `plan` names the groups of
    collectives that ran without transfers (their tier is then the slowest link between the
    group's members)."""
    graph = trace.graph
    step_time = trace.makespan_s
    capacity = np.asarray(topology.capacity_bytes_per_s, dtype=np.float64)

    def stages(task_id: int) -> set[int]:
        return {stage_of.get(d, 0) for d in graph.tasks[task_id].devices}

    time_on_stage: dict[int, float] = {}
    for st in steps:
        for s in stages(st.task_id):
            time_on_stage[s] = time_on_stage.get(s, 0.0) + (st.end_s - st.start_s)
    reference = max(sorted(time_on_stage), key=lambda s: time_on_stage[s]) if time_on_stage else 0

    # phase rows of each task, for the collectives on the path
    order = np.argsort(trace.phase_task_id, kind="stable")
    sorted_tasks = trace.phase_task_id[order]

    parts: dict[tuple[Cause, str, str], PathPart] = {}
    windows: dict[tuple[Cause, str, str], list[tuple[int, float, float]]] = {}

    def add(cause: Cause, seconds: float, kind: str = "", tier: str = "", count: int = 1,
            latency_s: float = 0.0) -> PathPart:
        key = (cause, kind, tier)
        part = parts.get(key)
        if part is None:
            part = parts[key] = PathPart(cause, kind, tier)
        part.seconds += seconds
        part.n_tasks += count
        part.latency_s += latency_s
        return part

    for st in steps:
        if st.wait_s > 0.0:
            add(Cause.IDLE, st.wait_s, count=0)
        seconds = st.end_s - st.start_s
        task = graph.tasks[st.task_id]
        if seconds <= 0.0 or task.kind in (TaskKind.ALLOC, TaskKind.FREE):
            continue
        if reference not in stages(st.task_id):
            add(Cause.BUBBLE, seconds)
        elif task.kind is TaskKind.COLLECTIVE:
            kind = task.category or task.stream.value
            lo, hi = np.searchsorted(sorted_tasks, [st.task_id, st.task_id + 1])
            rows = order[lo:hi]
            if not len(rows):
                add(Cause.COMM, seconds, kind, _group_tier(task, plan, topology, capacity))
                continue
            counted, longest = 0.0, (-1.0, NO_TIER)
            for row in rows.tolist():
                phase_start = float(trace.phase_start_s[row])
                phase_end = float(trace.phase_end_s[row])
                transfer = task.transfers[int(trace.phase_index[row])]
                link = _bottleneck(transfer, capacity)
                tier = topology.links[link].tier.value if link >= 0 else NO_TIER
                latency = min(transfer.latency_s, phase_end - phase_start)
                add(Cause.COMM, phase_end - phase_start, kind, tier, count=0, latency_s=latency)
                if link >= 0 and phase_end > phase_start + latency:
                    windows.setdefault((Cause.COMM, kind, tier), []).append(
                        (link, phase_start + latency, phase_end))
                counted += phase_end - phase_start
                longest = max(longest, (phase_end - phase_start, tier))
            # the task counts once, under the tier of its longest phase; time outside its
            # phases (none in the executor today) goes there too
            add(Cause.COMM, max(seconds - counted, 0.0), kind, longest[1])
        elif task.kind is TaskKind.COPY:
            add(Cause.COMM, seconds, "copy", HOST_TIER)
        elif task.kind is TaskKind.HOST:
            add(Cause.HOST, seconds)
        else:
            add(_compute_cause(task, seconds, peak_flop_per_s, hbm_bytes_per_s), seconds)

    _link_utilizations(trace, capacity, parts, windows)
    rank = {cause: i for i, cause in enumerate(Cause)}
    ordered = sorted(parts.values(), key=lambda p: (-p.seconds, rank[p.cause], p.kind, p.tier))
    return PathAccount(step_time, reference, ordered, steps)


def _link_utilizations(trace: Trace, capacity: np.ndarray, parts, windows) -> None:
    """For each communication part, the utilization of its bottleneck links over its phases."""
    all_links = sorted({link for ws in windows.values() for link, _, _ in ws})
    if not all_links:
        return
    rates = link_rates(trace, all_links)
    for key, ws in windows.items():
        by_link: dict[int, list[tuple[float, float]]] = {}
        for link, a, b in ws:
            by_link.setdefault(link, []).append((a, b))
        carried = 0.0
        possible = 0.0
        for link, spans in by_link.items():
            length_s = sum(b - a for a, b in spans)
            util = window_utilization(rates, link, float(capacity[link]), spans)
            carried += util * float(capacity[link]) * length_s
            possible += float(capacity[link]) * length_s
        part = parts[key]
        part.link_utilization_frac = carried / possible if possible > 0.0 else None
        part.links = tuple(sorted(by_link, key=lambda lk: -sum(b - a for a, b in by_link[lk]))[:4])
