"""Collective algorithms as the flows they send: a collective becomes one Transfer per phase.

`collective_transfers(topology, op, groups, size_bytes, algorithm)` returns the phases (run in
sequence) of `groups`, device groups that run the same collective at the same time (their flows
share each phase's Transfer, so mirror groups contend for NICs). Sizes follow nccl-tests
(all-reduce: the buffer; all-gather: the output; reduce-scatter: the input; all-to-all: the
per-rank send buffer; broadcast: the buffer, the root is each group's first device; send-recv:
the bytes sent, each group a [src, dst] pair).

Fluid steady state, pipelined (NCCL-like):
- ring: one phase; each rank sends 2(n-1)/n*S (all-reduce) or (n-1)/n*S (reduce-scatter,
  all-gather) to its successor, split over channels: for a group spanning nodes, one ring per
  NIC the group uses, each rotated within every node so that it leaves the node by a different
  NIC; within a node, a ring and its reverse (both directions of ring fabrics). Broadcast is the
  pipelined chain from the root.
- tree (all-reduce): NCCL's double binary tree over nodes (heap order and its mirror, each tree
  carrying half), chains inside nodes, one set per channel; every edge carries its share up and
  down, in one phase.
- direct: every pair at once (all-to-all S/n per pair; reduce-scatter and all-gather S/n per
  pair; all-reduce = direct reduce-scatter then direct all-gather; broadcast root to all).
- hierarchical (all-reduce, reduce-scatter, all-gather; needs the same number of members on
  every node): intra-node ring reduce-scatter, inter-node ring collective of the 1/m shard among
  same-position devices (the rails), intra-node all-gather.
"Node" here is the scale-up domain (`topology.domain_of`): the host by default, the whole NVLink
domain when `cluster.nvlink_domain` spans hosts (NVL72), so hierarchical means intra-domain
then inter-domain, and a group inside one domain never touches a NIC.
A phase's latency is its sequential steps, each path latency + the per-step overhead of the
tiers crossed (topology.step_latency_s), summed along the ring or tree (the largest over groups).

NCCL's all-to-all on device-to-NVSwitch links runs at the tier's measured all-to-all efficiency
(transports.yaml `all_to_all_efficiency`; NCCL's alltoall is below its ring there): its bytes on
those links are scaled by efficiency / all-to-all efficiency, so that the link, whose capacity is
the ring's, carries it at the all-to-all's rate. The fused all-to-all (DeepEP-style kernels)
keeps the ring's efficiency.
AUTO: all-to-all and send-recv direct; broadcast ring; groups within one node ring (direct too
on a mesh fabric, whichever is faster); groups spanning nodes the faster of multi-ring and
hierarchical, each evaluated alone (time = latency + S * max_l(bytes_l / capacity_l)).
Per-byte templates are cached per topology by (op, groups, algorithm) and scaled by the size.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Callable, Sequence

import yaml

from hwsim import units
from hwsim.config.schema import IntraKind
from hwsim.errors import ConfigError
from hwsim.hardware.topology import Tier, Topology
from hwsim.network.transfer import NetworkModel, Transfer

__all__ = ["CollectiveOp", "Algorithm", "collective_transfers", "collective_time", "choose_algorithm",
           "bus_bandwidth_factor"]


class CollectiveOp(StrEnum):
    ALL_REDUCE = "all-reduce"
    REDUCE_SCATTER = "reduce-scatter"
    ALL_GATHER = "all-gather"
    ALL_TO_ALL = "all-to-all"
    # the same flows as all-to-all, sent by fused kernels that write into the peers' memory
    # (DeepEP / HybridEP, Megatron-Core's flex dispatcher) instead of NCCL's grouped send/recv:
    # they run at the link's ring efficiency (transports.yaml, all_to_all_efficiency check)
    ALL_TO_ALL_FUSED = "all-to-all-fused"
    BROADCAST = "broadcast"
    SEND_RECV = "send-recv"


class Algorithm(StrEnum):
    RING = "ring"
    TREE = "tree"
    DIRECT = "direct"
    HIERARCHICAL = "hierarchical"
    AUTO = "auto"


_SUPPORTED = {
    Algorithm.RING: {CollectiveOp.ALL_REDUCE, CollectiveOp.REDUCE_SCATTER, CollectiveOp.ALL_GATHER,
                     CollectiveOp.BROADCAST},
    Algorithm.TREE: {CollectiveOp.ALL_REDUCE},
    Algorithm.DIRECT: set(CollectiveOp),
    Algorithm.HIERARCHICAL: {CollectiveOp.ALL_REDUCE, CollectiveOp.REDUCE_SCATTER, CollectiveOp.ALL_GATHER},
}

Groups = tuple[tuple[int, ...], ...]


def bus_bandwidth_factor(op: CollectiveOp, n: int) -> float:
    """busbw = algbw * factor (nccl-tests doc/PERFORMANCE.md)."""
    if op == CollectiveOp.ALL_REDUCE:
        return 2 * (n - 1) / n
    if op in (CollectiveOp.ALL_GATHER, CollectiveOp.REDUCE_SCATTER, CollectiveOp.ALL_TO_ALL,
              CollectiveOp.ALL_TO_ALL_FUSED):
        return (n - 1) / n
    return 1.0


@dataclass(frozen=True, slots=True)
class _Phase:
    """One phase for a 1-byte collective: bytes per link per byte of size, latency, and the
    seconds per byte of size it takes alone."""

    unit_link_bytes: tuple[tuple[int, float], ...]
    latency_s: float
    unit_time_s: float


class _Flows:
    """The flows of one phase being built: bytes per link (summed over routes) and latency."""

    def __init__(self, topology: Topology):
        self.topology = topology
        self.link_bytes: dict[int, float] = {}
        self.latency_s = 0.0

    def send(self, src: int, dst: int, amount: float) -> None:
        if src == dst or amount <= 0:
            return
        acc = self.link_bytes
        for link in self.topology.route(src, dst):
            acc[link] = acc.get(link, 0.0) + amount

    def note_latency(self, latency_s: float) -> None:
        self.latency_s = max(self.latency_s, latency_s)


class _Plan:
    """Phases by label, in the order first used (mirror groups add to the same phases)."""

    def __init__(self, topology: Topology):
        self.topology = topology
        self.phases: dict[str, _Flows] = {}

    def __getitem__(self, label: str) -> _Flows:
        if label not in self.phases:
            self.phases[label] = _Flows(self.topology)
        return self.phases[label]


def _by_node(topology: Topology, members: Sequence[int]) -> list[list[int]]:
    nodes: dict[int, list[int]] = {}
    for d in sorted(members):
        nodes.setdefault(topology.domain_of(d), []).append(d)
    return list(nodes.values())


def _ring_channels(topology: Topology, members: Sequence[int]) -> list[list[int]]:
    nodes = _by_node(topology, members)
    if len(nodes) == 1:
        order = nodes[0]
        return [order, order[::-1]] if len(order) > 2 else [order]
    n_channels = max(1, min(min(len(ms) for ms in nodes), topology.nics_per_domain))
    return [[d for ms in nodes for d in ms[c:] + ms[:c]] for c in range(n_channels)]


def _cycle_latency_s(topology: Topology, order: list[int]) -> float:
    n = len(order)
    return sum(topology.step_latency_s(order[i], order[(i + 1) % n]) for i in range(n))


def _ring(flows: _Flows, members: Sequence[int], per_rank: float, passes: int) -> None:
    """Each rank sends `per_rank` (per byte of size) to its successor, split over channels."""
    topology, n = flows.topology, len(members)
    if n < 2:
        return
    channels = _ring_channels(topology, members)
    for order in channels:
        for i in range(n):
            flows.send(order[i], order[(i + 1) % n], per_rank / len(channels))
        flows.note_latency(passes * (n - 1) / n * _cycle_latency_s(topology, order))


def _ring_op(flows: _Flows, op: CollectiveOp, members: Sequence[int], scale: float) -> None:
    n = len(members)
    if op == CollectiveOp.ALL_REDUCE:
        _ring(flows, members, scale * 2 * (n - 1) / n, passes=2)
    else:
        _ring(flows, members, scale * (n - 1) / n, passes=1)


def _plan_ring(plan: _Plan, op: CollectiveOp, group: tuple[int, ...]) -> None:
    if op != CollectiveOp.BROADCAST:
        _ring_op(plan["ring"], op, group, 1.0)
        return
    flows, root = plan["ring"], group[0]
    channels = _ring_channels(plan.topology, group)
    for order in channels:
        k = order.index(root)
        chain = order[k:] + order[:k]
        for a, b in zip(chain, chain[1:]):
            flows.send(a, b, 1.0 / len(channels))
        flows.note_latency(sum(plan.topology.step_latency_s(a, b) for a, b in zip(chain, chain[1:])))


def _plan_direct(plan: _Plan, op: CollectiveOp, group: tuple[int, ...]) -> None:
    topology, n = plan.topology, len(group)
    if op == CollectiveOp.SEND_RECV:
        pairs, amount, labels = [(group[0], group[1])], 1.0, ["direct"]
    elif op == CollectiveOp.BROADCAST:
        pairs, amount, labels = [(group[0], d) for d in group[1:]], 1.0, ["direct"]
    else:
        pairs = [(a, b) for a in group for b in group if a != b]
        amount = 1.0 / n
        labels = ["reduce-scatter", "all-gather"] if op == CollectiveOp.ALL_REDUCE else ["direct"]
    latency = max((topology.step_latency_s(a, b) for a, b in pairs), default=0.0)
    for label in labels:
        flows = plan[label]
        for a, b in pairs:
            flows.send(a, b, amount)
        flows.note_latency(latency)


def _plan_tree(plan: _Plan, op: CollectiveOp, group: tuple[int, ...]) -> None:
    topology, flows = plan.topology, plan["tree"]
    nodes = _by_node(topology, group)
    n_nodes = len(nodes)
    n_channels = 1 if n_nodes == 1 else max(1, min(min(len(ms) for ms in nodes), topology.nics_per_domain))
    n_trees = 2 if n_nodes > 1 else 1
    share = 1.0 / (n_channels * n_trees)
    for c in range(n_channels):
        chains = [ms[c:] + ms[:c] for ms in nodes]
        chain_latency = 0.0
        for chain in chains:
            for child, parent in zip(chain[1:], chain):
                flows.send(child, parent, share)
                flows.send(parent, child, share)
            chain_latency = max(chain_latency,
                                sum(topology.step_latency_s(a, b) for a, b in zip(chain[1:], chain)))
        for t in range(n_trees):
            order = list(range(n_nodes)) if t == 0 else list(range(n_nodes - 1, -1, -1))
            depth_latency = [0.0] * n_nodes
            for k in range(1, n_nodes):
                child, parent = chains[order[k]][0], chains[order[(k - 1) // 2]][0]
                flows.send(child, parent, share)
                flows.send(parent, child, share)
                depth_latency[k] = depth_latency[(k - 1) // 2] + topology.step_latency_s(child, parent)
            flows.note_latency(2 * (max(depth_latency) + chain_latency))


def _symmetric(topology: Topology, group: Sequence[int]) -> bool:
    return len({len(ms) for ms in _by_node(topology, group)}) == 1


def _plan_hierarchical(plan: _Plan, op: CollectiveOp, group: tuple[int, ...]) -> None:
    nodes = _by_node(plan.topology, group)
    if len({len(ms) for ms in nodes}) != 1:
        raise ValueError(f"hierarchical {op} needs the same number of group members on every node; "
                         f"group {list(group)} has {[len(ms) for ms in nodes]}: use ring")
    m = len(nodes[0])
    rails = [[ms[j] for ms in nodes] for j in range(m)]
    if op in (CollectiveOp.ALL_REDUCE, CollectiveOp.REDUCE_SCATTER):
        for ms in nodes:
            _ring_op(plan["intra reduce-scatter"], CollectiveOp.REDUCE_SCATTER, ms, 1.0)
    for rail in rails:
        _ring_op(plan["inter-node"], op, rail, 1.0 / m)
    if op in (CollectiveOp.ALL_REDUCE, CollectiveOp.ALL_GATHER):
        for ms in nodes:
            _ring_op(plan["intra all-gather"], CollectiveOp.ALL_GATHER, ms, 1.0)


_PLANNERS: dict[Algorithm, Callable[[_Plan, CollectiveOp, tuple[int, ...]], None]] = {
    Algorithm.RING: _plan_ring, Algorithm.DIRECT: _plan_direct, Algorithm.TREE: _plan_tree,
    Algorithm.HIERARCHICAL: _plan_hierarchical,
}


# ---- all-to-all through an NVSwitch: its own measured efficiency (transports.yaml)

@cache
def _all_to_all_points() -> dict[Tier, tuple[tuple[float, float], ...]]:
    """(nominal bandwidth, efficiency) points of each tier's `all_to_all_efficiency`, if any."""
    text = resources.files("hwsim").joinpath("presets", "network", "transports.yaml").read_text()
    try:
        tiers = yaml.safe_load(text)["tiers"]
        out = {}
        for tier in Tier:
            points = tuple((units.parse_rate(p["nominal_bandwidth"]), float(p["value"]))
                           for p in tiers[tier.value].get("all_to_all_efficiency") or ())
            if not all(0 < v <= 1 for _, v in points):
                raise ValueError(f"tier {tier}: all_to_all_efficiency values must be in (0, 1]")
            if points:
                out[tier] = points
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"presets/network/transports.yaml is malformed ({e!r}): a bug in hwsim's data") from e
    return out


