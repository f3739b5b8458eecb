"""Preset registry: YAML data files shipped in hwsim/presets/<kind>/<name>.yaml.

Presets are data, not code; each number in them carries its source under `sources:`.
An unknown name is an error that suggests close matches and never accepts them.
"""

from __future__ import annotations

import copy

import difflib
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any

import yaml

from hwsim.errors import ConfigError


class PresetKind(StrEnum):
    ACCELERATOR = "accelerators"
    MODEL = "models"
    NODE = "nodes"


def _dir(kind: PresetKind):
    return resources.files("hwsim").joinpath("presets", kind.value)


@cache
def preset_names(kind: PresetKind) -> tuple[str, ...]:
    folder = _dir(kind)
    if not folder.is_dir():
        return ()
    return tuple(sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml")))


@cache
def _load(kind: PresetKind, name: str) -> dict[str, Any]:
    with _dir(kind).joinpath(f"{name}.yaml").open() as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ConfigError(f"preset file {kind.value}/{name}.yaml is not a mapping (a bug in hwsim's data)")
    return data


def load_preset(kind: PresetKind, name: str, field: str) -> dict[str, Any]:
    """The preset's mapping (a fresh copy). `field` is the scenario path, for the error."""
    names = preset_names(kind)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise ConfigError(
            f"{field}: unknown {kind.value[:-1]} preset {name!r}. {hint}Known presets: "
            f"{', '.join(names)}. Use one of them, or write the {kind.value[:-1]} as a mapping of its fields "
            f"(see `hwsim presets {kind.value}`).")
    return copy.deepcopy(_load(kind, name))


