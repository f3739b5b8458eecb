"""The `reliability.variance` block and the step-time distribution it drives (hwsim variance):
config parsing and bad values, seeded determinism, percentiles above the noiseless step, and a
straggler on a 2-device data-parallel step stretching it by its compute share."""

import copy

import numpy as np
import pytest

from hwsim.config.loader import scenario_from_mapping
from hwsim.config.reliability import VarianceConfig
from hwsim.errors import ConfigError
from hwsim.reliability.variance import (step_distribution, stragglers_from_config,
                                        variance_from_scenario)
from hwsim.simulate import run_step
from tests.conftest import SMALL


def _scenario(variance=None, **parallel):
    d = copy.deepcopy(SMALL)
    d["cluster"]["nodes"] = 1
    d["parallel"] = {"tp": 2, "pp": 2, "dp": 2, **parallel}
    d["training"]["global_batch"] = 8
    if variance is not None:
        d["reliability"] = {"variance": variance}
    return scenario_from_mapping(d)


def _two_device_dp():
    """Two data-parallel ranks on one node, gradient all-reduce after the backward (no overlap),
    no SM interference, no host: compute then one collective, both ranks in lock-step."""
    d = copy.deepcopy(SMALL)
    d["cluster"]["nodes"], d["cluster"]["devices_per_node"] = 1, 2
    d["model"]["layers"] = 4
    d["parallel"] = {"tp": 1, "pp": 1, "dp": 2, "overlap_grad_reduce": False}
    d["training"]["global_batch"] = 4
    d["simulation"] = {"comm_compute_interference": False, "host_model": False}
    return scenario_from_mapping(d)


# --- the block --------------------------------------------------------------------------------------------

def test_block_parses_with_defaults_and_node_stragglers():
    sc = _scenario({"kernel_cv": 0.05, "stragglers": [{"node": 0, "slowdown": 1.2}, {"device": 3, "slowdown": 2}],
                    "samples": 7, "seed": 11})
    block = sc.reliability.variance
    assert (block.kernel_cv, block.device_cv, block.samples, block.seed) == (0.05, 0.0, 7, 11)
    strag = stragglers_from_config(block, sc)
    # node 0 is devices 0..7 (one node of 8), then device 3 once more
    assert [s.device for s in strag] == list(range(8)) + [3]
    assert {s.slowdown for s in strag[:8]} == {1.2}
    assert VarianceConfig() == VarianceConfig(kernel_cv=0, device_cv=0, stragglers=(), samples=100, seed=0)


