"""hwsim.reliability: failure rates, checkpoints, degraded links and the Monte Carlo of a
training run, against closed forms and published counts."""

import copy
import math

import numpy as np
import pytest

from hwsim import units
from hwsim.config.loader import load_scenario, scenario_from_mapping
from hwsim.config.reliability import Component, DegradedLinkConfig, LinkKind, Per
from hwsim.errors import ConfigError
from hwsim.hardware.topology import build_topology
from hwsim.network.collectives import Algorithm, CollectiveOp, collective_time
from hwsim.network.maxmin import MaxMinFair
from hwsim.reliability.checkpoint import (expected_wall_per_work, lambert_w0, optimal_interval_s,
                                          young_daly_interval_s)
from hwsim.reliability.failures import component_loads, interruptions_per_day, unit_counts
from hwsim.reliability.goodput import build_goodput_model, run_goodput
from hwsim.reliability.links import degrade_links, degraded_link_ids, run_degraded_step
from hwsim.reliability.montecarlo import EventClass, EventKind, RunModel, simulate_runs
from hwsim.reliability.spec import load_failure_mix, resolve_reliability
from hwsim.simulate import run_step
from hwsim.workload.shard import param_count
from tests.conftest import REPO, SMALL

LLAMA405 = REPO / "scenarios" / "llama3-405b-16384xh100.yaml"
STEP_405B_S = 9.73   # a step time given, so these tests do not simulate the 16K-device step


def _small(**reliability):
    d = copy.deepcopy(SMALL)
    d["training"]["tokens"] = 2e9
    if reliability:
        d["reliability"] = reliability
    return scenario_from_mapping(d)


# --- checkpoint interval: Young/Daly ---------------------------------------------------------------

def test_optimal_interval_is_young_daly_when_checkpoints_are_short():
    stall_s, mtbf_s = 10.0, 1e5     # C/M = 1e-4: the first-order regime
    best = optimal_interval_s(stall_s, mtbf_s)
    assert best == pytest.approx(math.sqrt(2 * stall_s * mtbf_s), rel=0.01)
    grid = np.geomspace(best / 5, best * 5, 20001)
    waste = [expected_wall_per_work(t, stall_s, mtbf_s) for t in grid]
    assert grid[int(np.argmin(waste))] == pytest.approx(best, rel=1e-3)


def test_optimal_interval_departs_from_young_when_checkpoints_are_long():
    stall_s, mtbf_s = 1000.0, 1e4   # C/M = 0.1: Young's formula overshoots the true optimum
    assert optimal_interval_s(stall_s, mtbf_s) < 0.9 * young_daly_interval_s(stall_s, mtbf_s)


def test_lambert_w0_solves_its_equation():
    assert lambert_w0(-0.0) == 0.0   # exp(-1 - C/M) underflows when a checkpoint outlasts the MTBF many times
    assert optimal_interval_s(1e6, 1.0) == pytest.approx(1.0)   # then the optimum tends to M
    for z in (-1 / math.e + 1e-12, -0.3, -0.2, -0.01, -1e-300):
        w = lambert_w0(z)
        assert w * math.exp(w) == pytest.approx(z, rel=1e-9, abs=1e-12)
        assert -1.0 <= w < 0.0


# --- Monte Carlo against the exact expectation ------------------------------------------------------

def test_monte_carlo_matches_daly_expected_time():
    """Job restarts, blocking checkpoints, failures also during recovery: each period of
    a = τ + C takes M e^{D/M} (e^{a/M} − 1) in expectation (Daly 2006, with R = D)."""
    mtbf_s, down_s, tau, c, periods = 3600.0, 600.0, 1000.0, 50.0, 1000
    model = RunModel(periods * tau, 10.0, tau, c, 0.0, (EventClass("gpu", 1 / mtbf_s, EventKind.JOB, down_s, 1.0),))
    runs = simulate_runs(model, 1000, seed=1)
    expected = periods * mtbf_s * math.exp(down_s / mtbf_s) * math.expm1((tau + c) / mtbf_s) - c  # no final checkpoint
    assert runs.wall_s.mean() == pytest.approx(expected, abs=4 * runs.wall_s.std() / math.sqrt(1000))


def test_no_failures_costs_only_the_checkpoints():
    model = RunModel(10_000.0, 1.0, 1000.0, 5.0, 0.0, (EventClass("gpu", 0.0, EventKind.JOB, 60.0, 1.0),))
    runs = simulate_runs(model, 3, seed=0)
    assert runs.wall_s.tolist() == [10_000.0 + 9 * 5.0] * 3


