"""Topology builders: a cluster's devices, switches and NICs as directed links, and routes.

`build_topology(cluster)` turns the scenario's cluster block into a `Topology`: device ids are
global ranks (`node * devices_per_node + local`); switches and NICs are named nodes
("n3.nvswitch", "n3.nic5", "leaf2", "spine0", "rail4"). Every physical link is two directed
`Link`s, one per direction, each with the per-direction bandwidth. A link's achievable rate
(`capacity_bytes_per_s`) is its nominal bandwidth times its tier's efficiency from
presets/network/transports.yaml.

Routes are computed from each builder's structure (no shortest-path search), deterministically
(ECMP by destination port arithmetic, D-mod-k as InfiniBand fat-tree routing does), and cached.
Modelling choices, each a small function below:
- intra-node `switch`: every device to the node's NVSwitch at the per-device bandwidth;
  `ring`: neighbours on a ring, the device's bandwidth split over its two neighbours; `mesh`:
  all pairs, split over the k-1 peers; `pcie`: PCIe switches of `PCIE_DEVICES_PER_SWITCH`
  devices under a root complex, one x16 uplink each.
- a device reaches the network through NIC `local mod nics_per_node` over a PCIe hop sized so
  that it never caps the NIC (its loss is inside the network tier's measured efficiency).
- `fat-tree`: NICs fill leaves of `LEAF_DOWNLINKS` ports in order; each leaf has one uplink to
  each of `LEAF_DOWNLINKS` spines at nic_bandwidth / oversubscription (two levels, the spines
  idealized as large as needed). With `cluster.shared` (hwsim.hardware.shared) the job's nodes
  sit on slots of a larger fabric chosen by its placement, and other jobs' traffic takes its
  share of the leaf-spine links (their capacity here is what is left to this job).
- `rail-optimized`: NIC j of every node on rail switch j; rails joined by spines. Traffic to
  another rail first crosses the node's own fabric to the device on the destination's rail
  (NCCL's PXN), so inter-node traffic stays on one rail.
- `torus`: nodes are the points of a product of cycles (`torus_dims`, default one ring of all
  nodes); each link carries nic_bandwidth per direction and `latency` per hop; NIC j of every
  point forms torus plane j (with one device and one NIC per node, the devices themselves are
  the points); dimension-order routing, the shorter way round each cycle.
`latency` of intra_node is the device-to-device path latency; of inter_node the node-to-node
one (half on each NIC-to-switch link), or per hop on a torus.

Scale-up domains larger than a node (`cluster.nvlink_domain`, e.g. GB200/GB300 NVL72: 18
compute trays of 4 GPUs on one NVLink switch fabric of 72 GPUs): the `switch` fabric is built
per domain ("d3.nvswitch": every device of the domain at its per-device bandwidth, the NVLink
Switch trays idealised as one non-blocking switch), devices of one domain talk over it, and
only traffic between domains leaves through the NICs. `domain_of(device)` is what collectives
group by (hierarchical = within the domain, then across domains).

(About 440 lines: the builders share one link set, naming and path conventions; each builder is
one small function, and splitting them over modules would scatter those conventions.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from functools import cache, cached_property
from importlib import resources
from typing import Callable

import networkx as nx
import numpy as np
import yaml

from hwsim import units
from hwsim.config.schema import ClusterConfig, InterKind, IntraKind
from hwsim.errors import ConfigError
from hwsim.hardware.shared import Background, fabric_slots, shared_background

__all__ = [
    "Tier", "Link", "EfficiencyPoint", "TierTransport", "Transports", "Topology",
    "load_transports", "build_topology", "shared_topology", "LEAF_DOWNLINKS", "PCIE_DEVICES_PER_SWITCH",
]

Node = int | str
Path = list[Node]
PathFn = Callable[[int, int], Path]

LEAF_DOWNLINKS = 32          # NVIDIA Quantum-2 QM9700: 64 NDR ports, half down, half up (datasheet)
PCIE_DEVICES_PER_SWITCH = 2  # DGX A100: 4 PCIe switches, 2 GPUs each (DGX A100 User Guide, "System topology")


class Tier(StrEnum):
    NVLINK = "nvlink"    # NVLink/NVSwitch-like intra-node fabric (also ring and mesh kinds)
    PCIE = "pcie"        # device-to-device over PCIe switches
    NIC = "nic"          # a device's PCIe hop to its NIC
    NETWORK = "network"  # NIC to switch and switch to switch
    ICI = "ici"          # torus links between nodes


@dataclass(frozen=True, slots=True)
class Link:
    src: Node
    dst: Node
    bandwidth_bytes_per_s: float  # nominal, per direction
    latency_s: float
    tier: Tier


@dataclass(frozen=True, slots=True)
class EfficiencyPoint:
    nominal_bandwidth_bytes_per_s: float
    efficiency: float
    source: str
    check: str


@dataclass(frozen=True, slots=True)
class TierTransport:
    points: tuple[EfficiencyPoint, ...]
    step_overhead_s: float
    step_overhead_source: str

    def efficiency(self, port_bandwidth_bytes_per_s: float) -> float:
        """The point whose nominal bandwidth is nearest on a log scale (ties: the lower one)."""
        def distance(p: EfficiencyPoint) -> float:
            return abs(math.log(max(port_bandwidth_bytes_per_s, 1.0) / p.nominal_bandwidth_bytes_per_s))
        return min(self.points, key=distance).efficiency


@dataclass(frozen=True, slots=True)
class Transports:
    tiers: dict[Tier, TierTransport]
    collective_sms: int = 16   # SMs a running collective holds (see transports.yaml)

    def efficiency(self, tier: Tier, port_bandwidth_bytes_per_s: float) -> float:
        return self.tiers[tier].efficiency(port_bandwidth_bytes_per_s)

    def step_overhead_s(self, tier: Tier) -> float:
        return self.tiers[tier].step_overhead_s


@cache
def load_transports() -> Transports:
    """presets/network/transports.yaml, validated (a malformed file is a bug in hwsim's data)."""
    text = resources.files("hwsim").joinpath("presets", "network", "transports.yaml").read_text()
    data = yaml.safe_load(text)
    try:
        tiers = {}
        for tier in Tier:
            entry = data["tiers"][tier.value]
            points = tuple(
                EfficiencyPoint(units.parse_rate(p["nominal_bandwidth"]), float(p["value"]),
                                str(p["source"]), str(p["check"]))
                for p in entry["efficiency"])
            if not points or not all(0 < p.efficiency <= 1 for p in points):
                raise ValueError(f"tier {tier}: efficiencies must be in (0, 1]")
            tiers[tier] = TierTransport(points, units.parse_time(entry["step_overhead"]),
                                        str(entry["step_overhead_source"]))
        collective_sms = int(data["collective_sms"]["value"])
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"presets/network/transports.yaml is malformed ({e!r}): "
                          "a bug in hwsim's data") from e
    return Transports(tiers, collective_sms)


