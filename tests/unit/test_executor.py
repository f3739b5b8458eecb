"""The executor on tiny graphs whose timelines are computed by hand and compared exactly."""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx
import numpy as np
import pytest

from hwsim.engine import MemKind, Stream, Task, TaskGraph, TaskKind, simulate
from hwsim.errors import SimulationError
from hwsim.network.transfer import Transfer
from hwsim.units import GB, US

CAPACITY_BYTES = 10 * GB


class Ideal:
    """Every transfer alone at a fixed rate (no sharing)."""

    def __init__(self, rate_bytes_per_s: float) -> None:
        self.rate_bytes_per_s = rate_bytes_per_s
        self.calls: list[int] = []

    def rates(self, transfers: Sequence[Transfer]) -> list[float]:
        self.calls.append(len(transfers))
        return [self.rate_bytes_per_s] * len(transfers)


class EqualShare:
    """Each link's capacity split equally among the active transfers that cross it."""

    def __init__(self, capacity_bytes_per_s: float) -> None:
        self.capacity_bytes_per_s = capacity_bytes_per_s
        self.calls: list[int] = []

    def rates(self, transfers: Sequence[Transfer]) -> list[float]:
        self.calls.append(len(transfers))
        users: dict[int, int] = {}
        for transfer in transfers:
            for link, _ in transfer.link_bytes:
                users[link] = users.get(link, 0) + 1
        return [transfer.max_link_bytes / max(b * users[link] / self.capacity_bytes_per_s
                                               for link, b in transfer.link_bytes)
                for transfer in transfers]


def compute(name: str, device: int, duration_s: float, stream: Stream = Stream.COMPUTE) -> Task:
    return Task(name, TaskKind.COMPUTE, (device,), stream=stream, duration_s=duration_s)


def collective(name: str, devices: tuple[int, ...], *transfers: Transfer,
               duration_s: float = 0.0, stream: Stream = Stream.COMM) -> Task:
    return Task(name, TaskKind.COLLECTIVE, devices, stream=stream, duration_s=duration_s,
                transfers=transfers)


def run(graph: TaskGraph, network=None, **kwargs):
    return simulate(graph, network or Ideal(GB), CAPACITY_BYTES, **kwargs)


# --- task timelines -------------------------------------------------------------------------

def test_chain_on_one_stream():
    g = TaskGraph()
    a = g.add(compute("a", 0, 1.0))
    b = g.add(compute("b", 0, 2.0), [a])
    g.add(compute("c", 0, 3.0), [b])
    trace = run(g)
    assert trace.start_s.tolist() == [0.0, 1.0, 3.0]
    assert trace.end_s.tolist() == [1.0, 3.0, 6.0]
    assert trace.makespan_s == 6.0
    assert trace.utilization(0, Stream.COMPUTE) == 1.0


def test_stream_is_in_order_without_dependencies():
    g = TaskGraph()
    g.add(compute("a", 0, 2.0))
    g.add(compute("b", 0, 1.0))  # no dependency, but behind `a` on the same stream
    g.add(compute("c", 1, 1.0))  # another device: runs at once
    trace = run(g)
    assert trace.start_s.tolist() == [0.0, 2.0, 0.0]
    assert trace.end_s.tolist() == [2.0, 3.0, 1.0]
    assert trace.utilization(1, Stream.COMPUTE) == pytest.approx(1 / 3)


def test_fork_join_across_devices():
    g = TaskGraph()
    a = g.add(compute("a", 0, 1.0))
    b = g.add(compute("b", 1, 2.0), [a])
    c = g.add(compute("c", 2, 3.0), [a])
    g.add(compute("d", 0, 0.5), [b, c])
    trace = run(g)
    assert trace.start_s.tolist() == [0.0, 1.0, 1.0, 4.0]
    assert trace.end_s.tolist() == [1.0, 3.0, 4.0, 4.5]
    assert g.devices == [0, 1, 2]


