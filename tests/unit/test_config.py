import pytest
import yaml

from hwsim.config.loader import apply_overrides, load_scenario, scenario_from_mapping
from hwsim.config.schema import Recompute
from hwsim.errors import ConfigError, PlanError
from hwsim.workload.plan import resolve_plan


def test_small_scenario_loads(small_scenario_dict):
    sc = scenario_from_mapping(small_scenario_dict)
    assert sc.cluster.n_devices == 16
    assert sc.cluster.accelerator.hbm == 80e9
    assert sc.cluster.inter_node.nic_bandwidth == 50e9          # 400 Gb/s in bytes/s
    assert sc.model.kv_heads is None and sc.parallel.recompute == Recompute.NONE


def test_unknown_key_names_path_and_close_match(small_scenario_dict):
    small_scenario_dict["cluster"]["intra_node"]["bandwith"] = small_scenario_dict["cluster"]["intra_node"].pop("bandwidth")
    with pytest.raises(ConfigError) as exc:
        scenario_from_mapping(small_scenario_dict)
    msg = str(exc.value)
    assert "cluster.intra_node.bandwith" in msg and "did you mean 'bandwidth'" in msg


def test_bad_unit_suggests_fix(small_scenario_dict):
    small_scenario_dict["cluster"]["accelerator"]["hbm"] = "80 Gib"
    with pytest.raises(ConfigError) as exc:
        scenario_from_mapping(small_scenario_dict)
    assert "cluster.accelerator.hbm" in str(exc.value) and "80 GiB" in str(exc.value)


def test_bad_enum_lists_choices(small_scenario_dict):
    small_scenario_dict["parallel"]["schedule"] = "1f2b"
    with pytest.raises(ConfigError) as exc:
        scenario_from_mapping(small_scenario_dict)
    assert "parallel.schedule" in str(exc.value) and "interleaved" in str(exc.value)


def test_missing_field(small_scenario_dict):
    del small_scenario_dict["model"]["hidden"]
    with pytest.raises(ConfigError, match="model.hidden: required"):
        scenario_from_mapping(small_scenario_dict)


def test_multi_node_needs_inter_node(small_scenario_dict):
    del small_scenario_dict["cluster"]["inter_node"]
    with pytest.raises(ConfigError, match="inter_node is required"):
        scenario_from_mapping(small_scenario_dict)


def test_overrides_parse_values_with_yaml(small_scenario_dict):
    sc = scenario_from_mapping(small_scenario_dict, ["parallel.tp=4", "parallel.dp=2",
                                                     "cluster.inter_node.nic_bandwidth=200 Gb/s"])
    assert sc.parallel.tp == 4 and sc.cluster.inter_node.nic_bandwidth == 25e9


def test_override_needs_equals():
    with pytest.raises(ConfigError, match="dotted path"):
        apply_overrides({}, ["parallel.tp"])


def test_unknown_preset_suggests(small_scenario_dict):
    small_scenario_dict["cluster"]["accelerator"] = "h100-sxn"
    with pytest.raises(ConfigError) as exc:
        scenario_from_mapping(small_scenario_dict)
    assert "'h100-sxm'" in str(exc.value) and "cluster.accelerator" in str(exc.value)


def test_preset_with_override(small_scenario_dict):
    small_scenario_dict["cluster"]["accelerator"] = {"preset": "h100-sxm", "hbm": "96 GiB",
                                                     "hbm_bandwidth": "2.4 TB/s"}
    sc = scenario_from_mapping(small_scenario_dict)
    acc = sc.cluster.accelerator
    assert acc.hbm == 96 * 2**30 and acc.hbm_bandwidth == 2.4e12
    assert acc.peak.bf16 > 9e14                                   # the rest from the preset
    assert "hbm" not in acc.sources                               # overridden: no longer the datasheet's


