"""Topology builders: structure, capacities, routes (valid, shortest, deterministic)."""

import subprocess
import sys
from collections import Counter
from pathlib import Path

import networkx as nx
import pytest

from hwsim.config.schema import ClusterConfig
from hwsim.errors import ConfigError
from hwsim.hardware.topology import LEAF_DOWNLINKS, Tier, build_topology, load_transports
from hwsim.units import GB, US

ACCELERATOR = dict(name="test-gpu", peak=dict(fp32="10 TFLOPS", fp16="100 TFLOPS"), hbm="80 GB",
                   hbm_bandwidth="2 TB/s", host_bandwidth="32 GB/s")


def cluster(nodes=1, dpn=8, intra="switch", intra_bw="300 GB/s", inter=None, **inter_kw):
    data = dict(accelerator=ACCELERATOR, nodes=nodes, devices_per_node=dpn,
                intra_node=dict(kind=intra, bandwidth=intra_bw, latency="1 us"))
    if inter is not None:
        data["inter_node"] = dict(kind=inter, nic_bandwidth="200 Gb/s", latency="5 us", **inter_kw)
    return ClusterConfig.model_validate(data)


def check_route(topo, src, dst):
    route = topo.route(src, dst)
    links = [topo.links[i] for i in route]
    assert links[0].src == src and links[-1].dst == dst
    for a, b in zip(links, links[1:]):
        assert a.dst == b.src
    return route


SMALL = {
    "switch": cluster(),
    "ring": cluster(intra="ring"),
    "mesh": cluster(intra="mesh"),
    "pcie": cluster(intra="pcie"),
    "fat-tree": cluster(nodes=12, inter="fat-tree", nics_per_node=8),
    "fat-tree-1nic": cluster(nodes=4, inter="fat-tree", nics_per_node=1),
    "rail": cluster(nodes=4, inter="rail-optimized", nics_per_node=8),
    "torus-direct": cluster(nodes=12, dpn=1, inter="torus", nics_per_node=1, torus_dims=[3, 4]),
    "torus-planes": cluster(nodes=4, dpn=4, inter="torus", nics_per_node=4, torus_dims=[2, 2]),
}


@pytest.mark.parametrize("name", list(SMALL))
def test_every_link_has_its_reverse_with_the_same_bandwidth(name):
    topo = build_topology(SMALL[name])
    for link in topo.links:
        back = topo.links[topo.link_id(link.dst, link.src)]
        assert back.bandwidth_bytes_per_s == link.bandwidth_bytes_per_s and back.tier == link.tier
    assert topo.graph.number_of_edges() == len(topo.links)
    for u, v, data in topo.graph.edges(data=True):
        assert (topo.links[data["link"]].src, topo.links[data["link"]].dst) == (u, v)


@pytest.mark.parametrize("name", list(SMALL))
def test_routes_are_valid_shortest_paths(name):
    topo = build_topology(SMALL[name])
    for src in range(topo.n_devices):
        for dst in range(0, topo.n_devices, 3):
            if src == dst:
                assert topo.route(src, dst) == ()
                continue
            route = check_route(topo, src, dst)
            same_plane = topo.nic_of(src) == topo.nic_of(dst) or topo.node_of(src) == topo.node_of(dst)
            if name != "torus-planes" or same_plane:
                assert len(route) == nx.shortest_path_length(topo.graph, src, dst)


def test_device_ids_are_global_ranks():
    topo = build_topology(cluster(nodes=3, dpn=4, inter="fat-tree", nics_per_node=2))
    assert topo.n_devices == 12 and topo.n_nodes == 3
    assert [topo.node_of(d) for d in (0, 3, 4, 11)] == [0, 0, 1, 2]
    assert [topo.local_of(d) for d in (0, 3, 4, 11)] == [0, 3, 0, 3]
    assert [topo.nic_of(d) for d in range(4)] == [0, 1, 0, 1]


def test_switch_links_and_capacity():
    topo = build_topology(cluster(intra_bw="300 GB/s"))
    eff = load_transports().efficiency(Tier.NVLINK, 300 * GB)
    route = topo.route(2, 5)
    assert [(topo.links[i].src, topo.links[i].dst) for i in route] == [(2, "n0.nvswitch"), ("n0.nvswitch", 5)]
    for i in route:
        assert topo.links[i].bandwidth_bytes_per_s == 300 * GB
        assert topo.capacity_bytes_per_s[i] == pytest.approx(300 * GB * eff)
    assert sum(topo.links[i].latency_s for i in route) == pytest.approx(1 * US)


