"""Collective algorithms -> Transfers: closed forms, invariants, AUTO, caching, errors."""

from collections import defaultdict

import pytest

from hwsim.config.schema import ClusterConfig
from hwsim.hardware.topology import Tier, build_topology, load_transports
from hwsim.network.benchmark import collective_table
from hwsim.network.collectives import (Algorithm, CollectiveOp, bus_bandwidth_factor, choose_algorithm,
                                       collective_time, collective_transfers)
from hwsim.network.maxmin import MaxMinFair
from hwsim.units import GB, GiB, MiB, US

ACCELERATOR = dict(name="test-gpu", peak=dict(fp32="10 TFLOPS", fp16="100 TFLOPS"), hbm="80 GB",
                   hbm_bandwidth="2 TB/s", host_bandwidth="32 GB/s")
S = 1 * GiB
AR, RS, AG, A2A, BC, SR = (CollectiveOp.ALL_REDUCE, CollectiveOp.REDUCE_SCATTER, CollectiveOp.ALL_GATHER,
                           CollectiveOp.ALL_TO_ALL, CollectiveOp.BROADCAST, CollectiveOp.SEND_RECV)


def cluster(nodes=1, dpn=8, intra="switch", intra_bw="300 GB/s", nics=8, inter="fat-tree"):
    data = dict(accelerator=ACCELERATOR, nodes=nodes, devices_per_node=dpn,
                intra_node=dict(kind=intra, bandwidth=intra_bw, latency="1 us"))
    if nodes > 1:
        data["inter_node"] = dict(kind=inter, nics_per_node=nics, nic_bandwidth="200 Gb/s", latency="5 us")
    return ClusterConfig.model_validate(data)


def bytes_by_link(transfers):
    out = defaultdict(float)
    for t in transfers:
        for link, b in t.link_bytes:
            out[link] += b
    return out


def uplink_bytes(topo, transfers, device):
    load = bytes_by_link(transfers)
    return sum(b for link, b in load.items() if topo.links[link].src == device)


def test_bus_bandwidth_factors():
    assert bus_bandwidth_factor(AR, 8) == pytest.approx(14 / 8)
    assert bus_bandwidth_factor(AG, 8) == bus_bandwidth_factor(RS, 8) == pytest.approx(7 / 8)
    assert bus_bandwidth_factor(A2A, 4) == pytest.approx(3 / 4)
    assert bus_bandwidth_factor(BC, 8) == bus_bandwidth_factor(SR, 2) == 1.0


@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_ring_all_reduce_sends_2_n_minus_1_over_n_per_rank(n):
    topo = build_topology(cluster())
    transfers = collective_transfers(topo, AR, [list(range(n))], S, Algorithm.RING)
    assert len(transfers) == 1
    for d in range(n):
        assert uplink_bytes(topo, transfers, d) == pytest.approx(2 * (n - 1) / n * S, rel=1e-12)


@pytest.mark.parametrize("op", [AG, RS])
@pytest.mark.parametrize("n", [2, 5, 8])
def test_ring_all_gather_and_reduce_scatter_send_n_minus_1_over_n(op, n):
    topo = build_topology(cluster())
    transfers = collective_transfers(topo, op, [list(range(n))], S, Algorithm.RING)
    for d in range(n):
        assert uplink_bytes(topo, transfers, d) == pytest.approx((n - 1) / n * S, rel=1e-12)


def test_ring_time_closed_form_on_a_switch():
    topo = build_topology(cluster())
    t = load_transports()
    cap = 300 * GB * t.efficiency(Tier.NVLINK, 300 * GB)
    step = 1 * US + t.step_overhead_s(Tier.NVLINK)
    time_s = collective_time(topo, MaxMinFair(topo.capacity_bytes_per_s), AR, [range(8)], S, Algorithm.RING)
    assert time_s == pytest.approx(2 * 7 / 8 * S / cap + 2 * 7 * step, rel=1e-9)


