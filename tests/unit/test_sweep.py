"""Sweeps: sampling, sweep files, the result store, resuming, executors, Pareto fronts."""

import copy
import sqlite3
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import yaml

from hwsim.errors import ConfigError
from hwsim.studies.executors import ProcessExecutor, SerialExecutor, make_executor
from hwsim.studies.plots import pareto_front, plot_sweep, value_at
from hwsim.studies.sample import RangeAxis, SampleConfig, SampleKind, latin_hypercube_unit, parse_axis, sample_points
from hwsim.studies.store import PointRecord, ResultStore, metric_columns
from hwsim.studies.sweep import check_axis_path, load_sweep, run_sweep, sweep_from_mapping
from tests.conftest import SMALL


def sweep_dict(**over):
    d = {"name": "t", "base": copy.deepcopy(SMALL),
         "axes": {"cluster.nodes": [1, 2], "parallel.tp": [2, 3], "parallel.dp": "auto"}}
    d.update(over)
    return d


# --- sampling -----------------------------------------------------------------------------------

def test_grid_is_the_cross_product_last_axis_fastest():
    axes = [parse_axis("a", [1, 2, 3]), parse_axis("b", ["x", "y"]), parse_axis("c", "auto")]
    pts = sample_points(axes, SampleConfig())
    assert pts == [(1, "x"), (1, "y"), (2, "x"), (2, "y"), (3, "x"), (3, "y")]


def test_range_grid_log_and_integer():
    assert RangeAxis(low=1, high=8, n=4, scale="log").grid("a") == pytest.approx([1, 2, 4, 8])
    assert RangeAxis(low=0, high=10, n=3, integer=True).grid("a") == [0, 5, 10]
    with pytest.raises(ConfigError, match="needs n"):
        RangeAxis(low=1, high=2).grid("x.y")


def test_random_sample_is_seeded_and_draws_from_the_lists():
    axes = [parse_axis("a", [1, 2, 3]), parse_axis("b", {"low": 10, "high": 20})]
    s = SampleConfig(kind="random", n=50, seed=7)
    pts = sample_points(axes, s)
    assert pts == sample_points(axes, s)
    assert pts != sample_points(axes, SampleConfig(kind="random", n=50, seed=8))
    assert {p[0] for p in pts} == {1, 2, 3}
    assert all(10 <= p[1] < 20 for p in pts)


def test_latin_hypercube_uses_every_stratum_once():
    u = latin_hypercube_unit(20, 3, np.random.default_rng(0))
    for j in range(3):
        assert sorted(np.floor(u[:, j] * 20).astype(int)) == list(range(20))
    # a list of 3 values over 6 points: each value exactly twice
    pts = sample_points([parse_axis("a", ["p", "q", "r"]), parse_axis("b", [1, 2])],
                        SampleConfig(kind=SampleKind.LATIN_HYPERCUBE, n=6, seed=3))
    assert Counter(p[0] for p in pts) == {"p": 2, "q": 2, "r": 2}
    assert Counter(p[1] for p in pts) == {1: 3, 2: 3}


def test_random_sample_needs_n():
    with pytest.raises(ConfigError, match="sample.n"):
        sweep_from_mapping(sweep_dict(sample={"kind": "random"}))


# --- sweep files --------------------------------------------------------------------------------

def test_unknown_axis_path_names_the_field_and_suggests():
    with pytest.raises(ConfigError, match=r"axes\.cluster\.node: unknown field 'node'.*'cluster\.nodes'"):
        check_axis_path("cluster.node")
    with pytest.raises(ConfigError, match="is a value, not a mapping"):
        check_axis_path("cluster.nodes.x")
    check_axis_path("cluster.accelerator.hbm")
    check_axis_path("cluster.inter_node.nic_bandwidth")


def test_auto_only_on_derived_fields():
    with pytest.raises(ConfigError, match="parallel.tp.*no derived value"):
        sweep_from_mapping(sweep_dict(axes={"parallel.tp": "auto"}))


