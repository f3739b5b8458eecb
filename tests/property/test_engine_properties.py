"""Engine invariants on random small DAGs (hypothesis): every task once, after its
predecessors, streams in order and never doubly busy, tasks start as early as the rules allow,
bytes conserved on links, memory never negative, and bit-for-bit determinism (also across
PYTHONHASHSEED values, in subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwsim.engine import MemKind, Stream, Task, TaskGraph, TaskKind, simulate
from hwsim.network.transfer import Transfer
from hwsim.units import GB, MB

N_LINKS = 4
LINK_BYTES_PER_S = 1 * GB      # a round test capacity
CAPACITY_BYTES = 1 * MB        # small, so some examples go over it (an OOM finding, no crash)
DURATIONS_S = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
LATENCIES_S = (0.0, 1e-6, 0.25)
REPO = Path(__file__).resolve().parents[2]


class EqualShare:
    """Each link's capacity split equally among the active transfers that cross it."""

    def rates(self, transfers: Sequence[Transfer]) -> list[float]:
        users: dict[int, int] = {}
        for transfer in transfers:
            for link, _ in transfer.link_bytes:
                users[link] = users.get(link, 0) + 1
        return [transfer.max_link_bytes / max(b * users[link] / LINK_BYTES_PER_S
                                               for link, b in transfer.link_bytes)
                for transfer in transfers]


