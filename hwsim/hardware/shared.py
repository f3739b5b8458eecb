"""A fat-tree shared with other jobs (`cluster.shared`, an hwsim extension): where this job's
nodes land, and how much of the shared links the other jobs' traffic leaves to it.

What is modelled:
- **Placement.** The fabric has `fabric_nodes` node slots (default: this job's nodes plus the
  neighbours'); NICs fill leaves of `LEAF_DOWNLINKS` ports slot by slot, as in the unshared
  fat-tree (hwsim.hardware.topology). `packed` puts this job on the first slots (the fewest
  leaves: what a topology-aware scheduler such as Slurm's topology/tree plugin aims for);
  `scattered` deals its nodes one per leaf, round robin (the worst case of a fragmented
  cluster); `random` takes `seed`-ed random free slots, in slot order as a scheduler lists
  hosts. Ranks keep their order (rank r on the r-th slot chosen), so placement decides which
  of this job's rings and trees cross leaf-spine links. The neighbours take the free slots,
  job after job.
- **Neighbour traffic.** Each other job is its traffic only: `pattern` (all-reduce: each NIC
  sends to the same NIC of the next node, a ring per rail as NCCL's rings are; all-to-all:
  each NIC to the same NIC of every other node of its job, PXN-style; uniform: each NIC to
  every NIC of its other nodes) at an average per-NIC rate (`load` × the NIC's achievable
  rate, or `rate`). A flow between two leaves is spread evenly over the source leaf's uplinks
  and the destination leaf's downlinks: the expected load of ECMP hashing, adaptive routing or
  NCCL's several queue pairs per connection over the neighbours' many flows. (Routing the
  neighbours by this job's deterministic D-mod-k rule instead would make the answer hinge on
  slot arithmetic: with 4 nodes per leaf a scattered job at slots 0, 4, 8, 12 and a ring over
  the free slots in order land on disjoint spines and never meet.) This job keeps its own
  D-mod-k routes.
- **Sharing.** On each shared link, this job gets the max-min fair share that one more flow of
  unlimited demand would get beside the neighbours' flows (water-filling over their demands):
  `capacity - their load` while they leave room, never less than an equal share once they ask
  for more than the link carries. The link's capacity in the Topology is set to that share, so
  the network model (hwsim.network.maxmin) needs no change and folding stays exact.

What is not (the limits of this choice):
- Neighbour traffic is a steady fluid at its average rate: the bursts of a real job (compute
  gaps, then an all-reduce at line rate) and their timing against this job's collectives are
  not modelled; a bursty neighbour at the same average hurts more when bursts coincide.
- The neighbours do not react: they are not slowed by this job (when this job is idle they do
  not take more), and this job's many flows on a link count as one flow against them.
- Only the leaf-spine links are shared: the neighbours' own NIC links are not this job's, and
  the spines are idealised as large as needed (as in the unshared fat-tree). Adaptive routing,
  congestion control (DCQCN) and incast are not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hwsim.config.schema import ClusterConfig, Placement, SharedPattern

__all__ = ["Background", "fabric_slots", "shared_background", "fair_share"]


@dataclass
class Background:
    """What the neighbours do to this job's links (Topology.background)."""

    placement: str
    slots: tuple[int, ...]               # this job's node -> its slot on the fabric
    fabric_nodes: int
    n_leaves: int
    job_leaves: tuple[int, ...]          # leaves holding this job's NICs
    load_bytes_per_s: dict[int, float] = field(default_factory=dict)   # link -> neighbours' demand
    taken_frac: float = 0.0              # capacity the neighbours take off the links this job can cross

    def words(self) -> str:
        spread = (f"{len(self.job_leaves)} of the fabric's {self.n_leaves} leaves" if self.n_leaves > 1
                  else "one leaf")
        return (f"shared fabric: placement {self.placement} puts this job's {len(self.slots)} nodes on {spread} "
                f"({self.fabric_nodes} node slots); the other jobs' traffic takes {self.taken_frac:.0%} of the "
                f"leaf-spine capacity this job's leaves can use")


def _n_nics(cluster: ClusterConfig) -> int:
    return min(cluster.inter_node.nics_per_node, cluster.devices_per_node)


def _fabric_nodes(cluster: ClusterConfig) -> int:
    shared = cluster.shared
    return shared.fabric_nodes or cluster.nodes + sum(j.nodes for j in shared.jobs)


