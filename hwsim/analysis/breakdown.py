"""Where one device's step time went: a partition of [0, step time] into compute, exposed
communication by kind, pipeline bubble and idle — the parts add up to the step time exactly.

An instant counts as compute when the device's compute stream is busy; otherwise as exposed
communication of the kind whose collective is running on one of its other streams (the one
that started first); otherwise as host-bound when its host thread is dispatching or syncing
(the GPU waits for the CPU); otherwise as pipeline bubble (pp > 1) or idle.
"""

from __future__ import annotations

import heapq

from hwsim.engine.task import Stream, TaskKind
from hwsim.engine.trace import Trace

COMM_STREAMS = (Stream.COMM, Stream.P2P, Stream.P2P_BWD, Stream.DP, Stream.DP_GATHER, Stream.COPY)


def device_breakdown(trace: Trace, device: int, pipeline: bool) -> dict[str, float]:
    """Seconds of the step by cause for `device`; the values sum to the makespan."""
    graph = trace.graph
    streams = trace.stream_intervals()
    out: dict[str, float] = {}
    compute_cat: dict[str, float] = {}
    events: list[tuple[float, int, int, str]] = []  # (time, +1 start / -1 end, order, label)
    order = 0
    for stream in (Stream.COMPUTE, *COMM_STREAMS, Stream.HOST):
        key = (device, stream)
        if key not in streams:
            continue
        starts, ends, ids = streams[key]
        for s, e, tid in zip(starts.tolist(), ends.tolist(), ids.tolist()):
            task = graph.tasks[tid]
            if e <= s or task.kind in (TaskKind.ALLOC, TaskKind.FREE):
                continue
            if stream == Stream.COMPUTE:
                label = "compute"
                compute_cat[task.category or "other"] = compute_cat.get(task.category or "other", 0.0) + (e - s)
            elif stream == Stream.HOST:
                label = "host"
            else:
                label = f"exposed_comm.{task.category or stream.value}"
            events.append((s, 1, order, label))
            events.append((e, -1, order, label))
            order += 1
    events.sort(key=lambda x: (x[0], x[1]))
    active_compute = 0
    active_host = 0
    active_comm: dict[int, str] = {}
    comm_heap: list[tuple[float, int]] = []
    t_prev = 0.0
    idle_label = "pipeline_bubble" if pipeline else "idle"
    for t, kind, idx, label in events:
        if t > t_prev:
            if active_compute:
                cause = "compute"
            else:
                while comm_heap and comm_heap[0][1] not in active_comm:
                    heapq.heappop(comm_heap)
                cause = (active_comm[comm_heap[0][1]] if comm_heap else
                         "host" if active_host else idle_label)
            out[cause] = out.get(cause, 0.0) + (t - t_prev)
            t_prev = t
        if label == "compute":
            active_compute += kind
        elif label == "host":
            active_host += kind
        elif kind == 1:
            active_comm[idx] = label
            heapq.heappush(comm_heap, (t, idx))
        else:
            active_comm.pop(idx, None)
    if trace.makespan_s > t_prev:
        out[idle_label] = out.get(idle_label, 0.0) + (trace.makespan_s - t_prev)
    out["_compute_by_category"] = compute_cat  # type: ignore[assignment]
    return out


def step_breakdown(trace: Trace, devices: tuple[int, ...], pipeline: bool) -> tuple[int, dict[str, float], dict[str, float]]:
    """The breakdown of the busiest device (most compute time): (device, flat breakdown, compute by category).
    Only the devices whose compute stream is within 1% of the busiest are broken down (in an
    unfolded run lock-step peers are alike; ties go to the lowest device)."""
    streams = trace.stream_intervals()
    busy = {}
    for d in devices:
        iv = streams.get((d, Stream.COMPUTE))
        busy[d] = float((iv[1] - iv[0]).sum()) if iv is not None else 0.0
    top = max(busy.values(), default=0.0)
    candidates = [d for d in devices if busy[d] >= top * 0.99][:16]
    best = None
    for d in candidates:
        b = device_breakdown(trace, d, pipeline)
        cats = b.pop("_compute_by_category")
        key = (b.get("compute", 0.0), -d)
        if best is None or key > best[0]:
            best = (key, d, b, cats)
    assert best is not None
    _, d, b, cats = best
    return d, b, cats