def test_two_streams_overlap_and_a_cross_stream_dependency_waits():
    g = TaskGraph()
    a = g.add(compute("a", 0, 2.0))
    b = g.add(collective("b", (0,), duration_s=3.0))  # comm stream, overlaps `a`
    g.add(compute("c", 0, 1.0), [a, b])
    trace = run(g)
    assert trace.start_s.tolist() == [0.0, 0.0, 3.0]
    assert trace.end_s.tolist() == [2.0, 3.0, 4.0]
    assert trace.utilization(0, Stream.COMPUTE) == 3.0 / 4.0
    assert trace.utilization(0, Stream.COMM) == 3.0 / 4.0
    intervals = trace.stream_intervals()
    starts, ends, ids = intervals[(0, Stream.COMPUTE)]
    assert ids.tolist() == [0, 2] and starts.tolist() == [0.0, 3.0] and ends.tolist() == [2.0, 4.0]


def test_collective_rendezvous_waits_for_the_late_member():
    g = TaskGraph()
    g.add(compute("a", 0, 1.0))
    g.add(compute("b", 1, 3.0))
    # on the compute stream of both: device 0 reaches it at 1 s, device 1 at 3 s
    c = g.add(collective("c", (0, 1), duration_s=2.0, stream=Stream.COMPUTE))
    g.add(compute("d", 0, 1.0))  # behind c on device 0's stream, no dependency
    g.add(compute("e", 1, 1.0), [c])
    trace = run(g)
    assert trace.start_s.tolist() == [0.0, 0.0, 3.0, 5.0, 5.0]
    assert trace.end_s.tolist() == [1.0, 3.0, 5.0, 6.0, 6.0]
    assert trace.utilization(0, Stream.COMPUTE) == 4.0 / 6.0


def test_alloc_and_free_are_instant_but_ordered_in_their_stream():
    g = TaskGraph()
    g.add(compute("a", 0, 1.0))
    alloc = g.add(Task("alloc", TaskKind.ALLOC, (0,), mem_bytes=GB, mem_kind=MemKind.ACTIVATIONS))
    b = g.add(compute("b", 0, 2.0))
    g.add(Task("free", TaskKind.FREE, (0,), mem_bytes=GB, mem_kind=MemKind.ACTIVATIONS),
          [alloc, b])
    trace = run(g)
    assert trace.start_s.tolist() == [0.0, 1.0, 1.0, 3.0]
    assert trace.end_s.tolist() == [1.0, 1.0, 3.0, 3.0]
    timeline = trace.memory[0]
    assert timeline.times_s.tolist() == [0.0, 1.0, 3.0]
    assert timeline.level_bytes(MemKind.ACTIVATIONS).tolist() == [0.0, GB, 0.0]
    assert timeline.peak_bytes == GB and timeline.peak_time_s == 1.0


# --- network --------------------------------------------------------------------------------

def test_two_transfers_share_one_link_then_the_survivor_speeds_up():
    # 1 GB and 3 GB on one 1 GB/s link: both at 0.5 GB/s until the first ends at 2 s, then the
    # second alone carries its last 2 GB in 2 s.
    net = EqualShare(GB)
    g = TaskGraph()
    g.add(collective("small", (0,), Transfer(((0, 1 * GB),))))
    g.add(collective("big", (1,), Transfer(((0, 3 * GB),))))
    trace = run(g, net)
    assert trace.end_s.tolist() == [2.0, 4.0]
    assert net.calls == [2, 1]  # the two starts at t=0 are one re-solve
    assert trace.link_busy_bytes().tolist() == [4 * GB]
    assert trace.phase_end_s.tolist() == [2.0, 4.0]
    util = trace.link_utilization_timeline(np.array([GB, GB]), 4)
    assert util.shape == (2, 4)
    np.testing.assert_allclose(util[0], [1.0, 1.0, 1.0, 1.0], rtol=1e-12)
    assert util[1].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_a_transfer_joining_late_slows_the_first():
    # A (2 GB) alone at 1 GB/s from 0; B (1 GB) joins at 1 s: 1 GB left each at 0.5 GB/s,
    # both end at 3 s. Link timeline: full for the whole run.
    net = EqualShare(GB)
    g = TaskGraph()
    g.add(collective("A", (0,), Transfer(((0, 2 * GB),))))
    w = g.add(compute("wait", 1, 1.0))
    g.add(collective("B", (1,), Transfer(((0, 1 * GB),))), [w])
    trace = run(g, net)
    assert trace.end_s.tolist() == [3.0, 1.0, 3.0]
    assert trace.segment_rate_bytes_per_s.tolist() == [GB, GB / 2, GB / 2]
    assert trace.segment_start_s.tolist() == [0.0, 1.0, 1.0]
    util = trace.link_utilization_timeline(np.array([GB]), 3)
    np.testing.assert_allclose(util, [[1.0, 1.0, 1.0]], rtol=1e-12)


