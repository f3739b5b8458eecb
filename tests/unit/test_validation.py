"""run_validation: the same results, in the file's order, with one worker or several."""

import copy

import pytest

from hwsim.studies.validation import run_validation, validation_report
from tests.conftest import SMALL


def _records():
    out = []
    for i, gb in enumerate((32, 64, 16)):
        scenario = copy.deepcopy(SMALL)
        scenario["training"]["global_batch"] = gb
        out.append({"id": f"r{i}", "tags": ["t"], "scenario": scenario,
                    "published": {"step_time_s": 0.01 * (i + 1)}})
    bad = copy.deepcopy(out[0])
    bad["id"], bad["scenario"]["parallel"]["tp"] = "bad", 3
    return out + [bad]


def test_parallel_validation_keeps_order_and_results():
    records = _records()
    serial = run_validation(records, workers=1)
    parallel = run_validation(records, workers=2)
    assert [r.id for r in parallel] == [r["id"] for r in records]
    assert [r.predicted_step_time_s for r in parallel] == [r.predicted_step_time_s for r in serial]
    rep = validation_report(parallel)
    assert [u["id"] for u in rep["unsupported"]] == ["bad"]
    assert rep["mape"] == pytest.approx(sum(abs(r.error) for r in parallel if r.error is not None) / 3)