def test_busbw_independent_of_n_at_large_sizes():
    c = cluster(dpn=16)
    busbw = [collective_table(c, AR, n, [S])[0]["busbw_bytes_per_s"] for n in (4, 8, 16)]
    assert max(busbw) / min(busbw) < 1.02


def test_multi_node_ring_uses_one_channel_per_nic():
    topo = build_topology(cluster(nodes=4))
    transfers = collective_transfers(topo, AR, [range(32)], S, Algorithm.RING)
    load = bytes_by_link(transfers)
    n = 32
    nic_up = [b for link, b in load.items()
              if topo.links[link].tier == Tier.NETWORK and str(topo.links[link].src).startswith("n")]
    # 8 rings, each leaving every node once by its own NIC: every NIC carries one ring's share.
    assert len(nic_up) == 4 * 8
    assert all(b == pytest.approx(2 * (n - 1) / n * S / 8) for b in nic_up)


def test_all_to_all_bytes():
    topo = build_topology(cluster())
    transfers = collective_transfers(topo, A2A, [range(8)], S)
    assert len(transfers) == 1
    # Each device sends 7/8 of S up its NVSwitch link; the link carries it scaled by
    # efficiency / all-to-all efficiency (transports.yaml: NCCL's alltoall is below its ring there).
    transports = load_transports()
    scale = transports.efficiency(Tier.NVLINK, 300 * GB) / 0.744
    for d in range(8):
        assert uplink_bytes(topo, transfers, d) == pytest.approx(7 / 8 * S * scale)
    # Across 4 nodes of 2 devices with one NIC each: a NIC carries the 6/8 of S its 2 devices send away.
    topo = build_topology(cluster(nodes=4, dpn=2, nics=1))
    load = bytes_by_link(collective_transfers(topo, A2A, [range(8)], S))
    assert load[topo.link_id("n0.nic0", "leaf0")] == pytest.approx(2 * 6 / 8 * S)


def test_fused_all_to_all_keeps_the_ring_efficiency():
    # DeepEP-style kernels (the flex dispatcher) send the same flows as NCCL's all-to-all, but
    # the NVSwitch link carries them unscaled: faster than NCCL's inside a node ...
    topo = build_topology(cluster())
    fused = collective_transfers(topo, CollectiveOp.ALL_TO_ALL_FUSED, [range(8)], S)
    nccl = collective_transfers(topo, A2A, [range(8)], S)
    for d in range(8):
        assert uplink_bytes(topo, fused, d) == pytest.approx(7 / 8 * S)
        assert uplink_bytes(topo, nccl, d) > uplink_bytes(topo, fused, d)
    net = MaxMinFair(topo.capacity_bytes_per_s)
    assert collective_time(topo, net, CollectiveOp.ALL_TO_ALL_FUSED, [range(8)], S) < collective_time(
        topo, net, A2A, [range(8)], S)
    # ... and the same on links that are not a device's NVSwitch port (a NIC; a mesh fabric)
    topo = build_topology(cluster(nodes=4, dpn=2, nics=1))
    nic = topo.link_id("n0.nic0", "leaf0")
    assert bytes_by_link(collective_transfers(topo, CollectiveOp.ALL_TO_ALL_FUSED, [range(8)], S))[nic] == \
        pytest.approx(bytes_by_link(collective_transfers(topo, A2A, [range(8)], S))[nic])
    topo = build_topology(cluster(intra="mesh"))
    assert bytes_by_link(collective_transfers(topo, CollectiveOp.ALL_TO_ALL_FUSED, [range(8)], S)) == \
        pytest.approx(bytes_by_link(collective_transfers(topo, A2A, [range(8)], S)))


def test_direct_and_broadcast_bytes():
    topo = build_topology(cluster())
    direct = collective_transfers(topo, AR, [range(8)], S, Algorithm.DIRECT)
    assert len(direct) == 2                               # reduce-scatter, then all-gather
    assert uplink_bytes(topo, direct, 0) == pytest.approx(2 * 7 / 8 * S)
    bc = collective_transfers(topo, BC, [[3, 0, 1, 2]], S, Algorithm.DIRECT)
    assert uplink_bytes(topo, bc, 3) == pytest.approx(3 * S)
    chain = collective_transfers(topo, BC, [[3, 0, 1, 2]], S, Algorithm.RING)
    assert sum(uplink_bytes(topo, chain, d) for d in (0, 1, 2, 3)) == pytest.approx(3 * S)
    assert uplink_bytes(topo, chain, 3) == pytest.approx(S)   # the root sends the buffer once