def test_latency_then_bytes_and_phases_in_sequence():
    rate = 100 * GB
    g = TaskGraph()
    g.add(collective("ar", (0, 1),
                     Transfer(((0, GB), (1, GB / 2)), latency_s=5 * US),
                     Transfer((), latency_s=3 * US),  # no bytes: its latency only
                     Transfer(((1, GB),))))
    trace = run(g, Ideal(rate))
    phase1_end = 5 * US + GB / rate
    phase2_end = phase1_end + 3 * US
    phase3_end = phase2_end + GB / rate
    assert trace.end_s.tolist() == [phase3_end]
    assert trace.phase_index.tolist() == [0, 1, 2]
    assert trace.phase_task_id.tolist() == [0, 0, 0]
    assert trace.phase_start_s.tolist() == [0.0, phase1_end, phase2_end]
    assert trace.phase_end_s.tolist() == [phase1_end, phase2_end, phase3_end]
    busy = trace.link_busy_bytes(3)
    np.testing.assert_allclose(busy, [GB, 1.5 * GB, 0.0], rtol=1e-12)
    assert trace.n_links == 2


def test_collective_without_transfers_takes_its_duration():
    g = TaskGraph()
    g.add(collective("precomputed", (0, 1, 2), duration_s=0.25))
    trace = run(g)
    assert trace.end_s.tolist() == [0.25]
    assert len(trace.phase_task_id) == 0


def test_a_network_that_gives_no_bandwidth_is_a_deadlock():
    g = TaskGraph()
    g.add(collective("starved", (0,), Transfer(((0, GB),))))
    with pytest.raises(SimulationError, match="starved"):
        run(g, Ideal(0.0))


# --- memory ---------------------------------------------------------------------------------

def test_alloc_over_capacity_is_an_oom_finding_and_sets_the_high_water_mark():
    g = TaskGraph()
    a1 = g.add(Task("w", TaskKind.ALLOC, (0,), mem_bytes=6 * GB, mem_kind=MemKind.WEIGHTS))
    c = g.add(compute("fwd", 0, 1.0))
    a2 = g.add(Task("act", TaskKind.ALLOC, (0,), mem_bytes=6 * GB, mem_kind=MemKind.ACTIVATIONS))
    a3 = g.add(Task("act2", TaskKind.ALLOC, (0,), mem_bytes=GB, mem_kind=MemKind.ACTIVATIONS))
    g.add(compute("bwd", 0, 1.0))
    g.add(Task("free", TaskKind.FREE, (0,), mem_bytes=7 * GB, mem_kind=MemKind.ACTIVATIONS),
          [a2, a3, c])
    g.add(Task("free-w", TaskKind.FREE, (0,), mem_bytes=6 * GB, mem_kind=MemKind.WEIGHTS), [a1])
    trace = run(g)  # capacity 10 GB, never blocks
    assert trace.makespan_s == 2.0
    [oom] = trace.oom_findings
    assert (oom.device, oom.time_s, oom.level_bytes, oom.task_name) == (0, 1.0, 12 * GB, "act")
    assert oom.capacity_bytes == CAPACITY_BYTES and oom.excess_bytes == 2 * GB
    assert trace.peak_memory_bytes() == {0: 13 * GB}
    assert trace.memory[0].peak_time_s == 1.0
    assert trace.memory[0].total_bytes.tolist() == [0.0, 6 * GB, 12 * GB, 13 * GB, 6 * GB, 0.0]


def test_initial_memory_counts_from_time_zero():
    g = TaskGraph()
    g.add(Task("opt", TaskKind.ALLOC, (1,), mem_bytes=5 * GB, mem_kind=MemKind.OPTIMIZER))
    trace = run(g, initial_memory={1: {MemKind.WEIGHTS: 6 * GB}, 2: {MemKind.WEIGHTS: GB}})
    assert trace.memory[1].total_bytes.tolist() == [6 * GB, 11 * GB]
    assert trace.memory[2].peak_bytes == GB
    [oom] = trace.oom_findings
    assert oom.device == 1 and oom.level_bytes == 11 * GB