def _all_to_all_scale(topology: Topology, link_id: int) -> float:
    """Bytes on the wire per byte an all-to-all sends over this link, relative to a ring:
    efficiency / all-to-all efficiency on a device-to-NVSwitch link (its nominal bandwidth is the
    device's port, so both points are picked as the topology picked the link's capacity), else 1."""
    link = topology.links[link_id]
    points = _all_to_all_points().get(link.tier)
    if not points or not any(isinstance(end, str) and end.endswith(".nvswitch") for end in (link.src, link.dst)):
        return 1.0
    port = max(link.bandwidth_bytes_per_s, 1.0)
    a2a = min(points, key=lambda p: abs(math.log(port / p[0])))[1]
    return topology.transports.efficiency(link.tier, port) / a2a


# ---- caches, per topology (dropped with it)

_TEMPLATES: "weakref.WeakKeyDictionary[Topology, dict]" = weakref.WeakKeyDictionary()
_SCALED: "weakref.WeakKeyDictionary[Topology, dict]" = weakref.WeakKeyDictionary()
_SCALED_CACHE_SIZE = 8192
# a topology outlives its run (hwsim.hardware.topology.shared_topology: a sweep's points share it),
# so its template cache is bounded too
_TEMPLATES_CACHE_SIZE = 4096


