"""The bottleneck account names the right first cause on scenarios built to have one."""

from __future__ import annotations

import copy
import re
import shlex

import pytest
import yaml

from hwsim.analysis.critical_path import Cause
from hwsim.analysis.report import bottleneck_account, bubble_fraction, report_markdown, report_text
from hwsim.config.schema import ScenarioConfig
from hwsim.simulate import run_step
from tests.conftest import H100, REPO

TINY_MODEL = {"layers": 8, "hidden": 512, "heads": 8, "ffn_hidden": 2048, "mlp": "gelu", "vocab": 8192,
              "seq_len": 512}


def scenario(cluster: dict, parallel: dict, training: dict, model: dict | None = None) -> ScenarioConfig:
    return ScenarioConfig.model_validate({
        "name": "test", "cluster": {"accelerator": copy.deepcopy(H100), **cluster},
        "model": model or TINY_MODEL, "parallel": parallel, "training": training})


@pytest.fixture(scope="module")
def bubble_bound():
    """pp=8 with 2 micro-batches on one NVLink node: the ideal bubble is 7/9 of the step."""
    sc = scenario({"nodes": 1, "devices_per_node": 8, "intra_node": {"kind": "switch", "bandwidth": "900 GB/s"}},
                  {"tp": 1, "pp": 8, "dp": 1, "schedule": "1f1b"},
                  {"global_batch": 2, "micro_batch": 1, "precision": "bf16"})
    return run_step(sc)


@pytest.fixture(scope="module")
def network_bound():
    """dp=8 over 8 single-device nodes behind 1 Gb/s NICs: the gradient all-reduce dominates."""
    sc = scenario({"nodes": 8, "devices_per_node": 1, "intra_node": {"kind": "switch", "bandwidth": "450 GB/s"},
                   "inter_node": {"kind": "fat-tree", "nics_per_node": 1, "nic_bandwidth": "1 Gb/s"}},
                  {"tp": 1, "pp": 1, "dp": 8},
                  {"global_batch": 8, "micro_batch": 1, "precision": "bf16"})
    return run_step(sc)


def test_bubble_bound_ranks_the_bubble_first(bubble_bound):
    account = bottleneck_account(bubble_bound)
    step = bubble_bound.summary["step_time_s"]
    first = account.parts[0]
    assert first.cause is Cause.BUBBLE
    # the path spends most of the step on the other stages: close to the ideal 7/9
    assert first.seconds / step > 0.6
    assert bubble_fraction(8, 2) == pytest.approx(7 / 9)
    assert account.total_s == pytest.approx(step, rel=0.01)
    text = report_text(bubble_bound, account)
    first_line = text.splitlines()[2]
    assert "pipeline bubble" in first_line
    # the advice keeps the batch: no global_batch change unless the user allows one
    assert "What moves it:" in first_line and "--set parallel.pp=4" in first_line
    assert "global_batch" not in text
    allowed = report_text(bubble_bound, account, allow_batch_change=True).splitlines()[2]
    assert "--set training.global_batch=8" in allowed and "time per sample" in allowed


def test_network_bound_ranks_dp_on_the_network_first(network_bound):
    account = bottleneck_account(network_bound)
    step = network_bound.summary["step_time_s"]
    first = account.parts[0]
    assert (first.cause, first.kind, first.tier) == (Cause.COMM, "dp", "network")
    assert first.key == "exposed_comm.dp.network"
    assert first.seconds / step > 0.5
    assert first.link_utilization_frac is not None and first.link_utilization_frac > 0.5
    assert account.seconds(Cause.BUBBLE) == 0.0  # pp = 1
    assert account.total_s == pytest.approx(step, rel=0.01)
    text = report_text(network_bound, account)
    first_line = text.splitlines()[2]
    assert "data-parallel" in first_line and "inter-node network" in first_line
    assert "--set 'cluster.inter_node.nic_bandwidth=2 Gb/s'" in first_line


