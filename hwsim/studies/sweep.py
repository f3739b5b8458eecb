"""Sweeps (SCENARIO_FORMAT.md, "Sweep files"): a base scenario and axes over its fields.

    name: llama3-70b-network-study
    base: ../llama3-70b-64xh100-fsdp.yaml     # relative to this file, or an inline scenario
    axes:
      cluster.nodes: [8, 16, 32, 64]
      cluster.inter_node.nic_bandwidth: [200 Gb/s, 400 Gb/s, 800 Gb/s]
      parallel.dp: auto                        # unset at every point: hwsim derives it again
    sample: {kind: grid}                       # grid | random (n, seed) | latin-hypercube (n, seed)
    simulation: {granularity: layer}           # optional: op | layer, fold

`load_sweep` checks the file (every axis path against the scenario schema) and draws the
points; `run_sweep` runs the points not yet in the output directory's store on an executor
and stores each as it finishes — its values, its resolved scenario, and its summary or its
error (a plan or config error at one point is recorded and the sweep goes on).
"""

from __future__ import annotations

import copy
import difflib
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hwsim.config.loader import format_validation_error, read_yaml, set_path, shipped_scenario
from hwsim.config.schema import ScenarioConfig
from hwsim.errors import ConfigError, HwsimError
from hwsim.studies.executors import Executor, SerialExecutor
from hwsim.studies.sample import AUTO, Axis, SampleConfig, parse_axis, sample_points
from hwsim.studies.store import PointRecord, ResultStore, json_clean, point_key
from hwsim.workload.compiler import Granularity

__all__ = ["Sweep", "SweepOptions", "PointTask", "SweepOutcome", "load_sweep", "sweep_from_mapping",
           "run_point", "run_sweep", "check_axis_path"]


class SweepOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    granularity: Granularity | None = Field(None, description="op | layer; default: op unless huge")
    fold: bool | None = None


class _SweepFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "sweep"
    base: str | dict[str, Any]
    axes: dict[str, Any] = Field(min_length=1)
    sample: SampleConfig = SampleConfig()
    simulation: SweepOptions = SweepOptions()


@dataclass(frozen=True)
class PointTask:
    """What a worker needs to run one point (picklable)."""

    key: str
    point_index: int
    axes: dict[str, Any]
    mapping: dict[str, Any]
    granularity: str | None
    fold: bool | None


@dataclass(frozen=True)
class Sweep:
    name: str
    axes: tuple[Axis, ...]
    sample: SampleConfig
    options: SweepOptions
    base: dict[str, Any]
    points: tuple[PointTask, ...]      # unique points, in sample order
    n_drawn: int                       # points drawn (a random sample may repeat one)

    @property
    def axis_paths(self) -> list[str]:
        return [a.path for a in self.axes if not a.auto]


@dataclass(frozen=True)
class SweepOutcome:
    records: list[PointRecord]         # every point of the sweep, in point order
    ran: int                           # points simulated by this call
    skipped: int                       # points found done in the store
    failed: int                        # points (of all) that recorded an error
    elapsed_s: float
    files: list[Path]                  # results.parquet and results.csv (when exported)


def check_axis_path(path: str) -> None:
    """Raise ConfigError unless `path` names a field of the scenario schema."""
    model: Any = ScenarioConfig
    parts = path.split(".")
    for i, part in enumerate(parts):
        fields = model.model_fields if isinstance(model, type) and issubclass(model, BaseModel) else None
        if fields is None:
            raise ConfigError(f"axes.{path}: {'.'.join(parts[:i])} is a value, not a mapping; it has no "
                              f"field {part!r}")
        if part not in fields:
            close = difflib.get_close_matches(part, list(fields), n=2, cutoff=0.6)
            hint = f"did you mean {'.'.join(parts[:i] + [close[0]])!r}? " if close else ""
            where = ".".join(parts[:i]) or "the scenario"
            raise ConfigError(f"axes.{path}: unknown field {part!r} in {where}. {hint}Fields there: "
                              f"{', '.join(fields)}")
        model = _inner_model(fields[part].annotation)


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


def _field_default_is_none(path: str) -> bool:
    model: Any = ScenarioConfig
    parts = path.split(".")
    for part in parts[:-1]:
        model = _inner_model(model.model_fields[part].annotation)
    field = model.model_fields[parts[-1]]
    return not field.is_required() and field.default is None


def unset_path(data: dict[str, Any], dotted: str) -> None:
    node: Any = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(parts[-1], None)