def _put(cache: dict, key, value, limit: int):
    """cache[key] = value, emptying the cache first once it holds `limit` entries; returns value."""
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value
    return value


def _normalize(topology: Topology, op: CollectiveOp, groups: Sequence[Sequence[int]]) -> Groups:
    out = tuple(tuple(int(d) for d in g) for g in groups)
    for g in out:
        if len(set(g)) != len(g) or any(not 0 <= d < topology.n_devices for d in g):
            raise ValueError(f"group {list(g)}: devices must be distinct and in 0..{topology.n_devices - 1}")
        if op == CollectiveOp.SEND_RECV and len(g) != 2:
            raise ValueError(f"send-recv groups are [src, dst] pairs, got {list(g)}")
    return out


def _templates(topology: Topology, op: CollectiveOp, groups: Groups,
               algorithm: Algorithm) -> tuple[_Phase, ...]:
    cache = _TEMPLATES.setdefault(topology, {})
    key = (op, groups, algorithm)
    found = cache.get(key)
    if found is None:
        if op not in _SUPPORTED[algorithm]:
            supported = [a.value for a in _SUPPORTED if op in _SUPPORTED[a]]
            raise ValueError(f"{algorithm} does not implement {op}: use one of {supported} or auto")
        plan = _Plan(topology)
        for group in groups:
            if len(group) > 1:
                _PLANNERS[algorithm](plan, op, group)
        if op == CollectiveOp.ALL_TO_ALL:
            for flows in plan.phases.values():
                flows.link_bytes = {link: b * _all_to_all_scale(topology, link)
                                    for link, b in flows.link_bytes.items()}
        capacity = topology.capacity_bytes_per_s
        found = tuple(
            _Phase(tuple(flows.link_bytes.items()), flows.latency_s,
                   float(max(b / capacity[link] if capacity[link] > 0 else math.inf
                             for link, b in flows.link_bytes.items())))
            for flows in plan.phases.values() if flows.link_bytes)
        _put(cache, key, found, _TEMPLATES_CACHE_SIZE)
    return found