def test_nvlink_efficiency_follows_the_generation():
    t = load_transports()
    assert t.efficiency(Tier.NVLINK, 300 * GB) == pytest.approx(230 / 300, abs=1e-3)
    assert t.efficiency(Tier.NVLINK, 450 * GB) == pytest.approx(370 / 450, abs=1e-3)
    assert t.efficiency(Tier.NVLINK, 900 * GB) == t.efficiency(Tier.NVLINK, 450 * GB)


def test_ring_splits_bandwidth_and_takes_the_short_way():
    topo = build_topology(cluster(intra="ring", intra_bw="300 GB/s"))
    assert len(topo.links) == 16
    assert all(link.bandwidth_bytes_per_s == 150 * GB for link in topo.links)
    for a, b in [(0, 1), (0, 3), (0, 5), (6, 1), (2, 6)]:
        d = (b - a) % 8
        assert len(topo.route(a, b)) == min(d, 8 - d)


def test_mesh_is_all_pairs_with_split_bandwidth():
    topo = build_topology(cluster(intra="mesh", intra_bw="448 GB/s"))
    assert len(topo.links) == 8 * 7
    assert all(link.bandwidth_bytes_per_s == pytest.approx(64 * GB) for link in topo.links)
    assert len(topo.route(1, 6)) == 1


def test_pcie_tree_goes_through_the_root_between_switches():
    topo = build_topology(cluster(intra="pcie", intra_bw="32 GB/s"))
    assert len(topo.route(0, 1)) == 2                     # same PCIe switch
    names = [topo.links[i].dst for i in topo.route(0, 7)]
    assert names == ["n0.pcie0", "n0.pcie-root", "n0.pcie3", 7]
    assert all(link.tier == Tier.PCIE for link in topo.links)


def test_fat_tree_structure_oversubscription_and_latency():
    topo = build_topology(cluster(nodes=8, inter="fat-tree", nics_per_node=8, oversubscription=2.0))
    n_leaves = 8 * 8 // LEAF_DOWNLINKS
    up = [l for l in topo.links if str(l.src).startswith("leaf") and str(l.dst).startswith("spine")]
    assert len(up) == n_leaves * LEAF_DOWNLINKS
    assert all(l.bandwidth_bytes_per_s == pytest.approx(25 * GB / 2) for l in up)
    same_leaf, other_leaf = topo.route(0, 8), topo.route(0, 63)   # nodes 0,1 on leaf0; node 7 on leaf1
    assert len(same_leaf) == 4 and len(other_leaf) == 6
    assert sum(topo.links[i].latency_s for i in other_leaf) == pytest.approx(5 * US)
    # D-mod-k: the spine is the destination NIC's leaf port.
    assert topo.links[other_leaf[2]].dst == f"spine{(7 * 8 + 7) % LEAF_DOWNLINKS}"


def test_fat_tree_shift_permutation_has_no_spine_collision():
    topo = build_topology(cluster(nodes=16, inter="fat-tree", nics_per_node=8))
    load = Counter()
    for d in range(topo.n_devices):
        dst = (d + 8) % topo.n_devices          # every device to the same local rank of the next node
        for i in topo.route(d, dst):
            if "spine" in str(topo.links[i].src) or "spine" in str(topo.links[i].dst):
                load[i] += 1
    assert load and max(load.values()) == 1


def test_devices_share_nics_when_there_are_fewer():
    topo = build_topology(cluster(nodes=2, inter="fat-tree", nics_per_node=2))
    first_hops = {topo.links[topo.route(d, 8 + d)[0]].dst for d in range(8)}
    assert first_hops == {"n0.nic0", "n0.nic1"}


def test_nic_hop_never_caps_the_nic():
    topo = build_topology(cluster(nodes=2, inter="fat-tree", nics_per_node=8))
    nic_hop = [c for l, c in zip(topo.links, topo.capacity_bytes_per_s) if l.tier == Tier.NIC]
    wire = [c for l, c in zip(topo.links, topo.capacity_bytes_per_s) if l.tier == Tier.NETWORK]
    assert min(nic_hop) >= max(wire)