def test_more_frequent_checkpoints_cost_more_when_a_checkpoint_is_slow():
    slow = _small(checkpoint={"write_bandwidth": "1 GB/s"})   # GB-scale state at 1 GB/s: seconds per checkpoint
    base = build_goodput_model(slow, step_time_s=0.5)
    assert base.checkpoint.stall_s > 1.0
    walls = {}
    for interval in ("1 min", "auto"):
        sc = _small(checkpoint={"write_bandwidth": "1 GB/s", "interval": interval},
                    components={"gpu": {"mtbf": "500 h"}})
        walls[interval] = run_goodput(build_goodput_model(sc, step_time_s=0.5), runs=300, seed=3).runs.wall_s.mean()
    assert walls["1 min"] > walls["auto"]


def test_async_checkpoints_stall_less_than_blocking_ones():
    blocking = build_goodput_model(_small(checkpoint={"write_bandwidth": "1 GB/s"}), step_time_s=0.5)
    asynchronous = build_goodput_model(_small(checkpoint={"write_bandwidth": "1 GB/s", "mode": "async"}),
                                       step_time_s=0.5)
    assert asynchronous.checkpoint.stall_s < blocking.checkpoint.stall_s
    assert asynchronous.run.durable_lag_s == pytest.approx(blocking.checkpoint.write_s - blocking.checkpoint.snapshot_s)


def test_same_seed_same_results_and_other_seed_other_results():
    model = build_goodput_model(load_scenario(LLAMA405), step_time_s=STEP_405B_S)
    a, b, c = (run_goodput(model, runs=120, seed=s).runs for s in (7, 7, 8))
    assert np.array_equal(a.wall_s, b.wall_s) and np.array_equal(a.n_events, b.n_events)
    assert not np.array_equal(a.wall_s, c.wall_s)
    # the first runs of a larger count are the runs of a smaller one (chunked seeding)
    assert np.array_equal(run_goodput(model, runs=100, seed=7).runs.wall_s, a.wall_s[:100])


# --- the Llama 3 405B failure mix ---------------------------------------------------------------------

def test_preset_reproduces_the_published_counts():
    mix = load_failure_mix("llama3-405b-h100")
    llama = load_scenario(LLAMA405)   # 2,048 nodes of 8 H100, one NIC per GPU: the paper's cluster
    loads = component_loads(llama.cluster, mix.components)
    per_54_days = {load.component: load.per_day * 54 for load in loads}
    assert sum(v for c, v in per_54_days.items() if c != Component.MAINTENANCE) == pytest.approx(419)
    assert per_54_days[Component.MAINTENANCE] == pytest.approx(47)
    assert per_54_days[Component.GPU] + per_54_days[Component.HBM] == pytest.approx(148 + 19 + 17 + 6 + 6 + 72)


def test_llama3_405b_interruptions_per_day_in_monte_carlo():
    model = build_goodput_model(load_scenario(LLAMA405), step_time_s=STEP_405B_S)
    assert interruptions_per_day(model.loads) == pytest.approx(466 / 54)
    summary = run_goodput(model, runs=200, seed=0).summary
    per_day = summary["interruptions_per_day"]["mean"]
    assert per_day == pytest.approx(466 / 54, rel=0.02)     # Poisson: ~0.3% standard error over 200 runs
    assert 0.8 < summary["effective_training_time"]["mean"] < 1.0


def test_rates_scale_with_the_cluster():
    small = _small()
    counts = unit_counts(small.cluster)
    assert (counts[Per.DEVICE], counts[Per.NODE], counts[Per.NIC], counts[Per.JOB]) == (16, 2, 16, 1)
    assert counts[Per.SWITCH] == 1   # 16 NICs fill one leaf of 32 ports: no spine
    loads = {l.component: l for l in component_loads(small.cluster, resolve_reliability(None).components)}
    big = {l.component: l for l in component_loads(load_scenario(LLAMA405).cluster,
                                                   resolve_reliability(None).components)}
    assert big[Component.GPU].rate_per_s / loads[Component.GPU].rate_per_s == pytest.approx(16384 / 16)
    assert big[Component.MAINTENANCE].rate_per_s == loads[Component.MAINTENANCE].rate_per_s   # per job