def test_send_recv_follows_the_route():
    topo = build_topology(cluster(nodes=2))
    (t,) = collective_transfers(topo, SR, [[1, 9]], S)
    assert dict(t.link_bytes) == {link: S for link in topo.route(1, 9)}
    net = MaxMinFair(topo.capacity_bytes_per_s)
    bottleneck = min(topo.capacity_bytes_per_s[link] for link in topo.route(1, 9))
    assert collective_time(topo, net, SR, [[1, 9]], S) == pytest.approx(t.latency_s + S / bottleneck)


def test_hierarchical_has_three_phases_and_moves_the_shard_between_nodes():
    topo = build_topology(cluster(nodes=4))
    transfers = collective_transfers(topo, AR, [range(32)], S, Algorithm.HIERARCHICAL)
    assert len(transfers) == 3
    m, n_nodes = 8, 4
    intra_rs, inter, intra_ag = (bytes_by_link([t]) for t in transfers)
    assert uplink_bytes(topo, transfers[:1], 0) == pytest.approx((m - 1) / m * S)
    nic_up = topo.link_id("n0.nic3", "leaf0")
    assert inter[nic_up] == pytest.approx(2 * (n_nodes - 1) / n_nodes * S / m)
    assert nic_up not in intra_rs and nic_up not in intra_ag
    assert len(collective_transfers(topo, RS, [range(32)], S, Algorithm.HIERARCHICAL)) == 2
    assert len(collective_transfers(topo, AG, [range(32)], S, Algorithm.HIERARCHICAL)) == 2


def test_tree_traffic_goes_up_and_down_every_edge():
    topo = build_topology(cluster(nodes=4))
    (t,) = collective_transfers(topo, AR, [range(32)], S, Algorithm.TREE)
    load = bytes_by_link([t])
    for link, b in load.items():
        reverse = topo.link_id(topo.links[link].dst, topo.links[link].src)
        assert load[reverse] == pytest.approx(b)
    # A NIC serves one channel's two trees, each carrying S/16 over at most 3 tree edges.
    nic_up = [b for link, b in load.items() if topo.links[link].tier == Tier.NETWORK
              and str(topo.links[link].src).startswith("n")]
    assert len(nic_up) == 4 * 8
    assert max(nic_up) <= 2 * 3 * S / 16 * (1 + 1e-12)


def test_mirror_groups_contend_for_shared_nics_and_not_for_own_rails():
    groups = [list(range(j, 32, 8)) for j in range(8)]   # 8 dp groups of a tp=8 job on 4 nodes
    shared = build_topology(cluster(nodes=4, nics=1))
    rails = build_topology(cluster(nodes=4, nics=8))
    for topo, expected_ratio in ((shared, 8.0), (rails, 1.0)):
        net = MaxMinFair(topo.capacity_bytes_per_s)
        one = collective_time(topo, net, AR, groups[:1], S, Algorithm.RING)
        eight = collective_time(topo, net, AR, groups, S, Algorithm.RING)
        latency = collective_transfers(topo, AR, groups, S, Algorithm.RING)[0].latency_s
        assert (eight - latency) / (one - latency) == pytest.approx(expected_ratio, rel=1e-9)


def test_separate_collectives_share_links_max_min_fairly():
    topo = build_topology(cluster(nodes=4, nics=1))
    a = collective_transfers(topo, AR, [list(range(0, 32, 8))], S)
    b = collective_transfers(topo, AR, [list(range(1, 32, 8))], S)
    net = MaxMinFair(topo.capacity_bytes_per_s)
    alone = net.rates([a[0]])[0]
    together = net.rates([a[0], b[0]])
    assert together == pytest.approx([alone / 2, alone / 2])