def test_bad_axis_spec_and_bad_file():
    with pytest.raises(ConfigError, match="axes.parallel.tp"):
        sweep_from_mapping(sweep_dict(axes={"parallel.tp": 4}))
    with pytest.raises(ConfigError, match="axes.parallel.tp: an empty list"):
        sweep_from_mapping(sweep_dict(axes={"parallel.tp": []}))
    with pytest.raises(ConfigError, match="unknown key"):
        sweep_from_mapping(sweep_dict(axis={"parallel.tp": [1]}))
    with pytest.raises(ConfigError, match="a sweep file is a mapping"):
        sweep_from_mapping([1, 2])


def test_base_path_is_relative_to_the_sweep_file(tmp_path):
    (tmp_path / "scen").mkdir()
    (tmp_path / "scen" / "small.yaml").write_text(yaml.safe_dump(SMALL))
    (tmp_path / "sweeps").mkdir()
    f = tmp_path / "sweeps" / "s.yaml"
    f.write_text(yaml.safe_dump({"base": "../scen/small.yaml", "axes": {"training.micro_batch": [1, 2, 4]}}))
    sw = load_sweep(f)
    assert [p.mapping["training"]["micro_batch"] for p in sw.points] == [1, 2, 4]
    assert sw.points[0].mapping["model"] == SMALL["model"]
    f.write_text(yaml.safe_dump({"base": "missing.yaml", "axes": {"training.micro_batch": [1]}}))
    with pytest.raises(ConfigError, match="relative to the sweep file"):
        load_sweep(f)


def test_auto_unsets_the_field_and_repeated_points_run_once():
    sw = sweep_from_mapping(sweep_dict())
    assert len(sw.points) == 4
    assert all("dp" not in p.mapping["parallel"] for p in sw.points)
    rnd = sweep_from_mapping(sweep_dict(axes={"parallel.tp": [1, 2]}, sample={"kind": "random", "n": 20}))
    assert rnd.n_drawn == 20 and len(rnd.points) == 2
    assert len({p.key for p in rnd.points}) == 2


# --- running and storing ------------------------------------------------------------------------

def test_run_sweep_records_summaries_and_errors(tmp_path):
    sw = sweep_from_mapping(sweep_dict())
    out = run_sweep(sw, tmp_path, SerialExecutor())
    assert (out.ran, out.skipped, out.failed) == (4, 0, 2)
    by = {(r.axes["cluster.nodes"], r.axes["parallel.tp"]): r for r in out.records}
    bad = by[(1, 3)]
    assert bad.error_kind == "PlanError" and "parallel.tp" in bad.error and bad.summary is None
    for nodes in (1, 2):
        r = by[(nodes, 2)]
        assert r.ok
        s = r.summary
        assert s["devices"] == 8 * nodes
        assert s["plan"]["dp"] == 8 * nodes // (2 * 2)          # dp re-derived: devices / (tp·pp)
        assert s["tokens_per_step"] == 32 * 1024                 # global_batch · seq_len
        assert r.scenario["cluster"]["nodes"] == nodes           # the resolved scenario is stored
        assert r.scenario["cluster"]["accelerator"]["hbm"] == 80e9


def test_rerun_resumes_and_an_edited_base_reruns(tmp_path):
    sw = sweep_from_mapping(sweep_dict())
    first = run_sweep(sw, tmp_path)
    again = run_sweep(sw, tmp_path)
    assert (again.ran, again.skipped) == (0, 4)
    assert [r.summary for r in again.records] == [r.summary for r in first.records]
    edited = sweep_dict()
    edited["base"]["training"]["global_batch"] = 64
    changed = run_sweep(sweep_from_mapping(edited), tmp_path)
    assert (changed.ran, changed.skipped) == (4, 0)
    with ResultStore(tmp_path) as store:
        assert len(store.records()) == 8