def test_fit_and_mtbf_are_the_same_rate():
    by_fit = resolve_reliability(_small(components={"gpu": {"fit": 1e9}}).reliability)
    by_mtbf = resolve_reliability(_small(components={"gpu": {"mtbf": "1 h"}}).reliability)
    gpu = [c for c in by_fit.components if c.component == Component.GPU][0]
    assert gpu.mtbf_s == pytest.approx(units.HOUR)
    assert gpu.mtbf_s == [c for c in by_mtbf.components if c.component == Component.GPU][0].mtbf_s


# --- checkpoint size from the memory model --------------------------------------------------------------

def test_checkpoint_holds_weights_and_adam_state():
    llama = load_scenario(LLAMA405)
    model = build_goodput_model(llama, step_time_s=STEP_405B_S)
    n = param_count(llama.model)
    assert model.checkpoint.total_bytes == pytest.approx(n * (2 + 12))   # bf16 weights + fp32 master, m, v
    # the shards cover the whole checkpoint: the largest one times the devices is at least the total
    assert model.checkpoint.device_bytes * llama.cluster.n_devices >= model.checkpoint.total_bytes
    assert model.checkpoint.write_s == pytest.approx(model.checkpoint.total_bytes / 2e12)   # Tectonic 2 TB/s


# --- recovery scope: smaller model-parallel replicas restart cheaper -----------------------------------------

def test_smaller_replicas_lose_less_when_replicas_recover_alone():
    ett = {}
    for tp, pp in ((8, 16), (8, 4)):
        sc = load_scenario(LLAMA405, [f"parallel.tp={tp}", f"parallel.pp={pp}", "parallel.dp=null",
                                      "reliability.recovery=replica", "parallel.virtual_stages=1"])
        model = build_goodput_model(sc, step_time_s=STEP_405B_S)
        ett[tp * pp] = run_goodput(model, runs=100, seed=0).summary["effective_training_time"]["mean"]
    assert ett[32] > ett[128]


# --- degraded links through a fat-tree ------------------------------------------------------------------

def _one_gpu_nodes(nodes: int):
    d = copy.deepcopy(SMALL)
    d["cluster"]["nodes"], d["cluster"]["devices_per_node"] = nodes, 1
    d["cluster"]["inter_node"]["nics_per_node"] = 1
    return scenario_from_mapping(d | {"parallel": {"tp": 1, "pp": 1}}).cluster


def test_half_speed_nic_doubles_a_bandwidth_bound_ring_all_reduce():
    topology = build_topology(_one_gpu_nodes(4))
    degraded = degrade_links(topology, (DegradedLinkConfig(kind=LinkKind.NIC, device=2, bandwidth_frac=0.5),))
    assert len(degraded_link_ids(topology, DegradedLinkConfig(kind=LinkKind.NIC, device=2, bandwidth_frac=0.5))) == 2
    group, size = [tuple(range(4))], 8 * units.GiB
    times = [collective_time(t, MaxMinFair(t.capacity_bytes_per_s), CollectiveOp.ALL_REDUCE, group, size,
                             Algorithm.RING) for t in (topology, degraded)]
    latency = collective_time(topology, MaxMinFair(topology.capacity_bytes_per_s), CollectiveOp.ALL_REDUCE, group,
                              1.0, Algorithm.RING)
    # the ring's every step crosses the slow NIC: its bandwidth term takes 1 / 0.5 as long
    assert (times[1] - latency) / (times[0] - latency) == pytest.approx(2.0, rel=1e-6)
    assert topology.capacity_bytes_per_s.sum() > degraded.capacity_bytes_per_s.sum()   # the original is untouched


def test_degraded_nic_slows_a_collective_bound_step_by_at_most_its_factor():
    d = copy.deepcopy(SMALL)
    d["parallel"] = {"tp": 1, "pp": 1, "dp": 16, "overlap_grad_reduce": False}   # a dp all-reduce the step waits for
    sc = scenario_from_mapping(d)
    healthy = run_step(sc).summary["step_time_s"]
    slow = run_degraded_step(sc, (DegradedLinkConfig(kind=LinkKind.NIC, device=0, bandwidth_frac=0.25),))
    slowed = slow.summary["step_time_s"]
    assert healthy < slowed < healthy / 0.25


def test_degraded_link_on_a_missing_device_is_a_config_error():
    topology = build_topology(_one_gpu_nodes(2))
    with pytest.raises(ConfigError, match="device"):
        degraded_link_ids(topology, DegradedLinkConfig(kind=LinkKind.NIC, device=9, bandwidth_frac=0.5))
    with pytest.raises(ConfigError, match="nvlink"):
        degraded_link_ids(build_topology(scenario_from_mapping(SMALL).cluster.model_copy(update={"nodes": 1})),
                          DegradedLinkConfig(kind=LinkKind.NIC, device=0, bandwidth_frac=0.5))


