"""An nccl-tests-like table of simulated collectives, to check the network model against
published measurements (presets/network/transports.yaml holds them with their sources).

Definitions as in nccl-tests doc/PERFORMANCE.md: algbw = size / time; busbw = algbw x
bus_bandwidth_factor(op, n) (all-reduce 2(n-1)/n, all-gather/reduce-scatter/all-to-all (n-1)/n,
broadcast and send-recv 1). Each collective runs alone on the cluster under max-min sharing.
"""

from __future__ import annotations

from typing import Sequence

from hwsim.config.schema import ClusterConfig
from hwsim.hardware.topology import Topology, build_topology
from hwsim.network.collectives import (Algorithm, CollectiveOp, bus_bandwidth_factor, choose_algorithm,
                                       collective_time)
from hwsim.network.maxmin import MaxMinFair

__all__ = ["benchmark_group", "collective_table"]


def benchmark_group(topology: Topology, group: str | int) -> tuple[int, ...]:
    """'all': every device; 'node': the devices of node 0; N: the first N devices."""
    if group == "all":
        return tuple(range(topology.n_devices))
    if group == "node":
        return tuple(range(topology.devices_per_node))
    if isinstance(group, int) and not isinstance(group, bool) and 1 <= group <= topology.n_devices:
        return tuple(range(group))
    raise ValueError(f"group {group!r}: use 'all', 'node' or a device count in 1..{topology.n_devices}")


def collective_table(cluster: ClusterConfig, op: CollectiveOp | str, group: str | int,
                     sizes_bytes: Sequence[float], algorithm: Algorithm | str = Algorithm.AUTO) -> list[dict]:
    """One row per size: size_bytes, time_s, algbw_bytes_per_s, busbw_bytes_per_s, algorithm.

    send-recv runs as nccl-tests' sendrecv does: every rank of the group sends to the next one
    (the last to the first), all at once.
    """
    op, algorithm = CollectiveOp(op), Algorithm(algorithm)
    topology = build_topology(cluster)
    members = benchmark_group(topology, group)
    n = len(members)
    if op == CollectiveOp.SEND_RECV:
        groups = [(members[i], members[(i + 1) % n]) for i in range(n)] if n > 1 else []
    else:
        groups = [members]
    network = MaxMinFair(topology.capacity_bytes_per_s)
    rows = []
    for size in sizes_bytes:
        time_s = collective_time(topology, network, op, groups, size, algorithm)
        chosen = algorithm
        if algorithm == Algorithm.AUTO and groups:
            chosen = choose_algorithm(topology, op, groups, size)
        algbw = size / time_s if time_s > 0 else float("inf")
        rows.append({
            "size_bytes": float(size),
            "time_s": time_s,
            "algbw_bytes_per_s": algbw,
            "busbw_bytes_per_s": algbw * bus_bandwidth_factor(op, n),
            "algorithm": str(chosen),
        })
    return rows
