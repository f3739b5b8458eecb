"""A sweep on a real Dask distributed cluster gives exactly the results of local processes."""

import copy
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from hwsim.studies.executors import DaskExecutor, ProcessExecutor
from hwsim.studies.store import ResultStore
from hwsim.studies.sweep import load_sweep, run_sweep
from tests.conftest import SMALL

REPO = Path(__file__).resolve().parents[2]


def write_sweep(tmp_path: Path) -> Path:
    base = copy.deepcopy(SMALL)
    base["training"]["tokens"] = 1e9
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    sweep = {"name": "dask-check", "base": "base.yaml",
             "axes": {"cluster.nodes": [1, 2], "parallel.tp": [2, 3, 4], "parallel.dp": "auto"}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def comparable(records):
    return sorted((r.key, r.point_index, r.axes, r.scenario, r.summary, r.error, r.error_kind) for r in records)


def test_dask_local_cluster_cli_equals_local_processes(tmp_path):
    sweep_file = write_sweep(tmp_path)
    res = subprocess.run([sys.executable, "-m", "hwsim.cli", "sweep", sweep_file, "--executor", "dask",
                          "--workers", "2", "--out", tmp_path / "dask", "--no-plots"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "ran 6, skipped 0" in " ".join(res.stdout.split())
    local = run_sweep(load_sweep(sweep_file), tmp_path / "local", ProcessExecutor(2))
    assert local.failed == 2 and len(local.records) == 6          # tp=3 does not divide the heads: recorded
    dask_frame = pd.read_parquet(tmp_path / "dask" / "results.parquet")
    local_frame = pd.read_parquet(tmp_path / "local" / "results.parquet")
    pd.testing.assert_frame_equal(dask_frame, local_frame)
    assert list(dask_frame["parallel.tp"]) == [2, 3, 4, 2, 3, 4]
    with ResultStore(tmp_path / "dask") as store:
        assert comparable(store.records()) == comparable(local.records)


def test_dask_executor_on_an_existing_scheduler(tmp_path):
    from distributed import LocalCluster

    sweep_file = write_sweep(tmp_path)
    sweep = load_sweep(sweep_file)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        remote = run_sweep(sweep, tmp_path / "remote", DaskExecutor(cluster.scheduler_address))
    local = run_sweep(sweep, tmp_path / "serial")
    assert comparable(remote.records) == comparable(local.records)
    assert remote.ran == 6 and remote.failed == 2
