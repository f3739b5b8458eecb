"""Scenario loading: YAML → presets resolved → overrides → validated `ScenarioConfig`.

Steps (STYLE.md): `yaml.safe_load` → apply `a.b.c=value` overrides (values parsed by
`safe_load`) → resolve presets by name, `{preset: name, field: override}` mappings, or inline
mappings → pydantic validation → errors rewritten as one paragraph naming each field path and
the fix. Feasibility of the parallel plan is checked later (hwsim.workload.plan).
"""

from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from hwsim.config.presets import PresetKind, load_preset
from hwsim.config.schema import ScenarioConfig
from hwsim.errors import ConfigError

__all__ = ["load_scenario", "shipped_scenario", "scenario_from_mapping", "apply_overrides", "read_yaml", "format_validation_error"]


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading numbers as YAML 1.2 (and JSON) do: `1e12` and `1.536e12`
    are floats, not strings (YAML 1.1 wants a dot and a signed exponent, `1.536e+12`), so
    `global_batch: 1.536e12` is the integer it names and `tokens: 15e12` a number."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: str | Path) -> Any:
    path = shipped_scenario(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.y*ml"))
        hint = (f"in it ({', '.join(inside[:3])}{', ...' if len(inside) > 3 else ''})" if inside
                else "(ready-made ones are in scenarios/)")
        raise ConfigError(f"{path}: is a directory, not a file. Give the path of a scenario YAML file {hint}.")
    if not path.is_file():
        from hwsim.data import scenarios_dir

        examples = sorted(p.stem for p in scenarios_dir().glob("*.yaml"))
        first = "gpt3-175b-1024xa100" if "gpt3-175b-1024xa100" in examples else (examples or ["NAME"])[0]
        raise ConfigError(f"{path}: no such file. Give the path of a scenario YAML file, or the name of an "
                          f"example hwsim ships ({', '.join(examples)}), e.g. `hwsim run {first}`.")
    try:
        return _load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}. Check the indentation and "
                          f"the quoting on that line.") from None


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`['parallel.tp=4', 'cluster.inter_node.nic_bandwidth=400 Gb/s']` applied to a copy."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: write an override as a dotted path and a value, "
                              f"e.g. --set parallel.tp=4")
        try:
            value = _load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        set_path(data, key.strip(), value)
    return data


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if isinstance(child, str):
            child = {"preset": child}  # overriding a field of a preset named by a string
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {'.'.join(parts[:i + 1])} is not a mapping, so it has no "
                              f"field {parts[i + 1]!r}")
        node[part] = child
        node = child
    node[parts[-1]] = value




def _resolve(value: Any, kind: PresetKind, field: str) -> Any:
    """A preset name, or {preset: name, **overrides}, or an inline mapping."""
    if isinstance(value, str):
        data = load_preset(kind, value, field)
        data.setdefault("name", value)
        return data
    if isinstance(value, dict) and "preset" in value:
        name = value["preset"]
        if not isinstance(name, str):
            raise ConfigError(f"{field}.preset: must be a preset name, got {name!r}")
        data = load_preset(kind, name, f"{field}.preset")
        overrides = {k: v for k, v in value.items() if k != "preset"}
        for key, val in overrides.items():
            if isinstance(val, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **val}
            else:
                data[key] = val
        # numbers overridden here no longer come from the preset's sources
        if isinstance(data.get("sources"), dict):
            data["sources"] = {k: v for k, v in data["sources"].items() if k.split(".")[0] not in overrides}
        data.setdefault("name", name)
        return data
    return value