def test_free_of_more_than_is_held_is_a_simulation_error():
    g = TaskGraph()
    g.add(Task("a", TaskKind.ALLOC, (0,), mem_bytes=GB, mem_kind=MemKind.ACTIVATIONS))
    g.add(Task("f", TaskKind.FREE, (0,), mem_bytes=GB, mem_kind=MemKind.GRADIENTS))
    with pytest.raises(SimulationError, match="'f' frees"):
        run(g)


# --- deadlocks and graph checks ---------------------------------------------------------------

def test_a_stream_order_against_the_dependencies_deadlocks():
    g = TaskGraph()
    a = g.add(compute("a", 0, 1.0))
    b = g.add(compute("b", 0, 1.0), [a])
    g.set_stream_order(0, Stream.COMPUTE, [b, a])
    with pytest.raises(SimulationError, match=r"2 of 2 tasks not run[\s\S]*'b' \(id 1\)"):
        run(g)


def test_a_collective_issued_in_different_orders_deadlocks():
    g = TaskGraph()
    c1 = g.add(collective("c1", (0, 1), duration_s=1.0))
    c2 = g.add(collective("c2", (0, 1), duration_s=1.0))
    g.set_stream_order(1, Stream.COMM, [c2, c1])
    with pytest.raises(SimulationError, match="waits for devices"):
        run(g)


def test_taskgraph_rejects_bad_input_and_exports_networkx():
    g = TaskGraph()
    a = g.add(compute("a", 0, 1.0))
    with pytest.raises(ValueError, match="earlier task id"):
        g.add(compute("b", 0, 1.0), [1])
    with pytest.raises(ValueError, match="only a collective"):
        g.add(Task("x", TaskKind.COMPUTE, (0, 1)))
    with pytest.raises(ValueError, match="twice"):
        g.add(collective("y", (1, 1)))
    with pytest.raises(ValueError, match="permutation"):
        g.set_stream_order(0, Stream.COMPUTE, [a, a])
    b = g.add(collective("c", (2, 0), duration_s=1.0), [a])
    assert len(g) == 2 and g.devices == [0, 2]
    assert g.stream_order() == {(0, Stream.COMPUTE): [0], (2, Stream.COMM): [1],
                                (0, Stream.COMM): [1]}
    nxg = g.to_networkx()
    assert list(nxg.edges) == [(a, b)] and nxg.nodes[b]["task"].name == "c"
    assert list(nx.topological_sort(nxg)) == [a, b]
    assert g.successors() == [[b], []]


def test_a_running_collective_slows_compute_on_its_device_only():
    # compute of 10 s on device 0; a 2 s collective on device 0's comm stream overlaps its start
    # with a slowdown of 0.5: 1 s of work is done in [0, 2], the other 9 s at full speed -> 11 s.
    g = TaskGraph()
    a = g.add(compute("gemm", 0, 10.0))
    c = g.add(Task("ar", TaskKind.COLLECTIVE, (0,), Stream.COMM, duration_s=2.0))
    b = g.add(compute("other device", 1, 10.0))
    tr = run(g, comm_slowdown=0.5)
    assert tr.end_s[a] == pytest.approx(11.0)
    assert tr.end_s[c] == pytest.approx(2.0)
    assert tr.end_s[b] == pytest.approx(10.0)
    assert run(g).end_s[a] == pytest.approx(10.0)


def test_compute_slowed_by_two_collectives_in_turn():
    # rate 0.75 while a collective runs: [0,2] does 1.5 s of work, [2,3] 1.0, [3,5] 1.5, then
    # the remaining 6.0 s at full speed: the kernel ends at 11 s.
    g = TaskGraph()
    a = g.add(compute("gemm", 0, 10.0))
    g.add(Task("c1", TaskKind.COLLECTIVE, (0,), Stream.COMM, duration_s=2.0))
    d = g.add(compute("elsewhere", 1, 3.0))
    g.add(Task("c2", TaskKind.COLLECTIVE, (0,), Stream.DP, duration_s=2.0), [d])
    assert run(g, comm_slowdown=0.25).end_s[a] == pytest.approx(11.0)