def test_store_refuses_a_point_twice_and_exports(tmp_path):
    rec = PointRecord("k1", 0, {"a": 1}, {"x": 1}, {"step_time_s": 2.0, "devices": 8}, None, None, 0.1)
    err = PointRecord("k2", 1, {"a": "auto"}, {"x": 2}, None, "boom", "PlanError", 0.1)
    with ResultStore(tmp_path) as store:
        store.add(rec)
        store.add(err)
        with pytest.raises(sqlite3.IntegrityError):
            store.add(rec)
        assert store.records(["k2", "k1", "nope"]) == [err, rec]
        parquet, csv = store.export(store.records(), ["a"])
    frame = pd.read_parquet(parquet)
    assert list(frame["key"]) == ["k1", "k2"]
    assert list(frame["a"]) == ["1", "auto"]          # mixed types kept as text
    assert frame["step_time_s"].iloc[0] == 2.0 and frame["error_kind"].iloc[1] == "PlanError"
    assert set(metric_columns()) <= set(frame.columns)
    assert "scenario_json" not in pd.read_csv(csv).columns


def test_plots_and_pareto(tmp_path):
    assert pareto_front([(1, 5), (2, 4), (3, 4), (2, 6), (4, 1)]) == [0, 1, 4]
    assert value_at({"a": {"b": 3}}, "a.b") == 3 and value_at({"a": 1}, "a.b") is None
    sw = sweep_from_mapping(sweep_dict(base={**copy.deepcopy(SMALL), "training": {**SMALL["training"], "tokens": 1e9}},
                                       axes={"cluster.nodes": [1, 2], "parallel.dp": "auto"}))
    out = run_sweep(sw, tmp_path)
    files = plot_sweep(out.records, sw.axis_paths, tmp_path / "plots")
    names = {f.name for f in files}
    assert {"tokens_per_s-vs-cluster.nodes.png", "throughput-vs-devices.png", "cost-vs-time-to-train.png"} <= names
    assert all(f.stat().st_size > 1000 for f in files)


# --- executors ----------------------------------------------------------------------------------

def _square(x):
    return x * x


def test_executors_pull_items_lazily():
    """The loop ProcessExecutor and DaskExecutor share keeps `slots` items running and pulls the next
    only when one finishes (threads here: the same loop, without the cost of spawning processes)."""
    from concurrent.futures import ThreadPoolExecutor

    from hwsim.studies.executors import _drain

    pulled = []

    def items():
        for i in range(6):
            pulled.append(i)
            yield i

    got = []
    with ThreadPoolExecutor(2) as pool:
        source = items()
        running = {pool.submit(_square, next(source))}
        for result in _drain(pool.submit, running, source, 2, _square):
            if not got:
                assert len(pulled) <= 3      # at most `slots` running, plus the one just pulled
            got.append(result)
    assert sorted(got) == [0, 1, 4, 9, 16, 25] and pulled == list(range(6))
    assert list(SerialExecutor().map_unordered(_square, [])) == []
    assert list(ProcessExecutor(1).map_unordered(_square, iter([3]))) == [9]     # one worker: in process


def test_make_executor_errors():
    with pytest.raises(ConfigError, match="--executor: 'spark'.*local, dask"):
        make_executor("spark")
    with pytest.raises(ConfigError, match="--scheduler"):
        make_executor("local", 2, "tcp://x:1")
    with pytest.raises(ConfigError, match="--workers"):
        make_executor("local", 0)


def test_sweep_command_user_errors(tmp_path):
    from hwsim.studies.commands import sweep as sweep_command

    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(sweep_dict(axes={"cluster.nodez": [1, 2]})))
    with pytest.raises(ConfigError, match="axes.cluster.nodez.*'cluster.nodes'"):
        sweep_command(f, executor="local", workers=1, scheduler=None, out=tmp_path / "o", plots=False)
    with pytest.raises(ConfigError, match="--executor"):
        sweep_command(f, executor="ray", workers=1, scheduler=None, out=tmp_path / "o", plots=False)
    f.write_text("axes: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        sweep_command(f, executor="local", workers=1, scheduler=None, out=tmp_path / "o", plots=False)
