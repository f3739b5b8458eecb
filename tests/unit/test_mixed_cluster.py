"""Mixed accelerators in one job (cluster.groups, hwsim.hardware.groups): pipeline stages on
H100 and A100, each timed on its own device, folding exact, impossible layouts rejected."""

from pathlib import Path

import pytest

from hwsim.config.loader import load_scenario, scenario_from_mapping
from hwsim.engine.task import TaskKind
from hwsim.errors import ConfigError, HwsimError
from hwsim.simulate import run_step

REPO = Path(__file__).resolve().parents[2]
MIXED = REPO / "scenarios" / "mixed-h100-a100-pipeline.yaml"


def _small(groups, tp=2, pp=2, dp=2, **extra):
    """Llama-3-8B cut to 4 layers on 2 nodes of 4 devices: a step in well under a second."""
    return {"name": "mixed-small",
            "cluster": {"groups": groups, "devices_per_node": 4,
                        "intra_node": {"kind": "switch", "bandwidth": "300 GB/s"},
                        "inter_node": {"kind": "fat-tree", "nics_per_node": 4, "nic_bandwidth": "200 Gb/s"}},
            "model": {"preset": "llama3-8b", "layers": 4},
            "parallel": {"tp": tp, "pp": pp, "dp": dp, **extra},
            "training": {"global_batch": 8, "micro_batch": 1}}


H = "h100-sxm"
A = "a100-sxm-80gb"


def test_every_task_runs_once_on_the_mixed_scenario():
    r = run_step(load_scenario(MIXED))
    assert all(r.trace.end_s[i] >= r.trace.start_s[i] >= 0 for i in range(len(r.compiled.graph.tasks)))
    assert r.summary["fits_in_memory"]
    mixed = r.summary["mixed"]
    assert mixed["slow_accelerator"] == A
    assert "stages 2-3 on a100-sxm-80gb hold the critical path" in mixed["words"]
    assert "on h100-sxm (stages 0-1)" in mixed["words"]


def test_mixed_pipeline_is_between_all_h100_and_all_a100():
    def step(groups):
        return run_step(load_scenario(MIXED, [f"cluster.groups={groups}"])).summary["step_time_s"]
    mixed = step(f"[{{accelerator: {H}, nodes: 2}}, {{accelerator: {A}, nodes: 2}}]")
    h100 = step(f"[{{accelerator: {H}, nodes: 4}}]")
    a100 = step(f"[{{accelerator: {A}, nodes: 4}}]")
    assert h100 < mixed < a100


def test_one_group_is_the_plain_cluster_bit_for_bit():
    grouped = run_step(load_scenario(MIXED, [f"cluster.groups=[{{accelerator: {H}, nodes: 4}}]"])).summary
    data = load_scenario(MIXED).model_dump(mode="json")
    data["cluster"]["groups"] = None
    data["cluster"]["accelerator"] = H
    plain = run_step(scenario_from_mapping(data)).summary
    assert grouped["step_time_s"] == plain["step_time_s"]
    assert grouped["peak_memory_bytes"] == plain["peak_memory_bytes"]


def test_each_stage_is_timed_on_its_own_accelerator():
    r = run_step(scenario_from_mapping(_small([{"accelerator": H, "nodes": 1}, {"accelerator": A, "nodes": 1}])),
                 fold=True, granularity="op")
    by_stage = {0: 0.0, 1: 0.0}
    for t in r.compiled.graph.tasks:
        if t.kind == TaskKind.COMPUTE and t.category == "fwd" and t.layer >= 0:
            by_stage[r.compiled.stage_of[t.devices[0]]] += t.duration_s
    assert by_stage[1] > 1.5 * by_stage[0]   # the same layers, A100 much slower than H100