def _candidates(topology: Topology, op: CollectiveOp, groups: Groups) -> tuple[Algorithm, ...]:
    if op in (CollectiveOp.ALL_TO_ALL, CollectiveOp.ALL_TO_ALL_FUSED, CollectiveOp.SEND_RECV):
        return (Algorithm.DIRECT,)
    if op == CollectiveOp.BROADCAST:
        return (Algorithm.RING,)
    if any(len({topology.domain_of(d) for d in g}) > 1 for g in groups):
        if all(_symmetric(topology, g) for g in groups):
            return (Algorithm.RING, Algorithm.HIERARCHICAL)
        return (Algorithm.RING,)
    if topology.intra_kind == IntraKind.MESH:
        return (Algorithm.RING, Algorithm.DIRECT)
    return (Algorithm.RING,)


def _isolated_time_s(phases: tuple[_Phase, ...], size_bytes: float) -> float:
    return sum(p.latency_s + size_bytes * p.unit_time_s for p in phases)


def choose_algorithm(topology: Topology, op: CollectiveOp, groups: Sequence[Sequence[int]],
                     size_bytes: float) -> Algorithm:
    """What AUTO picks: the candidate that is fastest alone at this size (first on ties)."""
    op = CollectiveOp(op)
    groups = _normalize(topology, op, groups)
    candidates = _candidates(topology, op, groups)
    if len(candidates) == 1:
        return candidates[0]
    # Groups of the same shape (size, nodes spanned, devices per node, count) that differ only by
    # where they sit make the same choice: pipeline stages and mirror groups ask again and again.
    per_node: dict[int, int] = {}
    for d in groups[0]:
        per_node[topology.domain_of(d)] = per_node.get(topology.domain_of(d), 0) + 1
    shape = ("choice", op, len(groups), len(groups[0]), tuple(sorted(per_node.values())), float(size_bytes))
    cache = _TEMPLATES.setdefault(topology, {})
    found = cache.get(shape)
    if found is None:
        found = _put(cache, shape, min(candidates, key=lambda a: _isolated_time_s(
            _templates(topology, op, groups, a), size_bytes)), _TEMPLATES_CACHE_SIZE)
    return found