class Topology:
    """A cluster's links, their capacities and routes between devices.

    `route(src, dst)` is the tuple of link ids along the path; `step_latency_s(src, dst)` the
    latency of one algorithm step along it (path latency plus the largest per-step overhead of
    the tiers crossed). Both are cached. `graph` (networkx DiGraph; edges carry `link`,
    `bandwidth_bytes_per_s`, `tier`) is built on first use.
    """

    def __init__(self, *, intra_kind: IntraKind, inter_kind: InterKind | None, links: list[Link],
                 capacity_bytes_per_s: np.ndarray,
                 link_index: dict[tuple[Node, Node], int], n_devices: int, devices_per_node: int,
                 nics_per_node: int, path: PathFn, transports: Transports, domain_size: int = 0):
        self.intra_kind = intra_kind
        self.inter_kind = inter_kind
        self.kind = f"{intra_kind}+{inter_kind}" if inter_kind else f"{intra_kind}"
        self.links = links
        self.capacity_bytes_per_s = capacity_bytes_per_s
        self.n_devices = n_devices
        self.devices_per_node = devices_per_node
        self.n_nodes = n_devices // devices_per_node
        self.domain_size = domain_size or devices_per_node
        self.nics_per_node = nics_per_node
        self.transports = transports
        self._link_index = link_index
        self._path = path
        self._routes: dict[tuple[int, int], tuple[int, ...]] = {}
        self._step_latency: dict[tuple[int, int], float] = {}
        self._overhead_by_link = [transports.step_overhead_s(link.tier) for link in links]
        self.background: Background | None = None   # other jobs' load on shared links (cluster.shared)

    def __repr__(self) -> str:
        return (f"Topology({self.kind}, {self.n_devices} devices, {self.n_nodes} nodes, "
                f"{len(self.links)} links)")

    def node_of(self, device: int) -> int:
        return device // self.devices_per_node

    def domain_of(self, device: int) -> int:
        """The scale-up (NVLink) domain of a device: its node unless nvlink_domain spans nodes."""
        return device // self.domain_size

    @property
    def nics_per_domain(self) -> int:
        return self.nics_per_node * (self.domain_size // self.devices_per_node)

    def local_of(self, device: int) -> int:
        return device % self.devices_per_node

    def nic_of(self, device: int) -> int:
        """Index (within its node) of the NIC the device uses."""
        return self.local_of(device) % max(self.nics_per_node, 1)

    def link_id(self, src: Node, dst: Node) -> int:
        return self._link_index[(src, dst)]

    def route(self, src: int, dst: int) -> tuple[int, ...]:
        key = (src, dst)
        found = self._routes.get(key)
        if found is None:
            if not (0 <= src < self.n_devices and 0 <= dst < self.n_devices):
                raise ValueError(f"route({src}, {dst}): devices are 0..{self.n_devices - 1}")
            if src == dst:
                found = ()
            else:
                path, index = self._path(src, dst), self._link_index
                found = tuple(index[(path[i], path[i + 1])] for i in range(len(path) - 1))
            self._routes[key] = found
        return found

    def step_latency_s(self, src: int, dst: int) -> float:
        key = (src, dst)
        found = self._step_latency.get(key)
        if found is None:
            route = self.route(src, dst)
            found = (sum(self.links[i].latency_s for i in route)
                     + max((self._overhead_by_link[i] for i in route), default=0.0))
            self._step_latency[key] = found
        return found

    @cached_property
    def graph(self) -> nx.DiGraph:
        graph = nx.DiGraph(kind=self.kind)
        graph.add_nodes_from(range(self.n_devices))
        graph.add_edges_from(
            (link.src, link.dst, {"link": i, "bandwidth_bytes_per_s": link.bandwidth_bytes_per_s,
                                  "tier": link.tier})
            for i, link in enumerate(self.links))
        return graph


class _LinkSet:
    """Links being built: each physical link as two directed links with their capacity."""

    def __init__(self, transports: Transports):
        self.transports = transports
        self.links: list[Link] = []
        self.capacity: list[float] = []
        self.index: dict[tuple[Node, Node], int] = {}

    def add_pair(self, u: Node, v: Node, bandwidth: float, latency_s: float, tier: Tier,
                 port_bandwidth: float) -> None:
        """Both directions of one physical link; `port_bandwidth` picks the efficiency point."""
        capacity = bandwidth * self.transports.efficiency(tier, port_bandwidth)
        for a, b in ((u, v), (v, u)):
            self.index[(a, b)] = len(self.links)
            self.links.append(Link(a, b, bandwidth, latency_s, tier))
            self.capacity.append(capacity)


# ---- intra-node builders: each adds one node's links and returns nothing; paths by arithmetic

def _add_switch(ls: _LinkSet, node: int, devices: range, bw: float, lat: float) -> None:
    for d in devices:
        ls.add_pair(d, f"n{node}.nvswitch", bw, lat / 2, Tier.NVLINK, bw)


def _add_ring(ls: _LinkSet, node: int, devices: range, bw: float, lat: float) -> None:
    k = len(devices)
    if k < 2:
        return
    per_link = bw if k == 2 else bw / 2
    for i in range(k if k > 2 else 1):
        ls.add_pair(devices[i], devices[(i + 1) % k], per_link, lat, Tier.NVLINK, bw)


def _add_mesh(ls: _LinkSet, node: int, devices: range, bw: float, lat: float) -> None:
    k = len(devices)
    for i in range(k):
        for j in range(i + 1, k):
            ls.add_pair(devices[i], devices[j], bw / (k - 1), lat, Tier.NVLINK, bw)


def _add_pcie(ls: _LinkSet, node: int, devices: range, bw: float, lat: float) -> None:
    n_switches = -(-len(devices) // PCIE_DEVICES_PER_SWITCH)
    for i, d in enumerate(devices):
        ls.add_pair(d, f"n{node}.pcie{i // PCIE_DEVICES_PER_SWITCH}", bw, lat / 2, Tier.PCIE, bw)
    if n_switches > 1:
        for s in range(n_switches):
            ls.add_pair(f"n{node}.pcie{s}", f"n{node}.pcie-root", bw, 0.0, Tier.PCIE, bw)


def _intra_path(kind: IntraKind, dpn: int) -> PathFn:
    def switch(a: int, b: int) -> Path:
        return [a, f"n{a // dpn}.nvswitch", b]

    def ring(a: int, b: int) -> Path:
        base, la, lb = a - a % dpn, a % dpn, b % dpn
        forward = (lb - la) % dpn
        step, hops = (1, forward) if forward <= dpn - forward else (-1, dpn - forward)
        return [base + (la + step * i) % dpn for i in range(hops + 1)]

    def mesh(a: int, b: int) -> Path:
        return [a, b]

    def pcie(a: int, b: int) -> Path:
        node = a // dpn
        sa, sb = (a % dpn) // PCIE_DEVICES_PER_SWITCH, (b % dpn) // PCIE_DEVICES_PER_SWITCH
        if sa == sb:
            return [a, f"n{node}.pcie{sa}", b]
        return [a, f"n{node}.pcie{sa}", f"n{node}.pcie-root", f"n{node}.pcie{sb}", b]

    return {IntraKind.SWITCH: switch, IntraKind.RING: ring, IntraKind.MESH: mesh,
            IntraKind.PCIE: pcie}[kind]


_INTRA_BUILDERS = {IntraKind.SWITCH: _add_switch, IntraKind.RING: _add_ring,
                   IntraKind.MESH: _add_mesh, IntraKind.PCIE: _add_pcie}


# ---- inter-node builders: each adds every node's NIC-side links and returns the inter-node path

def _nic(node: int, j: int) -> str:
    return f"n{node}.nic{j}"


def _add_nic_attachments(ls: _LinkSet, cluster: ClusterConfig, n_nics: int) -> None:
    inter = cluster.inter_node
    bw = max(cluster.accelerator.host_bandwidth, inter.nic_bandwidth)
    dpn = cluster.devices_per_node
    for node in range(cluster.nodes):
        for local in range(dpn):
            ls.add_pair(node * dpn + local, _nic(node, local % n_nics), bw, 0.0, Tier.NIC, bw)


def _build_fat_tree(ls: _LinkSet, cluster: ClusterConfig, n_nics: int, intra: PathFn) -> PathFn:
    inter, dpn = cluster.inter_node, cluster.devices_per_node
    nic_bw = inter.nic_bandwidth
    # the node's slot on the fabric: itself, unless the fabric is shared (hwsim.hardware.shared)
    slot, n_slots = fabric_slots(cluster)
    n_leaves = -(-n_slots * n_nics // LEAF_DOWNLINKS)
    for node in range(cluster.nodes):
        for j in range(n_nics):
            g = slot[node] * n_nics + j
            ls.add_pair(_nic(node, j), f"leaf{g // LEAF_DOWNLINKS}", nic_bw, inter.latency / 2,
                        Tier.NETWORK, nic_bw)
    if n_leaves > 1:
        up_bw = nic_bw / inter.oversubscription
        for leaf in range(n_leaves):
            for s in range(LEAF_DOWNLINKS):
                ls.add_pair(f"leaf{leaf}", f"spine{s}", up_bw, 0.0, Tier.NETWORK, nic_bw)

    def path(a: int, b: int) -> Path:
        na, nb = a // dpn, b // dpn
        ga, gb = slot[na] * n_nics + (a % dpn) % n_nics, slot[nb] * n_nics + (b % dpn) % n_nics
        la, lb = ga // LEAF_DOWNLINKS, gb // LEAF_DOWNLINKS
        middle = [f"leaf{la}"] if la == lb else [f"leaf{la}", f"spine{gb % LEAF_DOWNLINKS}", f"leaf{lb}"]
        return [a, _nic(na, ga - slot[na] * n_nics), *middle, _nic(nb, gb - slot[nb] * n_nics), b]
    return path


def _build_rail_optimized(ls: _LinkSet, cluster: ClusterConfig, n_nics: int, intra: PathFn) -> PathFn:
    inter, dpn = cluster.inter_node, cluster.devices_per_node
    nic_bw = inter.nic_bandwidth
    for node in range(cluster.nodes):
        for j in range(n_nics):
            ls.add_pair(_nic(node, j), f"rail{j}", nic_bw, inter.latency / 2, Tier.NETWORK, nic_bw)
    if n_nics > 1:
        n_spines = min(cluster.nodes, LEAF_DOWNLINKS)
        up_bw = cluster.nodes * nic_bw / (inter.oversubscription * n_spines)
        for j in range(n_nics):
            for s in range(n_spines):
                ls.add_pair(f"rail{j}", f"spine{s}", up_bw, 0.0, Tier.NETWORK, nic_bw)

    def path(a: int, b: int) -> Path:
        na, nb, rail = a // dpn, b // dpn, (b % dpn) % n_nics
        head: Path = [a]
        if (a % dpn) % n_nics != rail:  # PXN: first to the device of this node on b's rail
            head = intra(a, na * dpn + rail)
        return [*head, _nic(na, rail), f"rail{rail}", _nic(nb, rail), b]
    return path


def _build_torus(ls: _LinkSet, cluster: ClusterConfig, n_nics: int, intra: PathFn) -> PathFn:
    inter, dpn = cluster.inter_node, cluster.devices_per_node
    dims = tuple(inter.torus_dims) if inter.torus_dims else (cluster.nodes,)
    if math.prod(dims) != cluster.nodes:
        raise ConfigError(f"cluster.inter_node.torus_dims {list(dims)} has {math.prod(dims)} points but "
                          f"cluster.nodes is {cluster.nodes}: make their product equal the node count")
    strides = [math.prod(dims[d + 1:]) for d in range(len(dims))]
    direct = dpn == 1 and n_nics == 1  # the devices themselves are the torus points

    def endpoint(point: int, plane: int) -> Node:
        return point if direct else _nic(point, plane)

    for plane in range(n_nics):
        for p in range(cluster.nodes):
            for d, size in enumerate(dims):
                coord = (p // strides[d]) % size
                if size < 2 or (size == 2 and coord == 1):
                    continue
                q = p + (((coord + 1) % size) - coord) * strides[d]
                ls.add_pair(endpoint(p, plane), endpoint(q, plane), inter.nic_bandwidth, inter.latency,
                            Tier.ICI, inter.nic_bandwidth)

    def points(src: int, dst: int) -> list[int]:
        out, p = [src], src
        for d, size in enumerate(dims):
            here, there = (p // strides[d]) % size, (dst // strides[d]) % size
            forward = (there - here) % size
            step, hops = (1, forward) if forward <= size - forward else (-1, size - forward)
            for _ in range(hops):
                coord = (p // strides[d]) % size
                p += (((coord + step) % size) - coord) * strides[d]
                out.append(p)
        return out

    def path(a: int, b: int) -> Path:
        na, nb, plane = a // dpn, b // dpn, (a % dpn) % n_nics
        hops = [endpoint(p, plane) for p in points(na, nb)]
        if direct:
            return hops
        if (b % dpn) % n_nics == plane:
            return [a, *hops, b]
        via = nb * dpn + plane  # the device of b's node on this plane, then the node's fabric
        return [a, *hops, *intra(via, b)]
    return path


_INTER_BUILDERS = {InterKind.FAT_TREE: _build_fat_tree, InterKind.RAIL_OPTIMIZED: _build_rail_optimized,
                   InterKind.TORUS: _build_torus}


def build_topology(cluster: ClusterConfig, transports: Transports | None = None) -> Topology:
    """The cluster's Topology (see the module docstring for the modelling choices)."""
    transports = transports or load_transports()
    dpn, n_nodes = cluster.devices_per_node, cluster.nodes
    if n_nodes > 1 and cluster.inter_node is None:
        raise ConfigError("cluster.inter_node is required when cluster.nodes > 1: add inter_node: "
                          "{kind: fat-tree, nics_per_node: 8, nic_bandwidth: 400 Gb/s}")
    ls = _LinkSet(transports)
    intra_cfg = cluster.intra_node
    dom = cluster.domain_size
    if dom > dpn:   # an NVLink domain across nodes (NVL72): one switch per domain
        if intra_cfg.kind != IntraKind.SWITCH:
            raise ConfigError(f"cluster.nvlink_domain {dom} spans nodes, which needs intra_node.kind: switch")
        for d in range(-(-cluster.n_devices // dom)):
            for dev in range(d * dom, min((d + 1) * dom, cluster.n_devices)):
                ls.add_pair(dev, f"d{d}.nvswitch", intra_cfg.bandwidth, intra_cfg.latency / 2, Tier.NVLINK,
                            intra_cfg.bandwidth)

        def intra(a: int, b: int) -> Path:
            return [a, f"d{a // dom}.nvswitch", b]
    else:
        dom = dpn
        if dpn > 1:
            add_intra = _INTRA_BUILDERS[intra_cfg.kind]
            for node in range(n_nodes):
                add_intra(ls, node, range(node * dpn, (node + 1) * dpn), intra_cfg.bandwidth, intra_cfg.latency)
        intra = _intra_path(intra_cfg.kind, dpn)

    inter_path: PathFn | None = None
    n_nics, inter_kind = 0, None
    if n_nodes > 1:
        inter = cluster.inter_node
        n_nics = min(inter.nics_per_node, dpn)
        if not (inter.kind == InterKind.TORUS and dpn == 1 and n_nics == 1):
            _add_nic_attachments(ls, cluster, n_nics)
        inter_path = _INTER_BUILDERS[inter.kind](ls, cluster, n_nics, intra)
        inter_kind = inter.kind

    def path(a: int, b: int) -> Path:
        if a // dom == b // dom:
            return intra(a, b)
        return inter_path(a, b)

    capacity = np.asarray(ls.capacity, dtype=float)
    background = None
    if cluster.shared is not None and n_nodes > 1:   # other jobs' traffic takes capacity off shared links
        background, capacity = shared_background(
            cluster, n_nics, ls.index, capacity, transports.efficiency(Tier.NETWORK, cluster.inter_node.nic_bandwidth))
    topology = Topology(intra_kind=intra_cfg.kind, inter_kind=inter_kind, links=ls.links,
                    capacity_bytes_per_s=capacity,
                    link_index=ls.index, n_devices=cluster.n_devices, devices_per_node=dpn,
                    nics_per_node=n_nics, path=path, transports=transports, domain_size=dom)
    topology.background = background
    return topology


_SHARED_LIMIT = 4
_shared: dict[str, Topology] = {}


def shared_topology(cluster: ClusterConfig) -> Topology:
    """build_topology(cluster), one object for every run in this process that simulates the
    same cluster (a run's what-ifs, a plan's candidates, a sweep's points), so that its route
    and collective-transfer caches (hwsim.network.collectives) carry over from run to run; worker
    processes forked after a run start with it. Read-only to its users: a changed topology is
    a copy (hwsim.reliability.links.degrade_links)."""
    key = cluster.model_dump_json()
    found = _shared.get(key)
    if found is None:
        if len(_shared) >= _SHARED_LIMIT:
            _shared.pop(next(iter(_shared)))   # the oldest
        found = _shared[key] = build_topology(cluster)
    return found
