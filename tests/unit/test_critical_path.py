"""The critical path and its account on tiny hand-built graphs whose answer is known exactly."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from hwsim.analysis.critical_path import Cause, Via, account_path, critical_path
from hwsim.analysis.intervals import link_carried_bytes, link_rates, link_utilization, window_utilization
from hwsim.engine.executor import simulate
from hwsim.engine.task import Stream, Task, TaskKind
from hwsim.engine.taskgraph import TaskGraph
from hwsim.hardware.topology import Link, Tier
from hwsim.network.maxmin import Ideal
from hwsim.network.transfer import Transfer
from hwsim.units import GB

# link 0: a network link of 1 GB/s; link 1: an NVLink of 2 GB/s; link 2: a network link of 1 GB/s
CAPACITY = np.array([1.0 * GB, 2.0 * GB, 1.0 * GB])
TOPOLOGY = SimpleNamespace(
    links=[Link("n0.nic0", "leaf0", 1.0 * GB, 0.0, Tier.NETWORK),
           Link(1, "n0.nvswitch", 2.0 * GB, 0.0, Tier.NVLINK),
           Link("leaf0", "n1.nic0", 1.0 * GB, 0.0, Tier.NETWORK)],
    capacity_bytes_per_s=CAPACITY)
PEAK_FLOP_PER_S, HBM_BYTES_PER_S = 1000.0, 100.0  # ridge point: 10 FLOP/B
STAGE_OF = {0: 0, 1: 1}


def compute(name, device, duration_s, category="fwd", flop=1000.0, bytes_moved=1.0):
    return Task(name, TaskKind.COMPUTE, (device,), duration_s=duration_s, category=category,
                flop=flop, bytes_moved=bytes_moved)


def two_stage_graph() -> tuple[TaskGraph, dict[str, int]]:
    """Stage 0 (device 0): a (1 s, compute-bound), b (0.5 s, memory-bound), then e (2 s, off the
    path). A pipeline send s of 2 GB over the 1 GB/s network link with 0.25 s latency: 2.25 s.
    Stage 1 (device 1): d (3 s, no dependency), c (1 s, needs s), a dp all-reduce ar of 1 GB
    over the 2 GB/s NVLink (0.5 s), then the optimizer (0.25 s). Step: 5.5 s."""
    g = TaskGraph()
    ids = {}
    ids["a"] = g.add(compute("a", 0, 1.0))
    ids["b"] = g.add(compute("b", 0, 0.5, flop=0.0, bytes_moved=100.0), [ids["a"]])
    ids["e"] = g.add(compute("e", 0, 2.0, category="bwd"))
    ids["s"] = g.add(Task("send", TaskKind.COLLECTIVE, (0, 1), stream=Stream.P2P, category="pp",
                          transfers=(Transfer(((0, 2.0 * GB),), latency_s=0.25),)), [ids["b"]])
    ids["d"] = g.add(compute("d", 1, 3.0))
    ids["c"] = g.add(compute("c", 1, 1.0), [ids["s"]])
    ids["ar"] = g.add(Task("grad all-reduce", TaskKind.COLLECTIVE, (1,), stream=Stream.DP, category="dp",
                           transfers=(Transfer(((1, 1.0 * GB),)),)), [ids["c"]])
    ids["opt"] = g.add(compute("adam", 1, 0.25, category="optimizer", flop=10.0, bytes_moved=100.0),
                       [ids["ar"]])
    return g, ids


def run(graph: TaskGraph):
    return simulate(graph, Ideal(CAPACITY), 1e12, n_links=len(CAPACITY))


def test_two_stage_path_is_the_known_chain():
    graph, ids = two_stage_graph()
    trace = run(graph)
    assert trace.makespan_s == pytest.approx(5.5)
    steps = critical_path(graph, trace)
    assert [s.task_id for s in steps] == [ids[k] for k in ("a", "b", "s", "c", "ar", "opt")]
    assert [s.via for s in steps] == [Via.START, Via.DATA, Via.DATA, Via.DATA, Via.DATA, Via.DATA]
    assert steps[1].blocker == ids["a"] and steps[3].blocker == ids["s"]
    # the steps tile [0, step time]: each starts when the one before ends, nobody waits
    assert steps[0].start_s == 0.0 and steps[-1].end_s == trace.makespan_s
    for before, after in zip(steps, steps[1:]):
        assert after.start_s == before.end_s
    assert all(s.wait_s == 0.0 for s in steps)


def test_two_stage_account_exact():
    graph, _ = two_stage_graph()
    trace = run(graph)
    account = account_path(critical_path(graph, trace), trace, TOPOLOGY, STAGE_OF, PEAK_FLOP_PER_S,
                           HBM_BYTES_PER_S)
    # stage 1 holds 2.25 s (send) + 1.75 s (c, ar, adam) of the path; stage 0 only 3.75 s
    assert account.reference_stage == 1
    assert account.seconds(Cause.BUBBLE) == pytest.approx(1.5)        # a + b, on stage 0 only
    assert account.seconds(Cause.COMM, "pp", "network") == pytest.approx(2.25)
    assert account.seconds(Cause.COMPUTE) == pytest.approx(1.0)       # c
    assert account.seconds(Cause.COMM, "dp", "nvlink") == pytest.approx(0.5)
    assert account.seconds(Cause.OPTIMIZER) == pytest.approx(0.25)
    assert account.seconds(Cause.MEMORY_BOUND) == 0.0                 # b is on stage 0: bubble
    assert account.seconds(Cause.IDLE) == 0.0
    assert account.total_s == pytest.approx(trace.makespan_s, rel=1e-12)
    assert [p.key for p in account.parts] == [
        "exposed_comm.pp.network", "pipeline_bubble", "compute", "exposed_comm.dp.nvlink", "optimizer"]
    send = account.parts[0]
    assert send.latency_s == pytest.approx(0.25)
    assert send.n_tasks == 1
    assert send.link_utilization_frac == pytest.approx(1.0)
    assert send.links == (0,)


def test_single_stage_splits_compute_by_arithmetic_intensity():
    graph, _ = two_stage_graph()
    trace = run(graph)
    one_stage = {0: 0, 1: 0}  # the same devices as one stage: nothing is a bubble
    account = account_path(critical_path(graph, trace), trace, TOPOLOGY, one_stage, PEAK_FLOP_PER_S,
                           HBM_BYTES_PER_S)
    assert account.seconds(Cause.BUBBLE) == 0.0
    assert account.seconds(Cause.COMPUTE) == pytest.approx(2.0)       # a + c: 1000 FLOP/B >= 10
    assert account.seconds(Cause.MEMORY_BOUND) == pytest.approx(0.5)  # b: 0 FLOP/B
    assert account.total_s == pytest.approx(5.5)


def test_kernel_classes_roofline():
    """Roofline time = flop / 1000 + bytes / 100 s; more than 4x that is overhead."""
    g = TaskGraph()
    big = g.add(compute("gemm", 0, 1.0, flop=900.0, bytes_moved=10.0))           # roofline 1.0 s
    mem = g.add(compute("norm", 0, 0.75, flop=100.0, bytes_moved=60.0), [big])   # 1.7 FLOP/B < 10
    tiny = g.add(compute("tiny", 0, 0.5, flop=10.0, bytes_moved=10.0), [mem])    # roofline 0.11 s
    g.add(compute("recompute", 0, 0.25, category="recompute", flop=0.0, bytes_moved=0.0), [tiny])
    trace = run(g)
    account = account_path(critical_path(g, trace), trace, TOPOLOGY, {0: 0}, PEAK_FLOP_PER_S,
                           HBM_BYTES_PER_S)
    assert account.seconds(Cause.COMPUTE) == pytest.approx(1.0)
    assert account.seconds(Cause.MEMORY_BOUND) == pytest.approx(0.75)
    assert account.seconds(Cause.OVERHEAD) == pytest.approx(0.5)
    assert account.seconds(Cause.RECOMPUTE) == pytest.approx(0.25)
    assert account.total_s == pytest.approx(2.5)


def test_resource_wait_goes_through_the_stream():
    g = TaskGraph()
    x = g.add(compute("x", 0, 2.0))
    y = g.add(compute("y", 0, 1.0))               # no dependency: waits only for the stream
    z = g.add(compute("z", 1, 0.5))
    w = g.add(compute("w", 1, 0.25), [z, y])      # its last-ending dependency is y
    trace = run(g)
    steps = critical_path(g, trace)
    assert [s.task_id for s in steps] == [x, y, w]
    assert [s.via for s in steps] == [Via.START, Via.STREAM, Via.DATA]
    assert steps[-1].end_s == pytest.approx(3.25)


def test_lock_step_peers_keep_the_path_on_the_first_device():
    g = TaskGraph()
    a0 = g.add(compute("a", 0, 1.0))
    a1 = g.add(compute("a", 1, 1.0))
    ar = g.add(Task("ar", TaskKind.COLLECTIVE, (0, 1), stream=Stream.DP, category="dp",
                    transfers=(Transfer(((1, 1.0 * GB),)),)), [a0, a1])
    b0 = g.add(compute("b", 0, 1.0), [ar])
    g.add(compute("b", 1, 1.0), [ar])
    trace = run(g)
    steps = critical_path(g, trace)
    assert [s.task_id for s in steps] == [a0, ar, b0]


def test_link_usage_counts_every_byte_and_the_non_bottleneck_share():
    g = TaskGraph()
    # 2 GB on link 0 and 1 GB on link 2, both 1 GB/s: link 0 sets the rate, link 2 runs at half
    transfer = Transfer(((0, 2.0 * GB), (2, 1.0 * GB)))
    first = g.add(Task("t1", TaskKind.COLLECTIVE, (0,), stream=Stream.COMM, category="tp",
                       transfers=(transfer,)))
    g.add(Task("t2", TaskKind.COLLECTIVE, (0,), stream=Stream.COMM, category="tp",
               transfers=(transfer,)), [first])
    trace = run(g)
    assert trace.makespan_s == pytest.approx(4.0)
    carried = link_carried_bytes(trace, len(CAPACITY))
    np.testing.assert_allclose(carried, [4.0 * GB, 0.0, 2.0 * GB])
    rates = link_rates(trace, [0, 2])
    assert window_utilization(rates, 0, GB, [(0.0, 4.0)]) == pytest.approx(1.0)
    assert window_utilization(rates, 2, GB, [(0.0, 4.0)]) == pytest.approx(0.5)
    assert window_utilization(rates, 2, GB, [(1.0, 1.5), (3.0, 4.0)]) == pytest.approx(0.5)
    util = link_utilization(trace, CAPACITY, [0, 1, 2], 4)
    np.testing.assert_allclose(util, [[1.0] * 4, [0.0] * 4, [0.5] * 4])
    # the engine's own (slower) accounting agrees
    np.testing.assert_allclose(carried, trace.link_busy_bytes(len(CAPACITY)))