def test_broken_yaml_is_a_config_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("cluster:\n  nodes: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_scenario(p)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_scenario(tmp_path / "nope.yaml")


def test_safe_load_refuses_python_tags(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError):
        load_scenario(p)


@pytest.mark.parametrize("change, field", [
    ({"parallel": {"tp": 3, "dp": None}}, "parallel.tp"),
    ({"parallel": {"tp": 2, "pp": 2, "dp": 3}}, "parallel.dp"),
    ({"training": {"global_batch": 30}}, "training.global_batch"),
    ({"parallel": {"pp": 16, "dp": 1, "tp": 1}}, "parallel.pp"),
    ({"parallel": {"ep": 2}}, "parallel.ep"),
    ({"parallel": {"schedule": "interleaved", "virtual_stages": 2}, "training": {"global_batch": 24, "micro_batch": 2}},
     "parallel.schedule"),
])
def test_impossible_plans(small_scenario_dict, change, field):
    for section, values in change.items():
        for k, v in values.items():
            if v is None:
                small_scenario_dict[section].pop(k, None)
            else:
                small_scenario_dict[section][k] = v
    if field == "parallel.pp":
        small_scenario_dict["cluster"]["nodes"] = 2
    sc = scenario_from_mapping(small_scenario_dict)
    with pytest.raises(PlanError) as exc:
        resolve_plan(sc)
    assert field in str(exc.value)


def test_rank_mapping_megatron_order(small_scenario_dict):
    plan = resolve_plan(scenario_from_mapping(small_scenario_dict))   # tp2 pp2 dp4 on 16
    assert plan.group("tp", 0) == (0, 1)
    assert plan.group("dp", 0) == (0, 2, 4, 6)
    assert plan.group("pp", 0) == (0, 8)
    assert len(plan.groups("dp", stage=1)) == 2 and all(plan.coords(r)["pp"] == 1 for g in plan.groups("dp", 1) for r in g)
    ranks = sorted(plan.rank(tp=t, dp=d, pp=p) for t in range(2) for d in range(4) for p in range(2))
    assert ranks == list(range(16))


def test_yaml_files_in_scenarios_load():
    from pathlib import Path
    for path in sorted(Path(__file__).resolve().parents[2].joinpath("scenarios").glob("*.yaml")):
        sc = load_scenario(path)
        resolve_plan(sc)
        assert yaml.safe_load(path.read_text())["name"] == sc.name


def test_gradients_are_reduced_over_dp_and_cp(small_scenario_dict):
    small_scenario_dict["parallel"] = {"tp": 2, "pp": 2, "cp": 2, "dp": 2}
    plan = resolve_plan(scenario_from_mapping(small_scenario_dict))
    assert plan.grad_shards == 4
    groups = plan.grad_groups(0)
    assert len(groups) == 2 and all(len(g) == 4 for g in groups)
    for g in groups:   # same tp rank and stage; every dp x cp combination
        coords = [plan.coords(r) for r in g]
        assert len({c["tp"] for c in coords}) == 1 and {c["pp"] for c in coords} == {0}
        assert sorted((c["dp"], c["cp"]) for c in coords) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_software_block_v11_is_accepted(small_scenario_dict):
    small_scenario_dict["software"] = {"framework": "torchtitan", "version": "2024-12", "compile": True,
                                       "async_tp": False, "fp8_recipe": "rowwise", "selective_recompute": "op",
                                       "cuda_graphs": False}
    sc = scenario_from_mapping(small_scenario_dict)
    assert sc.software.framework == "torchtitan" and sc.software.compile is True
    assert sc.software.fsdp_mixed_precision is None     # absent: the framework version's default


def test_software_version_written_as_a_number_is_text(small_scenario_dict):
    small_scenario_dict["software"] = {"framework": "nemo", "version": 25.11}
    assert scenario_from_mapping(small_scenario_dict).software.version == "25.11"


def test_unknown_framework_lists_the_choices(small_scenario_dict):
    small_scenario_dict["software"] = {"framework": "megatron"}
    with pytest.raises(ConfigError) as exc:
        scenario_from_mapping(small_scenario_dict)
    assert "software.framework" in str(exc.value) and "megatron-core" in str(exc.value)


def test_software_setting_override_without_a_block(small_scenario_dict):
    sc = scenario_from_mapping(small_scenario_dict, ["software.compile=true"])
    assert sc.software.framework == "custom" and sc.software.compile is True


def test_power_limit_parses_and_must_not_exceed_tdp(small_scenario_dict):
    small_scenario_dict["cluster"]["accelerator"] = {"preset": "h100-sxm", "power_limit": "500 W"}
    assert scenario_from_mapping(small_scenario_dict).cluster.accelerator.power_limit == 500.0
    small_scenario_dict["cluster"]["accelerator"]["power_limit"] = "900 W"
    with pytest.raises(ConfigError) as exc:
        scenario_from_mapping(small_scenario_dict)
    assert "power_limit" in str(exc.value) and "TDP" in str(exc.value)