def _resolve_presets(data: dict[str, Any]) -> dict[str, Any]:
    cluster = data.get("cluster")
    if isinstance(cluster, dict):
        if "preset" in cluster:  # a node preset: devices_per_node, intra_node, inter_node
            cluster = _resolve(cluster, PresetKind.NODE, "cluster")
            cluster.pop("name", None)
            cluster.pop("sources", None)
            cluster.pop("description", None)
            data["cluster"] = cluster
        if "accelerator" in cluster:
            cluster["accelerator"] = _resolve(cluster["accelerator"], PresetKind.ACCELERATOR, "cluster.accelerator")
            acc = cluster["accelerator"]
            if isinstance(acc, dict) and not acc.get("kernel_profile"):
                acc.setdefault("kernel_profile", "")
        groups = cluster.get("groups")
        if isinstance(groups, list):   # mixed devices: each group's accelerator; the first's is the cluster's
            for i, g in enumerate(groups):
                if isinstance(g, dict) and "accelerator" in g:
                    g["accelerator"] = _resolve(g["accelerator"], PresetKind.ACCELERATOR,
                                                f"cluster.groups.{i}.accelerator")
                    if isinstance(g["accelerator"], dict):
                        g["accelerator"].setdefault("kernel_profile", "")
            first = groups[0] if groups and isinstance(groups[0], dict) else {}
            if "accelerator" not in cluster and "accelerator" in first:
                cluster["accelerator"] = copy.deepcopy(first["accelerator"])
            if "nodes" not in cluster and groups and all(isinstance(g, dict) and isinstance(g.get("nodes"), int) for g in groups):
                cluster["nodes"] = sum(g["nodes"] for g in groups)
    if "model" in data:
        data["model"] = _resolve(data["model"], PresetKind.MODEL, "model")
    return data


def scenario_from_mapping(data: Any, overrides: list[str] | tuple[str, ...] = (),
                          origin: str = "scenario") -> ScenarioConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: a scenario must be a YAML mapping with keys cluster, model, "
                          f"parallel and training; got {type(data).__name__}")
    data = apply_overrides(data, overrides)
    data = _resolve_presets(data)
    try:
        return ScenarioConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {format_validation_error(exc, ScenarioConfig)}") from None


def load_scenario(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ScenarioConfig:
    """A scenario file; `gpt3-175b-1024xa100` or `scenarios/gpt3-175b-1024xa100.yaml` that is not
    there (an installed hwsim, run outside a checkout) is the example scenario hwsim ships."""
    return scenario_from_mapping(read_yaml(path), overrides, origin=str(path))


def shipped_scenario(path: str | Path) -> Path:
    """`path` itself when it exists; else, when it names an example hwsim ships (a bare name such
    as `gpt3-175b-1024xa100`, or a relative path under scenarios/ such as
    `scenarios/sweeps/llama3-70b-network.yaml`), that file in the package (hwsim.data.scenarios_dir(),
    so the README's commands work after `pip install`, outside a checkout); else `path`."""
    path = Path(path)
    parts = path.parts
    if path.exists() or path.is_absolute() or not (len(parts) == 1 or parts[0] == "scenarios"):
        return path
    from hwsim.data import scenarios_dir

    rest = Path(*parts[1:]) if parts[0] == "scenarios" and len(parts) > 1 else path
    if rest.suffix not in (".yaml", ".yml"):
        rest = rest.with_name(rest.name + ".yaml")
    shipped = scenarios_dir() / rest
    return shipped if shipped.is_file() else path


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that holds the field at `loc` (for listing allowed keys)."""
    model: Any = root
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model = _inner_model(field.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


def format_validation_error(exc: ValidationError, root: type[BaseModel]) -> str:
    parts = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        path = ".".join(str(p) for p in loc) or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            parent = _model_at(root, loc[:-1])
            allowed = list(parent.model_fields) if parent else []
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=2, cutoff=0.6)
            hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
            parts.append(f"{path}: unknown key. {hint}Allowed keys here: {', '.join(allowed)}")
        elif kind == "missing":
            parts.append(f"{path}: required but missing; add it")
        elif kind == "enum":
            expected = err.get("ctx", {}).get("expected", "")
            parts.append(f"{path}: {err['input']!r} is not allowed; use one of {expected}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"{path}: {msg} (got {err.get('input')!r})" if "input" in err and not isinstance(
                err.get("input"), dict) else f"{path}: {msg}")
    return "; ".join(parts) + "."