def sweep_from_mapping(data: Any, origin: str = "sweep", base_dir: Path | None = None) -> Sweep:
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: a sweep file is a mapping with keys name, base, axes and sample; "
                          f"got {type(data).__name__}")
    try:
        spec = _SweepFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {format_validation_error(exc, _SweepFile)}") from None
    if isinstance(spec.base, str):
        base_path = (base_dir or Path.cwd()) / spec.base
        if not base_path.is_file():
            raise ConfigError(f"{origin}: base: no scenario file {str(base_path)!r}; a base path is relative "
                              f"to the sweep file (or write the scenario inline under base:)")
        base = read_yaml(base_path)
        if not isinstance(base, dict):
            raise ConfigError(f"{base_path}: a scenario must be a YAML mapping")
    else:
        base = copy.deepcopy(spec.base)
    axes = []
    for path, axis_spec in spec.axes.items():
        check_axis_path(path)
        axis = parse_axis(path, axis_spec)
        if axis.auto and not _field_default_is_none(path):
            raise ConfigError(f"axes.{path}: auto unsets the field so hwsim derives it, but {path} has no "
                              f"derived value; give a list of values (auto suits parallel.dp)")
        axes.append(axis)
    values = sample_points(axes, spec.sample)
    varied = [a for a in axes if not a.auto]
    points: dict[str, PointTask] = {}
    gran = spec.simulation.granularity.value if spec.simulation.granularity else None
    for point in values:
        mapping = copy.deepcopy(base)
        for axis in axes:
            if axis.auto:
                unset_path(mapping, axis.path)
        for axis, value in zip(varied, point):
            try:
                set_path(mapping, axis.path, value)
            except ConfigError as exc:
                raise ConfigError(f"axes.{axis.path}: {str(exc).removeprefix(f'--set {axis.path}: ')}") from None
        key = point_key({"scenario": mapping, "simulation": spec.simulation.model_dump(mode="json")})
        if key not in points:
            points[key] = PointTask(key, len(points), {a.path: v for a, v in zip(varied, point)}, mapping,
                                    gran, spec.simulation.fold)
    return Sweep(spec.name, tuple(axes), spec.sample, spec.simulation, base, tuple(points.values()), len(values))


def load_sweep(path: str | Path) -> Sweep:
    origin = str(path)
    path = shipped_scenario(path)   # scenarios/sweeps/... after `pip install`: the packaged copy
    return sweep_from_mapping(read_yaml(path), origin=origin, base_dir=path.resolve().parent)


def run_point(task: PointTask) -> PointRecord:
    """Simulate one point. Never raises: an error is recorded in the result."""
    from hwsim.config.loader import scenario_from_mapping
    from hwsim.simulate import run_step

    start = time.perf_counter()
    scenario_json: dict[str, Any] = json_clean(task.mapping)
    try:
        scenario = scenario_from_mapping(task.mapping, origin=f"point {task.point_index}")
        scenario_json = json_clean(scenario.model_dump(mode="json"))
        summary = json_clean(run_step(scenario, fold=task.fold, granularity=task.granularity).summary)
        error = kind = None
    except HwsimError as exc:
        summary, error, kind = None, str(exc), type(exc).__name__
    except Exception as exc:  # a bug of ours: recorded with where it happened, the sweep goes on
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        summary, error, kind = None, f"{type(exc).__name__}: {exc} (at {tb.filename}:{tb.lineno})", "InternalError"
    return PointRecord(task.key, task.point_index, dict(task.axes), scenario_json, summary, error, kind,
                       time.perf_counter() - start)


def run_sweep(sweep: Sweep, out_dir: str | Path, executor: Executor | None = None,
              on_start: Callable[[int, int], None] | None = None,
              on_point: Callable[[PointRecord], None] | None = None, export: bool = True) -> SweepOutcome:
    """Run the points of `sweep` not yet stored in `out_dir`; store each as it finishes; then
    export the sweep's rows to Parquet and CSV. `on_start(total, already_done)` is called
    once, `on_point(record)` after each point."""
    start = time.perf_counter()
    executor = executor or SerialExecutor()
    with ResultStore(out_dir) as store:
        store.set_meta("sweep", {"name": sweep.name, "axes": sweep.axis_paths,
                                 "sample": sweep.sample.model_dump(mode="json"), "points": len(sweep.points)})
        done = store.done_keys()
        todo = [p for p in sweep.points if p.key not in done]
        if on_start:
            on_start(len(sweep.points), len(sweep.points) - len(todo))
        for record in executor.map_unordered(run_point, todo):
            store.add(record)
            if on_point:
                on_point(record)
        records = store.records([p.key for p in sweep.points])
        files = store.export(records, sweep.axis_paths) if export else []
    return SweepOutcome(records, ran=len(todo), skipped=len(sweep.points) - len(todo),
                        failed=sum(1 for r in records if not r.ok), elapsed_s=time.perf_counter() - start,
                        files=files)


def sweep_axes_text(sweep: Sweep) -> str:
    parts = []
    for a in sweep.axes:
        if a.auto:
            parts.append(f"{a.path}={AUTO}")
        elif a.values is not None:
            parts.append(f"{a.path} ∈ {list(a.values)}")
        else:
            parts.append(f"{a.path} ∈ [{a.range.low:g}, {a.range.high:g}]")
    return "; ".join(parts)
