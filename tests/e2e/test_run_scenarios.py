"""`hwsim run scenarios/X.yaml --out D` for every shipped scenario: every output is written and
says what it should."""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((REPO / "scenarios").glob("*.yaml"))


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_run_writes_every_output(path, tmp_path):
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "hwsim.cli", "run", str(path), "--out", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=REPO,
                         env={**os.environ, "COLUMNS": "200"})   # table rows unwrapped
    assert res.returncode == 0, res.stderr[-3000:]
    assert "What limits the step" in res.stdout
    s = json.loads((out / "summary.json").read_text())
    # the two bubble figures on one screen say what each measures: the busiest device's own
    # idle time (the table) and the critical path's share (the account)
    assert f"time on device {s['breakdown_device']}" in res.stdout
    if s["plan"]["pp"] > 1:
        assert "waiting on other pipeline stages (bubble)" in res.stdout
        assert "pipeline_bubble" not in res.stdout.split("What limits the step")[0]
    for key in ("step_time_s", "tokens_per_s", "tflops_per_device", "mfu", "hfu", "peak_memory_bytes",
                "memory_capacity_bytes", "fits_in_memory", "devices", "breakdown"):
        assert key in s
    assert sum(s["breakdown"].values()) == pytest.approx(s["step_time_s"], rel=0.01)
    assert 0 < s["mfu"] <= s["hfu"] < 1 and s["fits_in_memory"]
    for name in ("timeline.png", "memory.png"):
        head = (out / name).read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", head[16:24])
        assert width >= 800 and height >= 400
    trace = json.loads((out / "trace.json").read_text())
    pids = {e["pid"] for e in trace["traceEvents"] if e.get("ph") == "X"}
    assert len(pids) == s["simulated_devices"]
    report = (out / "report.md").read_text()
    assert s["name"] in report
    assert (out / "intervals.csv").read_text().count("\n") > 10
