"""A fat-tree shared with other jobs (cluster.shared, hwsim.hardware.shared): placement, the
neighbours' load on leaf-spine links, and what it does to a data-parallel step."""

from pathlib import Path

import numpy as np
import pytest

from hwsim.config.loader import load_scenario, scenario_from_mapping
from hwsim.errors import ConfigError
from hwsim.hardware.shared import fabric_slots, fair_share
from hwsim.hardware.topology import build_topology
from hwsim.simulate import run_step

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / "scenarios" / "shared-fabric-neighbour.yaml"


def _step(*sets: str) -> float:
    return run_step(load_scenario(SHARED, list(sets))).summary["step_time_s"]


def test_fair_share_is_capacity_minus_load_until_the_neighbours_ask_for_more():
    assert fair_share(100.0, {}) == 100.0
    assert fair_share(100.0, {20.0: 2}) == pytest.approx(60.0)           # room left: capacity - load
    assert fair_share(100.0, {80.0: 1}) == pytest.approx(50.0)           # an equal share, no less
    assert fair_share(100.0, {10.0: 1, 200.0: 2}) == pytest.approx(30.0)  # (100 - 10) / 3


def test_placements_put_the_job_on_the_slots_they_say():
    sc = load_scenario(SHARED)   # 4 nodes of 8 NICs (4 nodes per leaf) beside a 12-node job: 16 slots, 4 leaves
    packed = load_scenario(SHARED, ["cluster.shared.placement=packed"])
    assert tuple(fabric_slots(packed.cluster)[0]) == (0, 1, 2, 3)
    assert fabric_slots(sc.cluster) == ((0, 4, 8, 12), 16)                # one node per leaf
    rnd = load_scenario(SHARED, ["cluster.shared.placement=random", "cluster.shared.seed=3"]).cluster
    slots, total = fabric_slots(rnd)
    assert total == 16 and len(set(slots)) == 4 and list(slots) == sorted(slots)
    assert fabric_slots(rnd) == fabric_slots(rnd)                         # seeded


def test_the_neighbours_load_only_the_leaf_spine_links():
    topo = build_topology(load_scenario(SHARED).cluster)
    plain = build_topology(load_scenario(SHARED, ["cluster.shared.jobs=[]", "cluster.shared.fabric_nodes=16"]).cluster)
    assert len(topo.links) == len(plain.links)
    changed = np.flatnonzero(topo.capacity_bytes_per_s < plain.capacity_bytes_per_s)
    assert len(changed) > 0
    for i in changed:
        link = topo.links[i]
        assert {str(link.src)[:4], str(link.dst)[:4]} <= {"leaf", "spin"}
    assert not (topo.capacity_bytes_per_s > plain.capacity_bytes_per_s).any()
    assert 0 < topo.background.taken_frac < 1


def test_scattered_is_slower_than_packed_beside_an_all_reduce_neighbour():
    packed = _step("cluster.shared.placement=packed")
    alone_scattered = _step("cluster.shared.jobs=[]", "cluster.shared.fabric_nodes=16")
    scattered = _step()
    # packed on one leaf the dp ring never meets the neighbour; scattered it crosses the 2:1
    # oversubscribed spines (slower) and shares them with the neighbour's rings (slower still)
    assert packed < alone_scattered < scattered
    assert packed == _step("cluster.shared=null")
    assert scattered > 1.1 * packed


@pytest.mark.parametrize("pattern", ["all-reduce", "all-to-all", "uniform"])
def test_more_neighbour_load_is_never_faster(pattern):
    times = [_step(f"cluster.shared.jobs=[{{nodes: 12, pattern: {pattern}, load: {f}}}]") for f in (0.1, 0.5, 1.0)]
    assert times[0] <= times[1] <= times[2]
    rate = _step(f"cluster.shared.jobs=[{{nodes: 12, pattern: {pattern}, rate: 200 Gb/s}}]")
    assert rate >= times[0]


def test_the_report_and_summary_say_where_the_job_landed():
    r = run_step(load_scenario(SHARED))
    assert all(r.trace.end_s[i] >= r.trace.start_s[i] >= 0 for i in range(len(r.compiled.graph.tasks)))
    for fold in (True, False):   # folding stays exact on the shared fabric
        assert run_step(load_scenario(SHARED), fold=fold).summary["step_time_s"] == pytest.approx(
            r.summary["step_time_s"], rel=1e-9)
    s = r.summary["shared_fabric"]
    assert s["placement"] == "scattered" and s["slots"] == [0, 4, 8, 12] and len(s["leaves"]) == 4
    assert "placement scattered" in s["words"]


def _mapping(**shared):
    return {"cluster": {"accelerator": "a100-sxm-80gb", "nodes": 2, "devices_per_node": 8,
                        "intra_node": {"bandwidth": "300 GB/s"},
                        "inter_node": {"kind": "fat-tree", "nic_bandwidth": "200 Gb/s"}, "shared": shared},
            "model": "gpt2-xl", "training": {"global_batch": 16}}


@pytest.mark.parametrize("shared, field", [
    ({"jobs": [{"nodes": 2}]}, "load"),
    ({"jobs": [{"nodes": 2, "load": 0.5, "rate": "10 Gb/s"}]}, "load"),
    ({"jobs": [{"nodes": 2, "load": 1.5}]}, "load"),
    ({"placement": "best"}, "placement"),
    ({"fabric_nodes": 3, "jobs": [{"nodes": 2, "load": 0.5}]}, "fabric_nodes"),
])
def test_bad_shared_blocks_are_rejected_naming_the_field(shared, field):
    with pytest.raises(ConfigError, match=field):
        scenario_from_mapping(_mapping(**shared))


def test_shared_needs_a_fat_tree():
    data = _mapping(jobs=[{"nodes": 2, "load": 0.5}])
    data["cluster"]["inter_node"]["kind"] = "rail-optimized"
    with pytest.raises(ConfigError, match="cluster.*shared needs inter_node.kind: fat-tree"):
        scenario_from_mapping(data)


def test_without_neighbours_a_packed_shared_fabric_is_the_plain_cluster_bit_for_bit():
    plain = load_scenario(REPO / "scenarios" / "gpt3-175b-1024xa100.yaml")   # 128 nodes: 32 leaves
    shared = load_scenario(REPO / "scenarios" / "gpt3-175b-1024xa100.yaml", ["cluster.shared={placement: packed}"])
    a, b = build_topology(plain.cluster), build_topology(shared.cluster)
    assert a.links == b.links and (a.capacity_bytes_per_s == b.capacity_bytes_per_s).all()
    for src, dst in [(0, 8), (0, 1023), (517, 64), (1000, 3)]:
        assert a.route(src, dst) == b.route(src, dst)
    small = REPO / "scenarios" / "llama3-8b-16xh100-pp.yaml"
    assert (run_step(load_scenario(small)).summary["step_time_s"]
            == run_step(load_scenario(small, ["cluster.shared={placement: packed}"])).summary["step_time_s"])


def test_hwsim_run_says_where_the_job_landed():
    import os
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-m", "hwsim.cli", "run", str(SHARED)], capture_output=True, text=True,
                         timeout=300, cwd=REPO, env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "shared fabric: placement scattered puts this job's 4 nodes on 4 of the fabric's 4 leaves" in res.stdout
    assert "cluster.shared.placement=packed" in res.stdout   # the simulated what-if