# --- bad input: the field and the fix -------------------------------------------------------------------

@pytest.mark.parametrize("block, needles", [
    ({"components": {"gpu": {"mtbf": "-5 h"}}}, ["reliability.components.gpu.mtbf", "negative"]),
    ({"components": {"gpu": {"mtbf": 0}}}, ["reliability.components.gpu.mtbf", "positive"]),
    ({"components": {"tpu": {"mtbf": "5 h"}}}, ["reliability.components.tpu", "gpu"]),
    ({"components": {"gpu": {"mtbf": "5 h", "fit": 3}}}, ["reliability.components.gpu", "not both"]),
    ({"checkpoint": {"interval": 0}}, ["reliability.checkpoint.interval", "auto"]),
    ({"checkpoint": {"storage": "tape"}}, ["reliability.checkpoint.storage", "parallel-fs"]),
    ({"preset": "llama4"}, ["reliability.preset", "llama3-405b-h100"]),
    ({"degraded_links": [{"kind": "nic", "bandwidth_frac": 0}]}, ["reliability.degraded_links", "bandwidth_frac"]),
    ({"detection": "5 fortnights"}, ["reliability.detection", "min"]),
])
def test_bad_reliability_block_names_the_field(block, needles):
    with pytest.raises(ConfigError) as err:
        _small(**block)
    for needle in needles:
        assert needle in str(err.value)


def test_a_run_that_cannot_finish_is_a_config_error():
    sc = _small(components={"gpu": {"mtbf": "1 s"}})
    with pytest.raises(ConfigError, match="never finish"):
        build_goodput_model(sc, step_time_s=0.5)


def test_goodput_needs_a_token_budget():
    with pytest.raises(ConfigError, match="training.tokens"):
        build_goodput_model(scenario_from_mapping(SMALL), step_time_s=0.5)


# --- variance and stragglers -----------------------------------------------------------------------------

def _synchronous_dp_step():
    """Data parallel only, the gradient all-reduce after the backward (no overlap), no SM
    interference, no host: compute then one collective, every rank in lock-step."""
    from hwsim.reliability.variance import step_distribution
    d = copy.deepcopy(SMALL)
    d["parallel"] = {"tp": 1, "pp": 1, "dp": 16, "overlap_grad_reduce": False}
    d["simulation"] = {"comm_compute_interference": False, "host_model": False}
    return scenario_from_mapping(d), step_distribution


def test_no_variance_is_the_deterministic_unfolded_step_exactly():
    sc, step_distribution = _synchronous_dp_step()
    dist = step_distribution(sc, n_steps=2, seed=0)
    assert dist.step_times_s.tolist() == [run_step(sc, fold=False).summary["step_time_s"]] * 2
    assert run_step(sc, fold=False).summary["step_time_s"] == run_step(sc, fold=True).summary["step_time_s"]


@pytest.mark.parametrize("slowdown", [1.5, 3.0])
def test_one_straggler_stretches_the_synchronous_step_by_its_compute_share(slowdown):
    from hwsim.engine.task import TaskKind
    from hwsim.reliability.variance import Straggler
    sc, step_distribution = _synchronous_dp_step()
    healthy = run_step(sc, fold=False)
    step = healthy.summary["step_time_s"]
    compute_s = sum(t.duration_s for t in healthy.compiled.graph.tasks
                    if t.kind == TaskKind.COMPUTE and t.devices == (5,))
    assert 0.3 < compute_s / step < 1.0
    dist = step_distribution(sc, n_steps=1, stragglers=(Straggler(5, slowdown),))
    # everyone waits for the straggler at the all-reduce: its compute share takes s times as long
    assert dist.step_times_s[0] == pytest.approx(step + (slowdown - 1) * compute_s, rel=0.01)
    assert dist.slowest_device == 5


def test_kernel_noise_gives_a_seeded_spread_above_the_noiseless_step():
    sc, step_distribution = _synchronous_dp_step()
    a = step_distribution(sc, n_steps=15, seed=1, kernel_cv=0.1)
    b = step_distribution(sc, n_steps=15, seed=1, kernel_cv=0.1)
    assert np.array_equal(a.step_times_s, b.step_times_s)
    # 16 lock-step ranks: the step waits for the slowest, so noise of mean one lengthens it
    assert a.noiseless_step_s < a.p50_s <= a.p99_s