@pytest.mark.parametrize("groups, extra", [
    ([{"accelerator": H, "nodes": 1}, {"accelerator": A, "nodes": 1}], {}),
    ([{"accelerator": A, "nodes": 1}, {"accelerator": H, "nodes": 1}], {"schedule": "interleaved",
                                                                          "virtual_stages": 2}),
    ([{"accelerator": H, "nodes": 1}, {"accelerator": A, "nodes": 1}], {"zero_stage": 1}),
])
def test_folded_equals_unfolded_on_a_mixed_case(groups, extra):
    sc = scenario_from_mapping(_small(groups, **extra))
    folded = run_step(sc, fold=True, granularity="op").summary
    full = run_step(sc, fold=False, granularity="op").summary
    assert folded["step_time_s"] == pytest.approx(full["step_time_s"], rel=1e-9)
    assert folded["peak_memory_bytes"] == pytest.approx(full["peak_memory_bytes"], rel=1e-9)


def test_each_device_has_its_own_memory_capacity():
    # ~70 GB per device: fits an H100's 80 GB, not an a100-sxm-40gb's 40 GB
    def run(second):
        data = _small([{"accelerator": H, "nodes": 1}, {"accelerator": second, "nodes": 1}], tp=1, pp=2, dp=4)
        data["model"] = {"preset": "llama3-8b", "layers": 16}
        data["training"].update(micro_batch=2, global_batch=16)
        return run_step(scenario_from_mapping(data))
    mixed, plain = run("a100-sxm-40gb"), run(H)
    assert plain.summary["fits_in_memory"] and not mixed.summary["fits_in_memory"]
    stage_1 = {d for d, s in mixed.compiled.stage_of.items() if s == 1}
    assert mixed.summary["oom_findings"] and {f["device"] for f in mixed.summary["oom_findings"]} == stage_1
    assert all(f["capacity_bytes"] == pytest.approx(40e9) for f in mixed.summary["oom_findings"])
    assert mixed.summary["memory_capacity_bytes"] == pytest.approx(40e9)


def test_a_stage_across_two_accelerators_is_rejected_naming_the_field():
    sc = scenario_from_mapping(_small([{"accelerator": H, "nodes": 1}, {"accelerator": A, "nodes": 1}],
                                      tp=2, pp=1, dp=4))
    with pytest.raises(ConfigError, match=r"cluster\.groups: pipeline stage 0 has devices on h100-sxm"):
        run_step(sc)


@pytest.mark.parametrize("cluster, field", [
    ({"nodes": 3}, "groups hold 2 nodes but cluster.nodes is 3"),
    ({"accelerator": "b200"}, "accelerator differs from the first group"),
    ({"groups": []}, r"cluster\.groups: .*at least 1"),
])
def test_bad_groups_are_rejected(cluster, field):
    data = _small([{"accelerator": H, "nodes": 1}, {"accelerator": A, "nodes": 1}])
    data["cluster"].update(cluster)
    with pytest.raises(HwsimError, match=field):
        scenario_from_mapping(data)


def test_fp8_needs_fp8_on_every_stage():
    data = _small([{"accelerator": H, "nodes": 1}, {"accelerator": A, "nodes": 1}])
    data["training"]["precision"] = "fp8"
    with pytest.raises(ConfigError, match=r"cluster\.groups\.1\.accelerator: training.precision fp8"):
        run_step(scenario_from_mapping(data))


def test_the_resolved_scenario_round_trips():
    sc = load_scenario(MIXED)
    again = scenario_from_mapping(sc.model_dump(mode="json"))
    assert again == sc
    assert sc.cluster.accelerator.name == H and sc.cluster.nodes == 4


def test_hwsim_run_prints_the_slow_part():
    import os
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-m", "hwsim.cli", "run", str(MIXED)], capture_output=True, text=True,
                         timeout=300, cwd=REPO, env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "stages 2-3 on a100-sxm-80gb hold the critical path" in res.stdout
    assert "compute-bound kernels" in res.stdout and "MFU on a100-sxm-80gb" in res.stdout