def _nodes_per_leaf(n_nics: int) -> int:
    from hwsim.hardware.topology import LEAF_DOWNLINKS
    return max(1, LEAF_DOWNLINKS // n_nics)


def fabric_slots(cluster: ClusterConfig):
    """(this job's node -> slot, number of slots): the identity without `cluster.shared`."""
    if cluster.shared is None or cluster.inter_node is None:
        return range(cluster.nodes), cluster.nodes
    n, total = cluster.nodes, _fabric_nodes(cluster)
    placement = cluster.shared.placement
    if placement == Placement.PACKED:
        return range(n), total
    if placement == Placement.SCATTERED:
        per_leaf = _nodes_per_leaf(_n_nics(cluster))
        order = sorted(range(total), key=lambda s: (s % per_leaf, s // per_leaf))
        return tuple(order[:n]), total
    rng = np.random.default_rng(cluster.shared.seed)
    return tuple(sorted(int(s) for s in rng.choice(total, size=n, replace=False))), total


def fair_share(capacity: float, demands: dict[float, int]) -> float:
    """The max-min share of one more flow of unlimited demand on a link of `capacity` beside
    flows of the given demands ({demand: how many}): the level L with sum(min(d, L)) + L = capacity."""
    remaining, flows = capacity, 1 + sum(demands.values())
    for demand in sorted(demands):
        count = demands[demand]
        if demand * flows >= remaining:   # these and the larger ones are capped at the level
            break
        remaining -= demand * count
        flows -= count
    return remaining / flows


def shared_background(cluster: ClusterConfig, n_nics: int, index: dict, capacity: np.ndarray,
                      nic_efficiency: float = 1.0) -> tuple[Background, np.ndarray]:
    """The neighbours' load on the leaf-spine links and this job's share of each (see the module
    docstring). `index`: (src, dst) -> link id of the topology being built."""
    from hwsim.hardware.topology import LEAF_DOWNLINKS
    slots, total = fabric_slots(cluster)
    slots = tuple(slots)
    taken = set(slots)
    free = [s for s in range(total) if s not in taken]
    nic_bw = cluster.inter_node.nic_bandwidth
    demands: dict[int, dict[float, int]] = {}

    def add(src_slot_nic: int, dst_slot_nic: int, rate: float, count: int = 1) -> None:
        la, lb = src_slot_nic // LEAF_DOWNLINKS, dst_slot_nic // LEAF_DOWNLINKS
        if la == lb or rate <= 0:
            return
        part = rate / LEAF_DOWNLINKS   # spread over every spine (see the module docstring)
        for s in range(LEAF_DOWNLINKS):
            spine = f"spine{s}"
            for key in ((f"leaf{la}", spine), (spine, f"leaf{lb}")):
                link = index.get(key)
                if link is not None:
                    by_rate = demands.setdefault(link, {})
                    by_rate[part] = by_rate.get(part, 0) + count

    for job in cluster.shared.jobs:
        mine, free = free[:job.nodes], free[job.nodes:]
        m = len(mine)
        if m < 2:
            continue
        per_nic = min(job.rate if job.rate is not None else job.load * nic_bw * nic_efficiency,
                      nic_bw * nic_efficiency)
        if job.pattern == SharedPattern.ALL_REDUCE:
            for i in range(m):
                for j in range(n_nics):
                    add(mine[i] * n_nics + j, mine[(i + 1) % m] * n_nics + j, per_nic)
            continue
        # all-to-all and uniform: count the sending NICs per leaf (and rail), then one entry per
        # (source leaf, destination NIC)
        on_leaf: dict[tuple[int, int], int] = {}
        for s in mine:
            for j in range(n_nics):
                key = ((s * n_nics + j) // LEAF_DOWNLINKS, j if job.pattern == SharedPattern.ALL_TO_ALL else -1)
                on_leaf[key] = on_leaf.get(key, 0) + 1
        peers = (m - 1) if job.pattern == SharedPattern.ALL_TO_ALL else (m - 1) * n_nics
        for s in mine:
            for j in range(n_nics):
                g = s * n_nics + j
                rail = j if job.pattern == SharedPattern.ALL_TO_ALL else -1
                for (leaf, r), count in on_leaf.items():
                    if r == rail:
                        add(leaf * LEAF_DOWNLINKS, g, per_nic / peers, count)

    share = capacity.copy()
    load = {}
    for link, by_rate in sorted(demands.items()):
        load[link] = sum(r * c for r, c in by_rate.items())
        share[link] = fair_share(float(capacity[link]), by_rate)
    leaves = tuple(sorted({(s * n_nics + j) // LEAF_DOWNLINKS for s in slots for j in range(n_nics)}))
    n_leaves = -(-total * n_nics // LEAF_DOWNLINKS)
    names = {f"leaf{x}" for x in leaves}
    usable = [i for (a, b), i in index.items()
              if (a in names and str(b).startswith("spine")) or (b in names and str(a).startswith("spine"))]
    taken_frac = (1.0 - float(share[usable].sum()) / float(capacity[usable].sum())) if usable else 0.0
    return Background(cluster.shared.placement.value, slots, total, n_leaves, leaves, load, taken_frac), share
