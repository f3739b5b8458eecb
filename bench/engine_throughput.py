"""Engine throughput: hwsim's `simulate` against a bare SimPy reference on the same DAG.

A random layered DAG (default 100k tasks on 64 devices: compute tasks, 1-3 predecessors in
the previous layer, and every few layers a ring-like collective over a group of 8 devices on
the comm stream). It is run twice:
  - hwsim: `simulate` (worker per stream, fluid network for the collectives);
  - reference: plain SimPy, one process per task waiting on AllOf of its predecessors' done
    events, then holding its device's Resource for its duration (collectives: a timeout of
    their ideal duration; no memory, no network) — the "process per task" row of
    /work/shared/ENGINE_PERF.md.
Prints tasks/s of each, their ratio, graph build time and peak RSS.

    python bench/engine_throughput.py [--tasks N] [--devices D] [--seed S]
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import sys
import time
from pathlib import Path

import simpy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hwsim.engine import Stream, Task, TaskGraph, TaskKind, simulate  # noqa: E402
from hwsim.network.transfer import Transfer  # noqa: E402
from hwsim.units import GB, MB, US, KiB, MiB  # noqa: E402

LINK_BANDWIDTH_BYTES_PER_S = 50 * GB  # an illustrative link; the benchmark times the engine
GROUP_SIZE = 8                        # devices per collective
COLLECTIVE_EVERY_N_LAYERS = 10


class EqualShareNetwork:
    """Each link's capacity split equally among the active transfers that use it."""

    def __init__(self, capacity_bytes_per_s: float) -> None:
        self.capacity_bytes_per_s = capacity_bytes_per_s

    def rates(self, transfers):
        users: dict[int, int] = {}
        for transfer in transfers:
            for link, _ in transfer.link_bytes:
                users[link] = users.get(link, 0) + 1
        out = []
        for transfer in transfers:
            time_s = max(b * users[link] / self.capacity_bytes_per_s
                         for link, b in transfer.link_bytes)
            out.append(transfer.max_link_bytes / time_s)
        return out


def build_graph(n_tasks: int, n_devices: int, seed: int) -> TaskGraph:
    rng = random.Random(seed)
    graph = TaskGraph()
    width = 4 * n_devices
    previous: list[int] = []
    layer = 0
    while len(graph) < n_tasks:
        current: list[int] = []
        for _ in range(min(width, n_tasks - len(graph))):
            deps = rng.sample(previous, k=min(len(previous), rng.randint(1, 3)))
            task = Task("op", TaskKind.COMPUTE, (rng.randrange(n_devices),),
                        duration_s=rng.uniform(10, 500) * US, layer=layer)
            current.append(graph.add(task, deps))
        layer += 1
        if layer % COLLECTIVE_EVERY_N_LAYERS == 0 and len(graph) < n_tasks:
            first = rng.randrange(0, n_devices - GROUP_SIZE + 1)
            devices = tuple(range(first, first + GROUP_SIZE))
            size_bytes = rng.choice((1, 4, 16)) * MB
            transfers = tuple(
                Transfer(tuple((d, size_bytes / GROUP_SIZE) for d in devices), 5 * US)
                for _ in range(2 * (GROUP_SIZE - 1)))
            task = Task("allreduce", TaskKind.COLLECTIVE, devices, stream=Stream.COMM,
                        transfers=transfers, category="dp", layer=layer)
            current.append(graph.add(task, rng.sample(current, k=min(len(current), 4))))
        previous = current
    return graph


def run_reference(graph: TaskGraph, n_devices: int) -> float:
    """Bare SimPy, one process per task; returns the makespan."""
    env = simpy.Environment()
    devices = [simpy.Resource(env, capacity=1) for _ in range(n_devices)]
    done = [env.event() for _ in graph.tasks]

    def ideal_s(task: Task) -> float:
        return sum(t.latency_s + t.max_link_bytes / LINK_BANDWIDTH_BYTES_PER_S
                   for t in task.transfers) or task.duration_s

    def one(task_id: int, task: Task, preds: tuple[int, ...]):
        if preds:
            yield simpy.AllOf(env, [done[p] for p in preds])
        if task.kind is TaskKind.COLLECTIVE:
            yield env.timeout(ideal_s(task))
        else:
            with devices[task.devices[0]].request() as request:
                yield request
                yield env.timeout(task.duration_s)
        done[task_id].succeed()

    for task_id, (task, preds) in enumerate(zip(graph.tasks, graph.preds)):
        env.process(one(task_id, task, preds))
    env.run()
    return env.now


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KiB / MiB  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--devices", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-reference", action="store_true")
    args = parser.parse_args()

    t0 = time.perf_counter()
    gc.disable()
    graph = build_graph(args.tasks, args.devices, args.seed)
    gc.enable()
    build_s = time.perf_counter() - t0
    n = len(graph)
    n_coll = sum(1 for t in graph.tasks if t.kind is TaskKind.COLLECTIVE)
    print(f"graph: {n} tasks ({n_coll} collectives), {args.devices} devices, "
          f"built in {build_s:.2f} s; peak RSS {peak_rss_mib():.0f} MiB")

    t0 = time.perf_counter()
    trace = simulate(graph, EqualShareNetwork(LINK_BANDWIDTH_BYTES_PER_S), 80 * GB)
    hwsim_s = time.perf_counter() - t0
    print(f"hwsim simulate: {hwsim_s:.2f} s, {n / hwsim_s:,.0f} tasks/s, makespan "
          f"{trace.makespan_s:.4f} s, {len(trace.segment_phase)} rate segments; "
          f"peak RSS {peak_rss_mib():.0f} MiB")
    if args.no_reference:
        return
    t0 = time.perf_counter()
    ref_makespan_s = run_reference(graph, args.devices)
    ref_s = time.perf_counter() - t0
    print(f"bare SimPy, process per task: {ref_s:.2f} s, {n / ref_s:,.0f} tasks/s, makespan "
          f"{ref_makespan_s:.4f} s; peak RSS {peak_rss_mib():.0f} MiB")
    print(f"hwsim / reference speed: {ref_s / hwsim_s:.1f}x")


if __name__ == "__main__":
    main()
