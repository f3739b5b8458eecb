"""`hwsim goodput` and `hwsim plan --objective time-to-train` end to end: files written,
bit-identical results across runs and hash seeds, and every bad input an exit 2 naming the
field and the fix."""

import copy
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, SMALL
from tests.e2e.test_cli_errors import assert_clean_error


def hwsim(*args, env=None):
    return subprocess.run([sys.executable, "-m", "hwsim.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=300, env=env)


def scenario(tmp_path, name="s.yaml", **reliability):
    d = copy.deepcopy(SMALL)
    d["training"]["tokens"] = 5e9
    if reliability:
        d["reliability"] = reliability
    p = tmp_path / name
    p.write_text(yaml.safe_dump(d))
    return p


def test_goodput_writes_parquet_plot_and_summary(tmp_path):
    path = scenario(tmp_path, components={"gpu": {"mtbf": "2000 h"}}, checkpoint={"mode": "async"})
    res = hwsim("goodput", path, "--runs", 150, "--seed", 4, "--out", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    assert "effective training time" in res.stdout
    runs = pd.read_parquet(tmp_path / "out" / "runs.parquet")
    assert len(runs) == 150 and (runs["effective_training_time"] <= 1.0).all()
    assert runs["interruptions"].sum() == runs.filter(like="interruptions_").sum(axis=1).sum()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["runs"] == 150 and summary["checkpoint"]["mode"] == "async"
    assert (tmp_path / "out" / "timeline.png").stat().st_size > 10_000
    assert len(pd.read_parquet(tmp_path / "out" / "timeline.parquet")) == runs.loc[0, "interruptions"]


def test_same_seed_bit_identical_across_hash_seeds(tmp_path):
    path = scenario(tmp_path, components={"gpu": {"mtbf": "500 h"}})
    outputs = []
    for hash_seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        res = hwsim("goodput", path, "--runs", 120, "--seed", 9, "--out", tmp_path / hash_seed, env=env)
        assert res.returncode == 0, res.stderr
        outputs.append((tmp_path / hash_seed / "runs.parquet").read_bytes())
    frames = [pd.read_parquet(tmp_path / h / "runs.parquet") for h in ("0", "12345")]
    pd.testing.assert_frame_equal(frames[0], frames[1], check_exact=True)
    summaries = [json.loads((tmp_path / h / "summary.json").read_text()) for h in ("0", "12345")]
    assert summaries[0] == summaries[1]


@pytest.mark.parametrize("block, needles", [
    ({"components": {"gpu": {"mtbf": "-100 h"}}}, ["reliability.components.gpu.mtbf", "negative"]),
    ({"components": {"rack": {"mtbf": "100 h"}}}, ["reliability.components.rack", "hbm"]),
    ({"checkpoint": {"interval": "0 s"}}, ["reliability.checkpoint.interval", "'30 min'"]),
    ({"checkpoint": {"storage": "s3"}}, ["reliability.checkpoint.storage", "node-local-nvme"]),
    ({"components": {"gpu": {"mtbf": "1 s"}}}, ["never finish", "reliability.components"]),
])
def test_bad_reliability_input_is_exit_2(tmp_path, block, needles):
    assert_clean_error(hwsim("goodput", scenario(tmp_path, **block), "--runs", 5), *needles)


def test_missing_token_budget_and_bad_flags_are_exit_2(tmp_path):
    d = copy.deepcopy(SMALL)
    (tmp_path / "no-tokens.yaml").write_text(yaml.safe_dump(d))
    assert_clean_error(hwsim("goodput", tmp_path / "no-tokens.yaml"), "training.tokens")
    assert_clean_error(hwsim("goodput", scenario(tmp_path), "--runs", 0), "--runs")
    assert_clean_error(hwsim("plan", "--from", scenario(tmp_path), "--objective", "fastest"), "--objective",
                       "time-to-train")


def test_plan_ranks_by_time_to_train(tmp_path):
    path = scenario(tmp_path, recovery="replica", components={"gpu": {"mtbf": "300 h"}})
    res = hwsim("plan", "--from", path, "--objective", "time-to-train", "--max-simulations", 3, "--workers", 1,
                "--top", 3)
    assert res.returncode == 0, res.stderr
    assert "by time-to-train under failures" in res.stdout