@st.composite
def graphs(draw) -> TaskGraph:
    n_devices = draw(st.integers(1, 4))
    n_steps = draw(st.integers(1, 150))
    device = st.integers(0, n_devices - 1)
    g = TaskGraph()
    live_allocs: list[tuple[int, Task]] = []
    for _ in range(n_steps):
        n = len(g)
        deps = draw(st.lists(st.integers(0, n - 1), max_size=3)) if n else []
        what = draw(st.sampled_from(("compute", "compute", "copy", "collective", "alloc",
                                     "free")))
        if what == "free" and live_allocs:
            alloc_id, alloc = live_allocs.pop(draw(st.integers(0, len(live_allocs) - 1)))
            g.add(Task("free", TaskKind.FREE, alloc.devices, stream=alloc.stream,
                       mem_bytes=alloc.mem_bytes, mem_kind=alloc.mem_kind), deps + [alloc_id])
        elif what == "alloc":
            task = Task("alloc", TaskKind.ALLOC, (draw(device),),
                        stream=draw(st.sampled_from([Stream.COMPUTE, Stream.COPY])),
                        mem_bytes=float(draw(st.integers(1, 6 * MB // 10))),
                        mem_kind=draw(st.sampled_from(list(MemKind))))
            live_allocs.append((g.add(task, deps), task))
        elif what == "collective":
            members = tuple(draw(st.lists(device, min_size=1, max_size=n_devices, unique=True)))
            phases = tuple(
                Transfer(tuple((link, float(draw(st.integers(0, 100 * MB))))
                               for link in draw(st.lists(st.integers(0, N_LINKS - 1),
                                                         max_size=3, unique=True))),
                         latency_s=draw(st.sampled_from(LATENCIES_S)))
                for _ in range(draw(st.integers(0, 3))))
            g.add(Task("coll", TaskKind.COLLECTIVE, members,
                       stream=draw(st.sampled_from([Stream.COMM, Stream.DP, Stream.COMPUTE])),
                       duration_s=draw(st.sampled_from(DURATIONS_S)), transfers=phases), deps)
        else:
            kind, stream = ((TaskKind.COPY, Stream.COPY) if what == "copy"
                            else (TaskKind.COMPUTE, Stream.COMPUTE))
            g.add(Task(what, kind, (draw(device),), stream=stream,
                       duration_s=draw(st.sampled_from(DURATIONS_S))), deps)
    for alloc_id, alloc in live_allocs:  # everything allocated is freed by the end
        g.add(Task("free", TaskKind.FREE, alloc.devices, stream=alloc.stream,
                   mem_bytes=alloc.mem_bytes, mem_kind=alloc.mem_kind), [alloc_id])
    return g


PROPERTY_SETTINGS = settings(max_examples=50, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(graphs())
def test_engine_invariants(g: TaskGraph):
    trace = simulate(g, EqualShare(), CAPACITY_BYTES, n_links=N_LINKS)
    start, end = trace.start_s, trace.end_s

    # every task ran exactly once: a finite interval, never backwards
    assert np.all(np.isfinite(start)) and np.all(start >= 0.0) and np.all(end >= start)
    assert trace.makespan_s == (end.max() if len(end) else 0.0)

    # after its predecessors; and as early as the rules allow: a task starts when the last of
    # its predecessors and of the previous tasks on each of its streams has ended
    ready = np.zeros(len(g))
    for (device, stream), (s, e, ids) in trace.stream_intervals().items():
        assert np.all(s[1:] >= e[:-1]), f"stream {device}/{stream} runs two tasks at once"
        ready[ids[1:]] = np.maximum(ready[ids[1:]], e[:-1])
        assert 0.0 <= trace.utilization(device, stream) <= 1.0
    for task_id, preds in enumerate(g.preds):
        for pred in preds:
            assert start[task_id] >= end[pred]
            ready[task_id] = max(ready[task_id], end[pred])
    np.testing.assert_array_equal(start, ready)

    # durations: timed tasks take exactly theirs, instant ones none
    for task_id, task in enumerate(g.tasks):
        took_s = end[task_id] - start[task_id]
        if task.kind in (TaskKind.ALLOC, TaskKind.FREE):
            assert took_s == 0.0
        elif not task.transfers:
            assert abs(took_s - task.duration_s) <= 1e-12 * max(1.0, end[task_id])
        else:  # at least the latencies, at most all bytes on one link alone for each phase
            least_s = sum(t.latency_s + t.max_link_bytes / LINK_BYTES_PER_S
                          for t in task.transfers)
            assert took_s >= least_s * (1 - 1e-9) - 1e-12 * max(1.0, end[task_id])

    # bytes are conserved on links, and the utilization timeline integrates back to them
    expected = np.zeros(N_LINKS)
    for task in g.tasks:
        for transfer in task.transfers:
            for link, link_bytes in transfer.link_bytes:
                expected[link] += link_bytes
    busy = trace.link_busy_bytes()
    np.testing.assert_allclose(busy, expected, rtol=1e-9, atol=1e-3)
    n_bins = 16
    util = trace.link_utilization_timeline(np.full(N_LINKS, LINK_BYTES_PER_S), n_bins)
    assert util.shape == (N_LINKS, n_bins) and np.all((util >= 0.0) & (util <= 1.0))
    if trace.makespan_s > 0.0:
        carried = util.sum(axis=1) * LINK_BYTES_PER_S * trace.makespan_s / n_bins
        np.testing.assert_allclose(carried, expected, rtol=1e-6, atol=1e-3)

    # memory: never negative, everything freed at the end, peak is the highest level
    for device, timeline in trace.memory.items():
        assert np.all(timeline.levels_bytes >= 0.0)
        assert timeline.levels_bytes[-1].tolist() == [0.0] * len(MemKind)
        assert timeline.peak_bytes == timeline.total_bytes.max()
        over = timeline.total_bytes > CAPACITY_BYTES
        findings = [f for f in trace.oom_findings if f.device == device]
        assert len(findings) == int(over.any())
        if over.any():
            assert findings[0].time_s == timeline.times_s[np.argmax(over)]

    # the same graph, the same trace
    again = simulate(g, EqualShare(), CAPACITY_BYTES, n_links=N_LINKS)
    assert again.fingerprint() == trace.fingerprint()
    np.testing.assert_array_equal(again.segment_rate_bytes_per_s,
                                  trace.segment_rate_bytes_per_s)


_SCRIPT = """
import random
from hwsim.engine import Stream, Task, TaskGraph, TaskKind, simulate
from hwsim.network.transfer import Transfer
from hwsim.units import GB, MB
class EqualShare:
    def rates(self, transfers):
        users = {}
        for t in transfers:
            for link, _ in t.link_bytes:
                users[link] = users.get(link, 0) + 1
        return [t.max_link_bytes / max(b * users[l] / GB for l, b in t.link_bytes)
                for t in transfers]
rng = random.Random(7)
g = TaskGraph()
for i in range(400):
    deps = rng.sample(range(i), k=min(i, rng.randint(0, 3)))
    if rng.random() < 0.2:
        devs = tuple(rng.sample(range(6), k=rng.randint(2, 4)))
        tr = tuple(Transfer(tuple({rng.randrange(5): float(rng.randint(1, 10 * MB))
                                   for _ in range(3)}.items()), 1e-6) for _ in range(2))
        g.add(Task(f"c{i}", TaskKind.COLLECTIVE, devs, stream=Stream.DP, transfers=tr), deps)
    else:
        g.add(Task(f"t{i}", TaskKind.COMPUTE, (rng.randrange(6),),
                   duration_s=rng.uniform(1e-4, 1e-3)), deps)
t = simulate(g, EqualShare(), 1 * GB)
print(t.fingerprint(), t.link_busy_bytes().tobytes().hex())
"""


def test_same_trace_under_different_hash_seeds():
    outputs = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(REPO))
        result = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=60, check=True)
        outputs.append(result.stdout.strip())
    assert outputs[0] and outputs[0] == outputs[1]