def test_rail_optimized_keeps_traffic_on_the_destination_rail():
    topo = build_topology(SMALL["rail"])
    route = [topo.links[i] for i in topo.route(1, 8 * 3 + 6)]   # local 1 -> local 6 of node 3
    assert [l.dst for l in route] == ["n0.nvswitch", 6, "n0.nic6", "rail6", "n3.nic6", 30]


def test_torus_links_and_dimension_order_hops():
    topo = build_topology(cluster(nodes=8, dpn=1, inter="torus", nics_per_node=1, torus_dims=[2, 4]))
    # size-2 dimension: 4 physical links; size-4 ring dimension: 8; two directions each.
    assert len(topo.links) == 2 * (4 + 8)
    assert all(l.tier == Tier.ICI and l.latency_s == pytest.approx(5 * US) for l in topo.links)
    for a in range(8):
        for b in range(8):
            (a0, a1), (b0, b1) = divmod(a, 4), divmod(b, 4)
            expected = abs(a0 - b0) + min((b1 - a1) % 4, (a1 - b1) % 4)
            assert len(topo.route(a, b)) == expected


def test_torus_dims_must_match_nodes():
    with pytest.raises(ConfigError, match="torus_dims"):
        build_topology(cluster(nodes=6, dpn=1, inter="torus", nics_per_node=1, torus_dims=[2, 2]))


def test_multi_node_needs_inter_node():
    with pytest.raises(ConfigError, match="inter_node"):
        build_topology(cluster(nodes=2))


def test_step_latency_adds_the_tier_overhead():
    t = load_transports()
    topo = build_topology(cluster(nodes=2, inter="fat-tree", nics_per_node=8))
    assert topo.step_latency_s(0, 1) == pytest.approx(1 * US + t.step_overhead_s(Tier.NVLINK))
    assert topo.step_latency_s(0, 8) == pytest.approx(5 * US + t.step_overhead_s(Tier.NETWORK))


def test_every_calibration_number_has_a_source():
    for tier, transport in load_transports().tiers.items():
        assert transport.step_overhead_source.strip()
        for point in transport.points:
            assert point.source.strip() and point.check.strip(), tier
            assert 0 < point.efficiency <= 1


def test_routes_do_not_depend_on_the_hash_seed():
    code = (
        "from hwsim.config.schema import ClusterConfig\n"
        "from hwsim.hardware.topology import build_topology\n"
        f"c = ClusterConfig.model_validate({SMALL['fat-tree'].model_dump(mode='json')!r})\n"
        "t = build_topology(c)\n"
        "print([t.route(a, b) for a in range(0, 96, 5) for b in range(0, 96, 7)],\n"
        "      [t.links[i].dst for i in t.route(3, 90)])\n")
    root = str(Path(__file__).resolve().parents[2])
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              cwd=root, env={"PYTHONHASHSEED": seed, "PYTHONPATH": root}).stdout
               for seed in ("1", "2")}
    assert len(outputs) == 1
    here = build_topology(SMALL["fat-tree"])
    assert outputs.pop().rstrip().endswith(str([here.links[i].dst for i in here.route(3, 90)]))


def test_runs_of_the_same_cluster_share_one_topology_and_get_the_same_results():
    # the shared topology carries its route and collective caches from run to run; a run must not
    # depend on what ran before it in the process
    from hwsim import hardware
    from hwsim.config.loader import scenario_from_mapping
    from hwsim.hardware.topology import shared_topology
    from hwsim.simulate import run_step
    from tests.conftest import SMALL

    sc = scenario_from_mapping(SMALL)
    other = scenario_from_mapping(SMALL, ["parallel.sequence_parallel=true"])
    assert shared_topology(sc.cluster) is shared_topology(other.cluster)
    faster = scenario_from_mapping(SMALL, ["cluster.intra_node.bandwidth=900 GB/s"])
    assert shared_topology(faster.cluster) is not shared_topology(sc.cluster)

    hardware.topology._shared.clear()
    alone = run_step(other).summary["step_time_s"]
    hardware.topology._shared.clear()
    run_step(sc)
    assert run_step(other).summary["step_time_s"] == alone
