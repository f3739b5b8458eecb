"""The reliability block resolved: the preset's failure mix and recovery times, the scenario's
overrides on top, as plain frozen objects (`ReliabilitySpec`). Preset files are hwsim's data:
a malformed one is a bug of ours (ConfigError saying so)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from hwsim import units
from hwsim.config.reliability import (CheckpointMode, Component, DegradedLinkConfig, Per, RecoveryScope,
                                      ReliabilityConfig, StorageTier)
from hwsim.errors import ConfigError

__all__ = ["ComponentRate", "FailureMix", "StorageTierSpec", "CheckpointSpec", "ReliabilitySpec",
           "load_failure_mix", "load_storage_tier", "resolve_reliability", "FIT_HOURS"]

FIT_HOURS = 1e9   # FIT: failures per 10^9 device-hours (JEDEC JESD85)


@dataclass(frozen=True, slots=True)
class ComponentRate:
    component: Component
    per: Per
    mtbf_s: float        # of one unit
    planned: bool
    source: str


@dataclass(frozen=True, slots=True)
class FailureMix:
    name: str
    description: str
    components: tuple[ComponentRate, ...]
    detection_s: float
    restart_s: float
    sources: dict[str, str]


@dataclass(frozen=True, slots=True)
class StorageTierSpec:
    tier: StorageTier
    per_node: bool                       # True: the bandwidth is each node's; False: the job's
    write_bandwidth_bytes_per_s: float
    read_bandwidth_bytes_per_s: float
    source: str


@dataclass(frozen=True, slots=True)
class CheckpointSpec:
    storage: StorageTierSpec
    interval_s: float | None             # None: the optimum
    mode: CheckpointMode


@dataclass(frozen=True, slots=True)
class ReliabilitySpec:
    mix: str
    components: tuple[ComponentRate, ...]
    detection_s: float
    restart_s: float
    recovery: RecoveryScope
    checkpoint: CheckpointSpec
    degraded_links: tuple[DegradedLinkConfig, ...]


def _read(name: str) -> dict[str, Any]:
    path = resources.files("hwsim").joinpath("presets", "reliability", f"{name}.yaml")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ConfigError(f"presets/reliability/{name}.yaml is not a mapping (a bug in hwsim's data)")
    return data


def _sourced(entry: Any, what: str) -> tuple[Any, str]:
    if not isinstance(entry, dict) or "value" not in entry or len(str(entry.get("source", ""))) < 10:
        raise ValueError(f"{what} needs a value and a source")
    return entry["value"], str(entry["source"])


@cache
def load_failure_mix(name: str) -> FailureMix:
    """presets/reliability/<name>.yaml: counts over an exposure -> per-unit MTBFs."""
    data = _read(name)
    try:
        obs = {key: _sourced(data["observation"][key], f"observation.{key}") for key in ("days", "devices", "nodes",
                                                                                        "nics")}
        exposure_s = float(obs["days"][0]) * units.DAY
        n_units = {Per.DEVICE: float(obs["devices"][0]), Per.NODE: float(obs["nodes"][0]),
                   Per.NIC: float(obs["nics"][0]), Per.JOB: 1.0}
        components = []
        for key, entry in data["components"].items():
            per, count = Per(entry["per"]), float(entry["interruptions"])
            if count <= 0 or len(str(entry.get("source", ""))) < 10:
                raise ValueError(f"components.{key}: a positive count and its source are needed")
            components.append(ComponentRate(Component(key), per, n_units[per] * exposure_s / count,
                                            bool(entry.get("planned", False)), str(entry["source"])))
        detection, detection_src = _sourced(data["recovery"]["detection"], "recovery.detection")
        restart, restart_src = _sourced(data["recovery"]["restart"], "recovery.restart")
        sources = {f"observation.{k}": v[1] for k, v in obs.items()}
        sources |= {"recovery.detection": detection_src, "recovery.restart": restart_src}
        return FailureMix(name, str(data.get("description", "")), tuple(components), units.parse_time(detection),
                          units.parse_time(restart), sources)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"presets/reliability/{name}.yaml is malformed ({exc!r}): a bug in hwsim's data") from None


@cache
def load_storage_tier(tier: StorageTier) -> StorageTierSpec:
    data = _read("storage-tiers")
    try:
        entry = data["tiers"][tier.value]
        write, write_src = _sourced(entry["write_bandwidth"], "write_bandwidth")
        read, _ = _sourced(entry["read_bandwidth"], "read_bandwidth")
        if entry["scope"] not in ("node", "shared"):
            raise ValueError(f"scope {entry['scope']!r} is not node or shared")
        return StorageTierSpec(tier, entry["scope"] == "node", units.parse_rate(write), units.parse_rate(read),
                               write_src)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"presets/reliability/storage-tiers.yaml is malformed for {tier.value} ({exc!r}): "
                          f"a bug in hwsim's data") from None


def resolve_reliability(config: ReliabilityConfig | None) -> ReliabilitySpec:
    """The scenario's block over its preset (an absent block: the default preset, as is)."""
    config = config or ReliabilityConfig()
    mix = load_failure_mix(config.preset)
    rates = {c.component: c for c in mix.components}
    for component, override in config.components.items():
        base = rates.get(component)
        if override.mtbf is None and override.fit is None and base is None:
            raise ConfigError(f"reliability.components.{component.value}: the preset {mix.name} has no rate for "
                              f"{component.value}; give mtbf (e.g. '100000 h') or fit, and per")
        mtbf_s = (override.mtbf if override.mtbf is not None else
                  FIT_HOURS * units.HOUR / override.fit if override.fit is not None else base.mtbf_s)
        per = override.per or (base.per if base else Per.DEVICE)
        planned = override.planned if override.planned is not None else (base.planned if base else False)
        source = "scenario" if (override.mtbf is not None or override.fit is not None) else base.source
        rates[component] = ComponentRate(component, per, mtbf_s, planned, source)
    ordered = tuple(rates[c] for c in Component if c in rates)
    ck = config.checkpoint
    tier = load_storage_tier(ck.storage)
    tier = StorageTierSpec(tier.tier, tier.per_node, ck.write_bandwidth or tier.write_bandwidth_bytes_per_s,
                           ck.read_bandwidth or tier.read_bandwidth_bytes_per_s,
                           tier.source if ck.write_bandwidth is None else "scenario")
    return ReliabilitySpec(
        mix.name, ordered,
        mix.detection_s if config.detection is None else config.detection,
        mix.restart_s if config.restart is None else config.restart,
        config.recovery, CheckpointSpec(tier, ck.interval, ck.mode), config.degraded_links)
