"""The capacity planner: enumeration, estimates against the simulator, sound pruning, ranking,
the deadline search, and the `hwsim plan` command."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hwsim.config.loader import scenario_from_mapping
from hwsim.config.schema import Recompute, Schedule
from hwsim.errors import ConfigError
from hwsim.simulate import run_step
from hwsim.studies.commands import parse_count, plan as plan_command
from hwsim.studies.planner import (SearchSpace, enumerate_candidates, fewest_devices, plan_search,
                                   simulate_candidate)
from hwsim.studies.screen import Estimator
from hwsim.workload.plan import resolve_plan
from tests.conftest import SMALL

REPO = Path(__file__).resolve().parents[2]
# A small space so that an exhaustive simulation stays fast.
SPACE = SearchSpace(tp=(1, 2, 4), cp=(1,), virtual_stages=(2,), zero_stages=(0, 1),
                    recompute=(Recompute.SELECTIVE, Recompute.FULL), micro_batch=(1, 2))


@pytest.fixture(scope="module")
def small():
    return scenario_from_mapping(SMALL)


def test_enumerated_plans_are_valid_and_distinct(small):
    counts = {}
    cands = list(enumerate_candidates(small, SearchSpace(), counts))
    assert len(cands) == len(set(cands)) == counts["enumerated"] - counts.get("invalid", 0)
    for c in cands:
        plan = resolve_plan(c.apply(small))
        assert c.tp * c.pp * c.cp * c.dp == 16
        assert 32 % (c.micro_batch * c.dp) == 0
        assert plan.n_micro == 32 // (c.micro_batch * c.dp)
        assert c.sequence_parallel == (c.tp > 1)
        assert c.schedule != Schedule.GPIPE
        assert (c.virtual_stages > 1) == (c.schedule == Schedule.INTERLEAVED)
        assert c.zero_stage == 0 or c.dp > 1
    assert {c.tp for c in cands} == {1, 2, 4, 8}        # heads 16, up to a node of 8
    restricted = list(enumerate_candidates(small, SPACE))
    assert {c.tp for c in restricted} == {1, 2, 4} and {c.micro_batch for c in restricted} <= {1, 2}


def test_lower_bound_holds_and_estimates_track_the_simulator(small):
    est = Estimator(small)
    # every schedule, ZeRO 0/1/3, context parallelism, both recomputes
    space = SearchSpace(tp=(1, 2, 4), cp=(1, 2), virtual_stages=(2,), zero_stages=(0, 1, 3),
                        recompute=(Recompute.SELECTIVE, Recompute.FULL), micro_batch=(1, 2))
    cands = list(enumerate_candidates(small, space))
    picked = cands[:: max(1, len(cands) // 12)]
    assert {c.schedule for c in picked} == {Schedule.ONE_F_ONE_B, Schedule.INTERLEAVED, Schedule.ZERO_BUBBLE}
    assert {c.zero_stage for c in picked} == {0, 1, 3} and {c.cp for c in picked} == {1, 2}
    for c in picked:
        plan = resolve_plan(c.apply(small))
        e = est.estimate(plan)
        s = run_step(c.apply(small)).summary
        assert e.lower_bound_s <= s["step_time_s"] * (1 + 1e-9), c.label
        assert e.lower_bound_s <= e.step_time_s
        assert s["step_time_s"] == pytest.approx(e.step_time_s, rel=0.2), c.label
        assert s["peak_memory_bytes"] == pytest.approx(e.memory_bytes, rel=0.06), c.label


def test_pruning_is_sound_against_exhaustive_simulation(small):
    space = SearchSpace(tp=(2, 4), cp=(1,), virtual_stages=(2,), zero_stages=(1,),
                        recompute=(Recompute.SELECTIVE, Recompute.FULL), micro_batch=(2,))
    report = plan_search(small, space, max_simulations=10_000)
    c = report.counts
    assert c["enumerated"] == c.get("invalid", 0) + c.get("over_memory_estimate", 0) + c["dominated"] + c["fit_estimate"]
    assert c["simulated"] == len(report.ranked) + len(report.rejected)
    # with no limit, every estimated plan is simulated or pruned (+ the baseline, which is not one of them)
    assert c["simulated"] - 1 + c.get("pruned_by_bound", 0) == c["fit_estimate"]
    assert c.get("pruned_by_bound", 0) > 0
    # simulate every plan the search considered: the best must be the one the search found
    est = Estimator(small)
    truth = []
    for cand in enumerate_candidates(small, space):
        plan = resolve_plan(cand.apply(small))
        if est.memory_bytes(plan) <= small.cluster.accelerator.hbm:
            s = run_step(cand.apply(small), granularity="layer").summary
            if s["fits_in_memory"]:
                truth.append(s["step_time_s"])
    assert report.best.step_time_s == pytest.approx(min(truth), rel=1e-12)
    times = [r.step_time_s for r in report.ranked]
    assert times == sorted(times) and all(r.fits for r in report.ranked)
    assert report.best.step_time_s <= report.baseline.step_time_s
    assert report.explanation[0].startswith("best: " + report.best.candidate.label)


def test_simulation_limit_and_budget(small):
    data = {**SMALL, "training": {**SMALL["training"], "tokens": 1e9}}
    sc = scenario_from_mapping(data)
    report = plan_search(sc, SPACE, max_simulations=1, include_baseline=False)
    assert report.counts["simulated"] == 1 and report.baseline is None
    assert report.counts["not_simulated_limit"] == report.counts["fit_estimate"] - 1
    best = report.best.summary["time_to_train"]
    assert best["steps"] == pytest.approx(1e9 / (32 * 1024))
    assert best["cost_usd"] == pytest.approx(best["device_hours"] * 2.0)      # conftest H100 at $2/h
    poor = plan_search(sc, SPACE, max_simulations=1, include_baseline=False, budget_usd=best["cost_usd"] / 10)
    assert poor.best is None and all("over budget" in r.error for r in poor.rejected)


def test_simulate_candidate_reports_errors_instead_of_raising(small):
    from hwsim.studies.planner import _SimTask

    bad = small.model_copy(update={"parallel": small.parallel.model_copy(update={"tp": 3})})
    index, summary, error, _ = simulate_candidate(_SimTask(5, bad, "layer", None))
    assert index == 5 and summary is None and "PlanError" in error


def test_fewest_devices_meets_the_deadline_with_the_fewest_nodes():
    data = {**SMALL, "cluster": {**SMALL["cluster"], "nodes": 1}, "parallel": {},
            "training": {**SMALL["training"], "tokens": 2e9}}
    sc = scenario_from_mapping(data)
    space = SearchSpace(tp=(1, 2), pp=(1,), cp=(1,), zero_stages=(0,), recompute=(Recompute.SELECTIVE,),
                        micro_batch=(1,))
    one = plan_search(sc, space, max_simulations=8, include_baseline=False).best
    days_one = one.summary["time_to_train"]["days"]
    result = fewest_devices(sc, days_one * 0.7, 32, space, max_simulations=8)
    assert result.devices is not None and result.devices > 8
    assert result.report.best.summary["time_to_train"]["days"] <= days_one * 0.7
    assert all(days > days_one * 0.7 for n, days in result.checked if n < result.devices)
    assert result.curve[0][0] == 8 and result.curve[-1][0] == result.devices
    assert [n for n, _ in result.curve] == sorted(n for n, _ in result.curve)
    with pytest.raises(ConfigError, match="--tokens"):
        fewest_devices(scenario_from_mapping(SMALL), 1.0, 32)


def test_parse_count():
    assert parse_count("300e9", "--tokens") == 300e9
    assert parse_count("15T", "--tokens") == 15e12
    assert parse_count("2.5M", "--budget") == 2.5e6
    with pytest.raises(ConfigError, match="--tokens: 'lots'"):
        parse_count("lots", "--tokens")


PLAN_DEFAULTS = dict(model=None, accelerator=None, devices=None, tokens=None, days=None, budget=None, seq_len=None,
                     global_batch=None, from_=None, node=None, price=None, rank="throughput", top=5,
                     max_simulations=2, workers=1, executor="local", scheduler=None, granularity="layer",
                     json_out=None, set_=None)


def hwsim(*args):
    return subprocess.run([sys.executable, "-m", "hwsim.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_plan_command_json_and_errors(tmp_path):
    scen = tmp_path / "small.yaml"
    scen.write_text(yaml.safe_dump(SMALL))
    out = tmp_path / "plans.json"
    res = hwsim("plan", "--from", scen, "--max-simulations", "3", "--workers", "1", "--tokens", "1B",
                "--json", out)
    assert res.returncode == 0, res.stderr
    assert "best: " in res.stdout and " baseline " in res.stdout
    data = json.loads(out.read_text())
    assert data["ranked"][0]["rank"] == 1 and data["baseline"]["baseline"] is True
    top = data["ranked"][0]
    assert top["summary"]["time_to_train"]["tokens"] == 1e9
    assert top["scenario"]["parallel"]["tp"] == top["parallel"]["tp"]
    assert top["scenario"]["training"]["micro_batch"] == top["micro_batch"]
    steps = [r["summary"]["step_time_s"] for r in data["ranked"]]
    assert steps == sorted(steps)
    for kwargs, needle in (({"rank": "speed"}, "--rank"), ({"budget": "5M"}, "--budget"),
                           ({"granularity": "kernel"}, "--granularity"), ({"tokens": "lots"}, "--tokens"),
                           ({"days": 3.0}, "--days: a deadline needs a token budget")):
        with pytest.raises(ConfigError, match=needle):
            plan_command(**{**PLAN_DEFAULTS, "from_": scen, **kwargs})
    with pytest.raises(ConfigError, match="--node"):
        plan_command(**{**PLAN_DEFAULTS, "model": "llama3-8b", "accelerator": "mi300x", "devices": 8,
                        "global_batch": 8})
    missing = hwsim("plan", "--model", "llama3-8b")           # the CLI's way: one paragraph, exit 2
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "--accelerator" in missing.stderr and "--global-batch" in missing.stderr
