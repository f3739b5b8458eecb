"""trace.json: the step as a Chrome / Perfetto trace (Trace Event Format, opens in
ui.perfetto.dev or chrome://tracing).

- one process per simulated device (pid = device id, named "device 3 (stage 1)" or, folded,
  "stage 1: device 128, stands for 128 devices"), one thread per stream (tid = the stream's
  position in `Stream`, named after it);
- one complete event (ph "X", ts/dur in µs) per (task, device) that took time, with name,
  cat = category and args {flop, bytes, layer, micro_batch, task_id};
- counters (ph "C"): each device's memory by kind in GiB, and the utilization of the busiest
  links (one process "network links" whose pid follows the last device's).
Bounded: at most `max_events` events; past that the shortest task events are dropped (and the
counters thinned evenly, keeping at least a tenth of the cap) and `otherData` says how many.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hwsim import units
from hwsim.analysis.intervals import busiest_links, interval_rows, link_utilization
from hwsim.engine.memory import MEM_KINDS
from hwsim.engine.task import Stream

__all__ = ["MAX_EVENTS", "trace_events", "write_perfetto"]

MAX_EVENTS = 500_000
_N_LINKS = 8
_N_LINK_BINS = 1000
_STREAM_TID = {stream: i for i, stream in enumerate(Stream)}


def _process_name(compiled, device: int) -> str:
    stage = compiled.stage_of.get(device, 0)
    if compiled.folded:
        return f"stage {stage}: device {device}, stands for {compiled.stands_for.get(device, 1)} devices"
    return f"device {device} (stage {stage})"


def _metadata(pid: int, tid: int | None, what: str, value) -> dict:
    event = {"name": what, "ph": "M", "pid": pid, "tid": 0 if tid is None else tid, "args": {}}
    event["args"]["name" if what.endswith("_name") else "sort_index"] = value
    return event


def trace_events(result, max_events: int = MAX_EVENTS) -> dict:
    """The trace as a JSON-ready dict {"traceEvents": [...], "displayTimeUnit", "otherData"}."""
    compiled, trace, summary = result.compiled, result.trace, result.summary
    graph = trace.graph
    us = 1.0 / units.US
    devices = sorted(set(compiled.simulated) | set(graph.devices))
    events: list[dict] = []
    for device in devices:
        events.append(_metadata(device, None, "process_name", _process_name(compiled, device)))
        events.append(_metadata(device, None, "process_sort_index", device))
    for device, stream in graph.stream_order():
        tid = _STREAM_TID[stream]
        events.append(_metadata(device, tid, "thread_name", stream.value))
        events.append(_metadata(device, tid, "thread_sort_index", tid))

    counters = _memory_counters(trace, devices, us) + _link_counters(compiled, trace, devices, us)
    ids, devs = interval_rows(trace)
    # task events first; counters keep at least a tenth of the cap (thinned evenly past it)
    room = max(max_events - len(events), 0)
    counter_budget = min(len(counters), max(room // 10, room - len(ids)))
    thinned = 0
    if len(counters) > counter_budget:
        stride = -(-len(counters) // max(counter_budget, 1))
        kept = [e for i, e in enumerate(counters) if i % stride == 0 or e["ph"] == "M"][:counter_budget]
        thinned, counters = len(counters) - len(kept), kept
    budget = room - len(counters)
    dropped, below_us = 0, 0.0
    if len(ids) > budget:
        durations = trace.end_s[ids] - trace.start_s[ids]
        longest_first = np.argsort(-durations, kind="stable")
        dropped = len(ids) - budget
        below_us = float(durations[longest_first[budget]] * us)  # the longest one dropped
        keep = np.sort(longest_first[:budget])
        ids, devs = ids[keep], devs[keep]
    ts = np.round(trace.start_s[ids] * us, 3).tolist()
    dur = np.round((trace.end_s[ids] - trace.start_s[ids]) * us, 3).tolist()
    static: dict[int, tuple] = {}   # per task: what every one of its events shares
    for task_id, device, t, d in zip(ids.tolist(), devs.tolist(), ts, dur):
        shared = static.get(task_id)
        if shared is None:
            task = graph.tasks[task_id]
            shared = static[task_id] = (task.name, task.category or task.kind.value, _STREAM_TID[task.stream],
                                        {"flop": task.flop, "bytes": task.bytes_moved, "layer": task.layer,
                                         "micro_batch": task.micro_batch, "task_id": task_id})
        events.append({"name": shared[0], "cat": shared[1], "ph": "X", "ts": t, "dur": d, "pid": device,
                       "tid": shared[2], "args": shared[3]})
    events.extend(counters)
    other = {"scenario": summary["name"], "step_time_s": summary["step_time_s"], "mfu": summary["mfu"],
             "devices": summary["devices"], "simulated_devices": summary["simulated_devices"],
             "folded": summary["folded"], "max_events": max_events, "dropped_task_events": dropped,
             "dropped_counter_events": thinned,
             "memory_counters": "GiB per kind", "link_counters": "utilization in [0, 1]"}
    if dropped or thinned:
        other["note"] = (f"{dropped} task events of at most {below_us:.3f} us and {thinned} counter "
                         f"events (evenly) were left out to keep the trace under {max_events} events")
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": other}


def _changes(values: np.ndarray) -> np.ndarray:
    """Mask of the rows of `values` [n, k] that differ from the row before (the first kept)."""
    keep = np.ones(len(values), dtype=bool)
    if len(values) > 1:
        keep[1:] = np.any(values[1:] != values[:-1], axis=1)
    return keep


def _memory_counters(trace, devices: list[int], us: float) -> list[dict]:
    out = []
    kinds = [k.value for k in MEM_KINDS]
    for device in devices:
        timeline = trace.memory.get(device)
        if timeline is None or not len(timeline.times_s):
            continue
        times = timeline.times_s
        last = np.ones(len(times), dtype=bool)          # the last event of each instant
        last[:-1] = times[1:] != times[:-1]
        levels = np.round(timeline.levels_bytes[last] / units.GiB, 4)
        keep = _changes(levels)
        stamps = np.round(times[last][keep] * us, 3).tolist()
        for t, row in zip(stamps, levels[keep].tolist()):
            out.append({"name": "memory (GiB)", "ph": "C", "ts": t, "pid": device, "tid": 0,
                        "args": dict(zip(kinds, row))})
    return out


def _link_counters(compiled, trace, devices: list[int], us: float) -> list[dict]:
    links = busiest_links(compiled.topology, trace, _N_LINKS)
    if not links or trace.makespan_s <= 0.0:
        return []
    pid = (max(devices) + 1) if devices else 0
    out = [_metadata(pid, None, "process_name", "network links (busiest, utilization)"),
           _metadata(pid, None, "process_sort_index", pid)]
    util = link_utilization(trace, compiled.topology.capacity_bytes_per_s, [b.link for b in links],
                            _N_LINK_BINS)
    edges = np.round(np.linspace(0.0, trace.makespan_s, _N_LINK_BINS + 1)[:-1] * us, 3)
    for row, busy in zip(np.round(util, 4), links):
        name = busy.label + (f" (+{busy.n_alike - 1} alike)" if busy.n_alike > 1 else "")
        keep = _changes(row[:, None])
        for t, value in zip(edges[keep].tolist(), row[keep].tolist()):
            out.append({"name": name, "ph": "C", "ts": t, "pid": pid, "tid": 0, "args": {"utilization": value}})
        out.append({"name": name, "ph": "C", "ts": round(trace.makespan_s * us, 3), "pid": pid,
                    "tid": 0, "args": {"utilization": 0.0}})
    return out


def write_perfetto(result, path: Path, max_events: int = MAX_EVENTS) -> Path:
    """Write trace.json; returns `path`."""
    # json.dumps runs entirely in the C encoder; json.dump to a file would not
    text = json.dumps(trace_events(result, max_events), separators=(",", ":"))
    Path(path).write_text(text)
    return path
