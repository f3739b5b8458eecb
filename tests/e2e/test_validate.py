"""`hwsim validate` on published runs: the report's shape and arithmetic (accuracy itself is a
benchmark, bench/validation.py, not a pass/fail test)."""

import json
import subprocess
import sys

import pytest
import yaml

from hwsim.data import builtin_validation_file

PUBLISHED = builtin_validation_file("public")   # the copy of ../shared/validation hwsim ships


@pytest.fixture
def subset(tmp_path):
    records = [r for r in yaml.safe_load(PUBLISHED.read_text()) if "megatron-readme-2020" in r["tags"]][:6]
    broken = dict(records[0], id="impossible-plan")
    broken["scenario"] = {**broken["scenario"], "parallel": {**broken["scenario"]["parallel"], "tp": 7}}
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump(records + [broken]))
    return path, records


def test_validate_json_report(subset, tmp_path):
    path, records = subset
    out = tmp_path / "v.json"
    res = subprocess.run([sys.executable, "-m", "hwsim.cli", "validate", str(path), "--json", str(out),
                          "--workers", "1"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    rep = json.loads(out.read_text())
    assert {r["id"] for r in rep["records"]} == {r["id"] for r in records}
    assert [u["id"] for u in rep["unsupported"]] == ["impossible-plan"]
    assert "parallel.tp" in rep["unsupported"][0]["reason"]
    for r in rep["records"]:
        assert r["error"] == pytest.approx((r["predicted_step_time_s"] - r["published_step_time_s"])
                                           / r["published_step_time_s"])
    assert rep["mape"] == pytest.approx(sum(abs(r["error"]) for r in rep["records"]) / len(rep["records"]))
    assert rep["per_tag"]["megatron-readme-2020"]["n"] == len(records)
    assert "MAPE" in res.stdout


def test_validate_tag_filter_unknown(subset):
    path, _ = subset
    res = subprocess.run([sys.executable, "-m", "hwsim.cli", "validate", str(path), "--tag", "nonexistent"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "--tag" in res.stderr


def test_validate_set_applies_to_every_record(subset, tmp_path):
    path, records = subset
    outs = []
    # these records ran Megatron-LM 2020, whose profile times attention unfused; a what-if to
    # FlashAttention (the scenario's training.attention wins over the profile) is faster everywhere
    for extra in ([], ["--set", "training.attention=flash"]):
        out = tmp_path / f"v{len(extra)}.json"
        res = subprocess.run([sys.executable, "-m", "hwsim.cli", "validate", str(path), "--json", str(out),
                              "--workers", "1", *extra], capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr
        outs.append({r["id"]: r["predicted_step_time_s"] for r in json.loads(out.read_text())["records"]})
    assert outs[0].keys() == outs[1].keys()
    assert all(outs[1][k] < outs[0][k] for k in outs[0])