def collective_transfers(topology: Topology, op: CollectiveOp, groups: Sequence[Sequence[int]],
                         size_bytes: float, algorithm: Algorithm = Algorithm.AUTO) -> tuple[Transfer, ...]:
    """The collective's phases as Transfers, to run in sequence (empty when nothing moves)."""
    op, algorithm = CollectiveOp(op), Algorithm(algorithm)
    groups = _normalize(topology, op, groups)
    if algorithm == Algorithm.AUTO:
        algorithm = choose_algorithm(topology, op, groups, size_bytes)
    cache = _SCALED.setdefault(topology, {})
    key = (op, groups, algorithm, float(size_bytes))
    found = cache.get(key)
    if found is None:
        found = _put(cache, key, tuple(Transfer(tuple((link, b * size_bytes) for link, b in p.unit_link_bytes),
                                                p.latency_s) for p in _templates(topology, op, groups, algorithm)),
                     _SCALED_CACHE_SIZE)
    return found


def collective_time(topology: Topology, network: NetworkModel, op: CollectiveOp,
                    groups: Sequence[Sequence[int]], size_bytes: float,
                    algorithm: Algorithm = Algorithm.AUTO) -> float:
    """Seconds for the collective alone: phases in sequence, each latency + bytes / rate."""
    total = 0.0
    for transfer in collective_transfers(topology, op, groups, size_bytes, algorithm):
        total += transfer.latency_s
        if transfer.max_link_bytes > 0:
            total += transfer.max_link_bytes / network.rates([transfer])[0]
    return total
