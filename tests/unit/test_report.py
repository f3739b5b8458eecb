"""The bottleneck account names the right first cause on scenarios built to have one."""

from __future__ import annotations

import copy

import pytest

from hwsim.analysis.critical_path import Cause
from hwsim.analysis.report import bottleneck_account, bubble_fraction, report_markdown, report_text
from hwsim.config.schema import ScenarioConfig
from hwsim.simulate import run_step
from tests.conftest import H100

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
    assert "from 2 to 8" in first_line and "global_batch 2 → 8" in first_line


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
    assert "nic_bandwidth, now 1 Gb/s" in first_line


def test_report_markdown_table_adds_up(network_bound):
    account = bottleneck_account(network_bound)
    md = report_markdown(network_bound, account)
    assert md.startswith("# test: where the time goes")
    rows = [line for line in md.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == len([p for p in account.parts if p.seconds > 0])
    assert "exposed_comm.dp.network" in rows[0]
    assert "**total**" in md and "**100.0%**" in md