def test_report_markdown_table_adds_up(network_bound):
    account = bottleneck_account(network_bound)
    md = report_markdown(network_bound, account)
    assert md.startswith("# test: where the time goes")
    rows = [line for line in md.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == len([p for p in account.parts if p.seconds > 0])
    assert "exposed_comm.dp.network" in rows[0]
    assert "**total**" in md and "**100.0%**" in md


PRINTED = re.compile(r"\((--set (?:'[^']*'|[^\s)]+)(?: --set (?:'[^']*'|[^\s)]+))*)\): simulated (\S+ \S+) per step")


def _printed_suggestions(text: str) -> list[tuple[list[str], str]]:
    """(the --set overrides, the printed step time) of every suggestion in a report."""
    found = []
    for flags, time in PRINTED.findall(text):
        found.append((shlex.split(flags)[1::2], time))
    return found


def _inline(fixture):
    def written(request, tmp_path):
        result = request.getfixturevalue(fixture)
        path = tmp_path / "scenario.yaml"
        path.write_text(yaml.safe_dump(result.scenario.model_dump(mode="json", exclude_unset=True)))
        return path, result
    return written


def _scenario_file(name):
    def loaded(request, tmp_path):
        from hwsim.config.loader import load_scenario
        path = REPO / "scenarios" / name
        return path, run_step(load_scenario(path))
    return loaded


@pytest.mark.parametrize("case", [_inline("bubble_bound"), _inline("network_bound"),
                                  _scenario_file("gpt-small-8xa100-megatron-deepspeed-host-bound.yaml")],
                         ids=["bubble", "network", "host-bound-megatron-deepspeed"])
def test_every_printed_suggestion_is_what_run_with_its_flags_predicts(case, request, tmp_path):
    """Advice is a promise: the step time printed beside each change is the one
    `hwsim run SCENARIO --set ...` gives for it (same fold and granularity)."""
    from hwsim import units
    from hwsim.config.loader import load_scenario

    path, result = case(request, tmp_path)
    printed = _printed_suggestions(report_text(result, allow_batch_change=True))
    assert printed, "the report printed no simulated suggestion"
    for overrides, time in printed:
        again = run_step(load_scenario(path, overrides), fold=result.compiled.folded,
                         granularity=result.compiled.granularity.value)
        assert units.fmt_time(again.summary["step_time_s"]) == time, overrides
        assert again.summary["fits_in_memory"]
        assert again.summary["step_time_s"] / again.compiled.plan.global_batch < (
            result.summary["step_time_s"] / result.compiled.plan.global_batch)


def test_no_suggestion_on_a_device_that_lacks_it():
    """fp8 is suggested only where the accelerator has fp8 tensor cores."""
    from hwsim.analysis.suggest import candidates
    from hwsim.config.loader import scenario_from_mapping

    sc = scenario_from_mapping({
        "name": "a100", "cluster": {"accelerator": "a100-sxm-80gb", "nodes": 1, "devices_per_node": 1,
                                    "intra_node": {"kind": "switch", "bandwidth": "600 GB/s"}},
        "model": TINY_MODEL, "parallel": {"tp": 1, "pp": 1, "dp": 1},
        "training": {"global_batch": 8, "micro_batch": 8, "precision": "bf16"}})
    result = run_step(sc)
    compute = next(p for p in bottleneck_account(result).parts if p.cause is Cause.COMPUTE)
    assert not any("training.precision=fp8" in s.overrides for s in candidates(compute, result))
    h100 = run_step(scenario_from_mapping(result.scenario.model_dump(mode="json", exclude_none=True),
                                          ["cluster.accelerator=h100-sxm"]))
    compute = next(p for p in bottleneck_account(h100).parts if p.cause is Cause.COMPUTE)
    assert any("training.precision=fp8" in s.overrides for s in candidates(compute, h100))


def test_a_what_if_that_does_not_fit_stops_at_its_first_overflow(bubble_bound):
    """stop_at_oom ends the run at the first overflow (the what-ifs need no step time for a change
    they will not print); a plan that fits runs exactly as without it."""
    from hwsim.analysis.suggest import Suggestion, rejected_words, simulate_suggestions
    from hwsim.engine.memory import OutOfMemoryStop

    sc = bubble_bound.scenario
    again = run_step(sc, fold=bubble_bound.compiled.folded, granularity=bubble_bound.compiled.granularity.value,
                     stop_at_oom=True)
    assert again.summary["step_time_s"] == bubble_bound.summary["step_time_s"]
    tiny = sc.model_copy(update={"cluster": sc.cluster.model_copy(update={
        "accelerator": sc.cluster.accelerator.model_copy(update={"hbm": 50e6})})})
    with pytest.raises(OutOfMemoryStop) as stop:
        run_step(tiny, stop_at_oom=True)
    assert stop.value.finding.level_bytes > 50e6
    [outcome] = simulate_suggestions(bubble_bound, [Suggestion("a tiny device", ("cluster.accelerator.hbm=50 MB",))])
    assert not outcome.fits and outcome.peak_at_least and outcome.step_time_s is None
    assert "does not fit (≥ " in rejected_words(bubble_bound, [outcome])


def test_advice_offers_only_what_the_named_framework_version_can_run():
    """Megatron-LM 2021 has no zero-bubble schedule, no sequence parallelism, no CUDA graphs and
    no distributed optimizer (its profile's plan_space): the advice never suggests them, and says
    why it did not."""
    from hwsim.analysis.suggest import candidates, simulate_suggestions, worthwhile
    from hwsim.config.loader import scenario_from_mapping

    d = {"name": "mlm", "cluster": {"accelerator": "a100-sxm-80gb", "nodes": 1, "devices_per_node": 8,
                                    "intra_node": {"kind": "switch", "bandwidth": "300 GB/s"}},
         "model": {**TINY_MODEL, "layers": 8}, "parallel": {"tp": 2, "pp": 4, "dp": 1, "schedule": "1f1b"},
         "training": {"global_batch": 8, "micro_batch": 1, "precision": "fp16"},
         "software": {"framework": "megatron-lm", "version": "2021-04"}}
    result = run_step(scenario_from_mapping(d))
    parts = bottleneck_account(result).parts
    suggested = [s for p in parts for s in candidates(p, result)]
    outcomes = simulate_suggestions(result, suggested)
    good, others = worthwhile(result, outcomes)
    flags = {o for g in good for o in g.suggestion.overrides}
    assert not flags & {"parallel.schedule=zero-bubble", "parallel.sequence_parallel=true",
                        "software.cuda_graphs=true", "parallel.zero_stage=1"}
    refused = [o for o in others if o.not_offered]
    assert refused and all("megatron-lm does not offer" in o.rejected for o in refused)
    assert any("parallel.schedule=zero-bubble" in o.suggestion.overrides for o in refused)
    assert "does not offer" in report_text(result)
