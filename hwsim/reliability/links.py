"""Degraded links: a NIC or an NVLink that runs below its bandwidth (trained down, a damaged
cable). The step is simulated on a copy of the cluster's topology whose affected links carry
`bandwidth_frac` of their capacity; the flow-level network model then slows every collective
and pipeline transfer that crosses them, and the synchronous step waits for the slowest.

Which links: `kind: nic` is the device's NIC's two links to the network (NIC to leaf, or rail,
and back); `kind: nvlink` is every intra-node link (tier nvlink) into and out of the device.
"""

from __future__ import annotations

import copy

from hwsim.config.reliability import DegradedLinkConfig, LinkKind
from hwsim.config.schema import ScenarioConfig
from hwsim.errors import ConfigError
from hwsim.hardware.topology import Tier, Topology, build_topology

__all__ = ["degraded_link_ids", "degrade_links", "run_degraded_step"]


def _nic_links(topology: Topology, device: int, field: str) -> tuple[int, ...]:
    graph = topology.graph
    nics = [v for v in graph.successors(device) if graph.edges[device, v]["tier"] == Tier.NIC]
    if not nics:
        raise ConfigError(f"{field}: device {device} has no NIC (a single-node cluster, or a torus whose "
                          f"devices are the points): use kind: nvlink, or a cluster with inter_node")
    nic = nics[0]
    out = [graph.edges[nic, v]["link"] for v in graph.successors(nic) if graph.edges[nic, v]["tier"] == Tier.NETWORK]
    back = [graph.edges[v, nic]["link"] for v in graph.predecessors(nic)
            if graph.edges[v, nic]["tier"] == Tier.NETWORK]
    return tuple(sorted(out + back))


def _nvlink_links(topology: Topology, device: int, field: str) -> tuple[int, ...]:
    graph = topology.graph
    ids = [d["link"] for _, _, d in graph.out_edges(device, data=True) if d["tier"] == Tier.NVLINK]
    ids += [d["link"] for _, _, d in graph.in_edges(device, data=True) if d["tier"] == Tier.NVLINK]
    if not ids:
        raise ConfigError(f"{field}: device {device} has no NVLink-class intra-node link (one device per node, "
                          f"or intra_node kind pcie): use kind: nic")
    return tuple(sorted(ids))


def degraded_link_ids(topology: Topology, link: DegradedLinkConfig, field: str = "reliability.degraded_links"
                      ) -> tuple[int, ...]:
    """The directed link ids `link` names (ConfigError naming `field` if there are none)."""
    if not 0 <= link.device < topology.n_devices:
        raise ConfigError(f"{field}.device: {link.device} is not a device of this cluster; use 0 to "
                          f"{topology.n_devices - 1}")
    if link.kind == LinkKind.NIC:
        return _nic_links(topology, link.device, field)
    return _nvlink_links(topology, link.device, field)


def degrade_links(topology: Topology, links: tuple[DegradedLinkConfig, ...]) -> Topology:
    """A copy of `topology` with each named link's capacity times its bandwidth_frac (routes,
    latencies and nominal bandwidths unchanged)."""
    capacity = topology.capacity_bytes_per_s.copy()
    for i, link in enumerate(links):
        for link_id in degraded_link_ids(topology, link, f"reliability.degraded_links[{i}]"):
            capacity[link_id] *= link.bandwidth_frac
    degraded = copy.copy(topology)
    degraded.capacity_bytes_per_s = capacity
    return degraded


def run_degraded_step(scenario: ScenarioConfig, links: tuple[DegradedLinkConfig, ...], fold: bool | None = None,
                      granularity: str | None = None):
    """hwsim.simulate.run_step on the scenario's topology with `links` degraded."""
    from hwsim.simulate import run_step

    topology = degrade_links(build_topology(scenario.cluster), links)
    return run_step(scenario, fold=fold, granularity=granularity, topology=topology)
