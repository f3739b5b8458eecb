"""Failure rates on the scenario's cluster: each component's per-unit rate times the cluster's
count of that unit (independent units, exponential times between failures, so rates add).

    rate_per_s = n_units / mtbf_s        job MTBF = 1 / sum of the rates
"""

from __future__ import annotations

from dataclasses import dataclass

from hwsim import units
from hwsim.config.reliability import Component, Per
from hwsim.config.schema import ClusterConfig, InterKind
from hwsim.hardware.topology import LEAF_DOWNLINKS
from hwsim.reliability.spec import ComponentRate

__all__ = ["ComponentLoad", "unit_counts", "component_loads", "interruptions_per_day", "job_mtbf_s"]


@dataclass(frozen=True, slots=True)
class ComponentLoad:
    """One component's failures on this cluster."""

    component: Component
    per: Per
    n_units: int
    mtbf_s: float          # of one unit
    rate_per_s: float      # of the whole cluster
    planned: bool
    source: str

    @property
    def per_day(self) -> float:
        return self.rate_per_s * units.DAY


def _switches(cluster: ClusterConfig, n_nics: int) -> int:
    """Network switches of hwsim's fabric (hwsim.hardware.topology): fat-tree leaves of
    LEAF_DOWNLINKS ports and, past one leaf, LEAF_DOWNLINKS spines; rail-optimized: one switch
    per rail and up to LEAF_DOWNLINKS spines; a torus has none."""
    inter = cluster.inter_node
    if cluster.nodes == 1 or inter is None or inter.kind == InterKind.TORUS:
        return 0
    if inter.kind == InterKind.FAT_TREE:
        leaves = -(-cluster.nodes * n_nics // LEAF_DOWNLINKS)
        return leaves + (LEAF_DOWNLINKS if leaves > 1 else 0)
    return n_nics + (min(cluster.nodes, LEAF_DOWNLINKS) if n_nics > 1 else 0)


def unit_counts(cluster: ClusterConfig) -> dict[Per, int]:
    """How many of each unit the cluster has (NICs and switches only with an inter-node network)."""
    n_nics = (min(cluster.inter_node.nics_per_node, cluster.devices_per_node)
              if cluster.nodes > 1 and cluster.inter_node is not None else 0)
    return {Per.DEVICE: cluster.n_devices, Per.NODE: cluster.nodes, Per.NIC: n_nics * cluster.nodes,
            Per.SWITCH: _switches(cluster, n_nics), Per.JOB: 1}


def component_loads(cluster: ClusterConfig, rates: tuple[ComponentRate, ...]) -> tuple[ComponentLoad, ...]:
    counts = unit_counts(cluster)
    return tuple(ComponentLoad(r.component, r.per, counts[r.per], r.mtbf_s, counts[r.per] / r.mtbf_s, r.planned,
                               r.source) for r in rates)


def interruptions_per_day(loads: tuple[ComponentLoad, ...]) -> float:
    return sum(load.per_day for load in loads)


def job_mtbf_s(loads: tuple[ComponentLoad, ...], planned: bool = True) -> float:
    """Mean time between interruptions of the job (planned ones too unless `planned` is False)."""
    rate = sum(load.rate_per_s for load in loads if planned or not load.planned)
    return float("inf") if rate <= 0 else 1.0 / rate
