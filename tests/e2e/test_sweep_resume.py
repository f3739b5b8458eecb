"""A sweep killed part-way (SIGKILL to its process group) resumes: the rerun completes it with
no point lost and none run twice, and the results equal an uninterrupted run's."""

import copy
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml

from hwsim.studies.store import DB_NAME, ResultStore
from hwsim.studies.sweep import load_sweep, run_sweep
from tests.conftest import SMALL

REPO = Path(__file__).resolve().parents[2]
N_POINTS = 12


def rows(db: Path) -> dict[str, float]:
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return dict(con.execute("SELECT key, finished_at_s FROM points"))
    except sqlite3.OperationalError:   # the table is not created yet
        return {}


def test_killed_sweep_resumes_without_loss_or_repeat(tmp_path):
    base = copy.deepcopy(SMALL)
    base["model"]["layers"] = 32                      # ~0.3 s per point: slow enough to interrupt
    base["training"].update(global_batch=128, micro_batch=1)
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "name": "resume", "base": base,
        "axes": {"cluster.inter_node.nic_bandwidth": {"low": 1.0e10, "high": 1.0e11, "n": N_POINTS}}}))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "hwsim.cli", "sweep", str(sweep_file), "--out", str(out), "--workers", "2",
           "--no-plots"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while len(rows(out / DB_NAME)) < 3:
            assert proc.poll() is None, "the sweep ended before it could be interrupted"
            assert time.monotonic() < deadline, "the sweep stored nothing in 90 s"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)           # the CLI and its worker processes
        proc.wait(timeout=30)
    before = rows(out / DB_NAME)
    assert 3 <= len(before) < N_POINTS, f"{len(before)} points done before the kill"

    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stdout.split())
    assert f"ran {N_POINTS - len(before)}, skipped {len(before)}" in text

    after = rows(out / DB_NAME)
    sweep = load_sweep(sweep_file)
    assert set(after) == {p.key for p in sweep.points}                 # none lost
    assert all(after[k] == t for k, t in before.items())               # none run again
    with ResultStore(out) as store:
        resumed = store.records([p.key for p in sweep.points])
    clean = run_sweep(sweep, tmp_path / "clean").records
    assert [(r.key, r.summary, r.error) for r in resumed] == [(r.key, r.summary, r.error) for r in clean]
    assert all(r.ok for r in resumed)