def test_auto_choices():
    node = build_topology(cluster())
    assert choose_algorithm(node, AR, [range(8)], S) == Algorithm.RING
    assert choose_algorithm(node, A2A, [range(8)], S) == Algorithm.DIRECT
    assert choose_algorithm(node, SR, [[0, 1]], S) == Algorithm.DIRECT
    dgx = build_topology(cluster(nodes=16))
    assert choose_algorithm(dgx, AR, [range(128)], 8 * GiB) == Algorithm.RING
    mesh = build_topology(cluster(intra="mesh", intra_bw="448 GB/s"))
    assert choose_algorithm(mesh, AR, [range(8)], S) == Algorithm.DIRECT
    # AUTO returns the chosen algorithm's phases.
    assert collective_transfers(dgx, AR, [range(128)], 8 * GiB) == \
        collective_transfers(dgx, AR, [range(128)], 8 * GiB, Algorithm.RING)


def test_auto_prefers_hierarchical_when_nvlink_is_fast_and_nics_are_few():
    topo = build_topology(cluster(nodes=4, nics=1, intra_bw="900 GB/s"))
    assert choose_algorithm(topo, AR, [range(32)], S) == Algorithm.HIERARCHICAL


def test_transfers_are_cached_and_scale_linearly():
    topo = build_topology(cluster(nodes=2))
    first = collective_transfers(topo, AR, [range(16)], S)
    assert collective_transfers(topo, AR, [tuple(range(16))], S) is first
    double = collective_transfers(topo, AR, [range(16)], 2 * S)
    for t1, t2 in zip(first, double):
        assert [l for l, _ in t1.link_bytes] == [l for l, _ in t2.link_bytes]
        assert [2 * b for _, b in t1.link_bytes] == pytest.approx([b for _, b in t2.link_bytes])
        assert t1.latency_s == t2.latency_s


def test_trivial_groups_move_nothing():
    topo = build_topology(cluster())
    assert collective_transfers(topo, AR, [[3]], S) == ()
    assert collective_time(topo, MaxMinFair(topo.capacity_bytes_per_s), AR, [[3], [4]], S) == 0.0


@pytest.mark.parametrize("op, groups, algorithm, match", [
    (AG, [range(8)], Algorithm.TREE, "tree does not implement"),
    (SR, [[0, 1, 2]], Algorithm.AUTO, "pairs"),
    (AR, [[0, 0, 1]], Algorithm.RING, "distinct"),
    (AR, [[0, 99]], Algorithm.RING, "distinct"),
])
def test_bad_requests_are_errors(op, groups, algorithm, match):
    topo = build_topology(cluster())
    with pytest.raises(ValueError, match=match):
        collective_transfers(topo, op, groups, S, algorithm)


def test_hierarchical_needs_symmetric_groups():
    topo = build_topology(cluster(nodes=2))
    with pytest.raises(ValueError, match="same number"):
        collective_transfers(topo, AR, [[0, 1, 8]], S, Algorithm.HIERARCHICAL)
    assert choose_algorithm(topo, AR, [[0, 1, 8]], S) == Algorithm.RING


def test_collective_table_rows():
    rows = collective_table(cluster(), AR, "node", [1 * MiB, S])
    assert [r["size_bytes"] for r in rows] == [1 * MiB, S]
    for r in rows:
        assert r["algbw_bytes_per_s"] == pytest.approx(r["size_bytes"] / r["time_s"])
        assert r["busbw_bytes_per_s"] == pytest.approx(r["algbw_bytes_per_s"] * 14 / 8)
    assert rows[0]["busbw_bytes_per_s"] < rows[1]["busbw_bytes_per_s"]   # latency bites small sizes
    sr = collective_table(cluster(nodes=2), SR, "all", [S])[0]
    assert sr["busbw_bytes_per_s"] == pytest.approx(sr["algbw_bytes_per_s"])
    with pytest.raises(ValueError, match="group"):
        collective_table(cluster(), AR, "rack", [S])