@pytest.mark.parametrize("variance, field", [
    ({"kernel_cv": -0.1}, "reliability.variance.kernel_cv"),
    ({"kernel_cv": "nan"}, "reliability.variance.kernel_cv"),
    ({"device_cv": 10}, "reliability.variance.device_cv"),
    ({"samples": 0}, "reliability.variance.samples"),
    ({"seed": -1}, "reliability.variance.seed"),
    ({"stragglers": [{"device": 1, "slowdown": 0.5}]}, "reliability.variance.stragglers.0.slowdown"),
    ({"stragglers": [{"device": 1, "slowdown": "inf"}]}, "reliability.variance.stragglers.0.slowdown"),
    ({"stragglers": [{"slowdown": 2}]}, "reliability.variance.stragglers.0"),
    ({"stragglers": [{"device": 1, "node": 0, "slowdown": 2}]}, "reliability.variance.stragglers.0"),
    ({"kernel_sigma": 0.1}, "reliability.variance.kernel_sigma"),
])
def test_bad_values_are_config_errors_naming_the_field(variance, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        _scenario(variance)


def test_a_straggler_outside_the_cluster_names_its_field():
    with pytest.raises(ConfigError, match=r"reliability\.variance\.stragglers\.0\.device: 8 is not in"):
        variance_from_scenario(_scenario({"stragglers": [{"device": 8, "slowdown": 2}]}), samples=1)
    with pytest.raises(ConfigError, match=r"reliability\.variance\.stragglers\.1\.node: 1 is not in"):
        variance_from_scenario(_scenario({"stragglers": [{"device": 0, "slowdown": 2}, {"node": 1, "slowdown": 2}]}),
                               samples=1)


# --- the distribution -------------------------------------------------------------------------------------

def test_same_seed_identical_samples_other_seed_other_samples():
    sc = _scenario({"kernel_cv": 0.1, "device_cv": 0.05, "samples": 6, "seed": 5})
    a, b = variance_from_scenario(sc), variance_from_scenario(sc)
    assert np.array_equal(a.step_times_s, b.step_times_s) and len(a.step_times_s) == 6
    c = variance_from_scenario(sc, seed=6)
    assert not np.array_equal(a.step_times_s, c.step_times_s)


def test_only_slowdowns_keep_every_percentile_at_or_above_the_noiseless_step():
    sc = _scenario({"stragglers": [{"device": 2, "slowdown": 1.4}], "samples": 3})
    dist = variance_from_scenario(sc)
    assert dist.percentile(99) >= dist.p50_s >= dist.noiseless_step_s
    assert dist.p50_s > dist.noiseless_step_s * 1.01          # one slow rank is everyone's wait
    assert dist.slowest_device == 2 and dist.slowest_share == 1.0


def test_no_block_is_the_noiseless_unfolded_step_and_run_stays_folded():
    plain = _scenario()
    with_block = _scenario({"kernel_cv": 0.2, "stragglers": [{"device": 0, "slowdown": 3}]})
    dist = variance_from_scenario(plain, samples=2)
    assert dist.step_times_s.tolist() == [dist.noiseless_step_s] * 2
    # hwsim run ignores the block: the folded deterministic step, the same with or without it
    folded = run_step(with_block).summary["step_time_s"]
    assert folded == run_step(plain).summary["step_time_s"]
    assert folded == pytest.approx(dist.noiseless_step_s, rel=1e-9)


def test_device_spread_lengthens_a_lock_step_step_on_average():
    sc = _two_device_dp()
    dist = step_distribution(sc, n_steps=30, seed=2, device_cv=0.1)
    # the step waits for the slower of two ranks: E[max] of mean-one speeds is above one
    assert dist.step_times_s.mean() > dist.noiseless_step_s
    assert dist.percentile(99) >= dist.p50_s


def test_the_json_schema_describes_the_block():
    import json

    jsonschema = pytest.importorskip("jsonschema")
    from tests.conftest import REPO

    validator = jsonschema.Draft202012Validator(json.loads((REPO / "docs" / "scenario.schema.json").read_text()))
    good = {**SMALL, "reliability": {"variance": {"kernel_cv": 0.05, "device_cv": "0.02", "samples": 50, "seed": 1,
                                                  "stragglers": [{"device": 3, "slowdown": 1.5},
                                                                 {"node": 1, "slowdown": 1.1}]}}}
    assert not list(validator.iter_errors(good))
    typo = {**SMALL, "reliability": {"variance": {"kernel_sigma": 0.05}}}
    assert list(validator.iter_errors(typo))


def test_link_spread_scales_each_collective_and_is_seeded():
    """link_cv: each collective's bytes and latency scaled by one mean-one draw; on a lock-step dp
    step whose all-reduce follows the backward, the step grows exactly by the all-reduce's own change."""
    from hwsim.engine.task import TaskKind
    from hwsim.reliability.variance import perturbed_graph

    sc = _two_device_dp()
    a = step_distribution(sc, n_steps=8, seed=4, link_cv=0.3)
    b = step_distribution(sc, n_steps=8, seed=4, link_cv=0.3)
    assert np.array_equal(a.step_times_s, b.step_times_s)
    assert len(set(a.step_times_s.tolist())) > 1          # the draws differ between samples
    assert step_distribution(sc, n_steps=2, seed=4).step_times_s.tolist() == [a.noiseless_step_s] * 2
    # one collective twice as long on idle links: twice its bytes and latency
    run = run_step(sc, fold=False)
    graph = run.compiled.graph
    ones = np.ones(len(graph.tasks))
    doubled = perturbed_graph(graph, ones, np.where([t.kind == TaskKind.COLLECTIVE for t in graph.tasks], 2.0, 1.0))
    for old, new in zip(graph.tasks, doubled.tasks):
        if old.kind == TaskKind.COLLECTIVE and old.transfers:
            assert [b for x in new.transfers for _, b in x.link_bytes] == [2 * b for x in old.transfers
                                                                           for _, b in x.link_bytes]
            assert [x.latency_s for x in new.transfers] == [2 * x.latency_s for x in old.transfers]
        elif old.kind == TaskKind.COMPUTE:
            assert new.duration_s == old.duration_s


def test_a_degraded_link_is_a_straggler_of_the_sampled_step():
    """reliability.degraded_links slows the unfolded step hwsim variance samples, as it does
    hwsim goodput's step (one NVLink at a tenth of its bandwidth slows the dp all-reduce)."""
    sc = _two_device_dp()
    healthy = step_distribution(sc, n_steps=1).noiseless_step_s
    d = sc.model_dump(mode="json", exclude_unset=True)
    d["reliability"] = {"degraded_links": [{"kind": "nvlink", "device": 1, "bandwidth_frac": 0.1}]}
    slow = step_distribution(scenario_from_mapping(d), n_steps=1).noiseless_step_s
    assert slow > healthy * 1.01
