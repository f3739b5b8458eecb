"""Issuing tasks into a TaskGraph for the compiler: compute kernels, collectives over the
groups of a parallel axis (folded: one task carrying every concurrent group's flows), memory
allocations and frees, each device's data-dependency cursor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from hwsim.engine.task import MemKind, Stream, Task, TaskKind
from hwsim.engine.taskgraph import TaskGraph
from hwsim.hardware.topology import Topology
from hwsim.network.collectives import CollectiveOp, collective_transfers
from hwsim.network.transfer import Transfer
from hwsim.workload.plan import Plan
from hwsim.workload.work import Work

COLLECTIVE_OPS = {
    "all-reduce": CollectiveOp.ALL_REDUCE, "all-gather": CollectiveOp.ALL_GATHER,
    "reduce-scatter": CollectiveOp.REDUCE_SCATTER, "all-to-all": CollectiveOp.ALL_TO_ALL,
    "all-to-all-fused": CollectiveOp.ALL_TO_ALL_FUSED, "send-recv": CollectiveOp.SEND_RECV,
    "broadcast": CollectiveOp.BROADCAST,
}
# Read once: an enum member's lookup costs as much as the rest of a task's issue.
_COMPUTE, _COMPUTE_STREAM = TaskKind.COMPUTE, Stream.COMPUTE
AXIS_STREAM = {"tp": Stream.COMM, "cp": Stream.COMM, "ep": Stream.COMM, "etp": Stream.COMM, "tpep": Stream.COMM}


@dataclass
class Emitter:
    graph: TaskGraph
    plan: Plan
    topology: Topology
    folded: bool
    cursor: dict[int, tuple[int, ...]] = field(default_factory=dict)
    _transfer_cache: dict = field(default_factory=dict)

    _roles: dict = field(default_factory=dict)
    host_waits: dict[int, tuple[int, ...]] = field(default_factory=dict)   # device -> what its next dispatch waits on

    def role_devices(self, stage: int) -> tuple[int, ...]:
        key = ("role", stage)
        if key not in self._roles:
            self._roles[key] = ((self.plan.rank(pp=stage),) if self.folded else self.plan.stage_ranks(stage))
        return self._roles[key]

    def _groups(self, axis: str, stage: int) -> tuple[tuple[int, ...], ...]:
        key = (axis, stage)
        if key not in self._roles:
            expert = {"ep": self.plan.ep_groups, "etp": self.plan.etp_groups, "tpep": self.plan.tpep_groups,
                      "edp": self.plan.edp_groups}
            self._roles[key] = (expert[axis](stage) if axis in expert else
                                self.plan.grad_groups(stage) if axis == "dp" else self.plan.groups(axis, stage))
        return self._roles[key]

    def pipeline_pairs(self, stage_from: int, stage_to: int) -> tuple[tuple[int, int], ...]:
        key = ("pairs", stage_from, stage_to)
        if key not in self._roles:
            shift = (stage_to - stage_from) * self.plan.stride("pp")
            self._roles[key] = tuple((r, r + shift) for r in self.plan.stage_ranks(stage_from))
        return self._roles[key]

    def transfers(self, op: str, axis: str, stage: int, size_bytes: float,
                  groups: tuple[tuple[int, ...], ...], peer: int | None = None) -> tuple[Transfer, ...]:
        """The transfers of `op` over `groups`, cached. Folded, the groups of an (axis, stage) are
        always the same, so the key leaves them out; a pipeline hop names its receiving stage
        (`peer`): a stage sends forward and backward to different stages."""
        key = (op, axis, stage, peer, size_bytes, groups if not self.folded else None)
        hit = self._transfer_cache.get(key)
        if hit is None:
            if op == "send-recv" and axis == "cp":   # ring attention: each rank passes to its ring successor
                groups = tuple((g[i], g[(i + 1) % len(g)]) for g in groups for i in range(len(g)))
            hit = collective_transfers(self.topology, COLLECTIVE_OPS[op], groups, size_bytes)
            self._transfer_cache[key] = hit
        return hit

    def collective_groups(self, axis: str, stage: int) -> list[tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]]:
        """(simulated devices of the task, the groups whose flows it carries), one per task."""
        groups = self._groups(axis, stage)
        if self.folded:
            return [((self.plan.rank(pp=stage),), groups)]
        return [(g, (g,)) for g in groups]

    def compute(self, devices: Sequence[int], w: Work, layer: int, mb: int, category: str | None = None) -> None:
        if w.host_sync_s > 0.0:   # a blocking sync in the framework's code before this op
            self.host_sync(devices, w.host_sync_s, f"host sync before {w.name}")
        cursor, add = self.cursor, self.graph.add
        for d in devices:
            deps = cursor.get(d, ())
            if w.host_s > 0.0:
                deps = deps + (self.launch(d, w, layer, mb),)
            cursor[d] = (add(Task(w.name, _COMPUTE, (d,), _COMPUTE_STREAM, duration_s=w.duration_s,
                                  category=category or w.category, layer=layer, micro_batch=mb,
                                  flop=w.flop, bytes_moved=w.bytes_moved), deps),)

    def launch(self, device: int, w: Work, layer: int, mb: int) -> int:
        """The host thread dispatches `w` (HOST stream, in program order); returns the task its
        GPU work waits for. A fused work of n kernels can start once its first kernel is
        launched: the host's remaining (n-1)/n of it follows as a task nothing waits for but
        the host's next dispatch."""
        lead_s = w.host_s / w.n_kernels
        hid = self.graph.add(Task(f"launch {w.name}", TaskKind.HOST, (device,), Stream.HOST, duration_s=lead_s,
                                  category="host", layer=layer, micro_batch=mb), self.host_waits.pop(device, ()))
        if w.host_s - lead_s > 0.0:
            self.graph.add(Task(f"launch {w.name} (rest)", TaskKind.HOST, (device,), Stream.HOST,
                                duration_s=w.host_s - lead_s, category="host", layer=layer, micro_batch=mb), ())
        return hid

    def host_sync(self, devices: Sequence[int], duration_s: float, name: str, deps: Sequence[int] = ()) -> None:
        """The host waits for the GPU work issued so far on each device (and `deps`), e.g.
        `loss.item()`: its next dispatch comes after."""
        for d in devices:
            waits = tuple(dict.fromkeys(tuple(self.cursor.get(d, ())) + tuple(deps)))
            hid = self.graph.add(Task(name, TaskKind.HOST, (d,), Stream.HOST, duration_s=duration_s,
                                      category="host"), waits + self.host_waits.pop(d, ()))
            self.host_waits[d] = (hid,)

    def collective(self, stage: int, devices: Sequence[int], op: str, axis: str, size_bytes: float, name: str,
                   category: str, layer: int, mb: int, stream: Stream, deps: Sequence[int] | None = None,
                   advance: bool = True) -> list[int]:
        """One collective per group of `axis` among `devices` (folded: one task for all)."""
        ids = []
        for sim_devs, groups in self.collective_groups(axis, stage):
            sim_devs = tuple(d for d in sim_devs if d in devices) or tuple(sim_devs)
            task_deps = (tuple(dict.fromkeys(x for d in sim_devs for x in self.cursor.get(d, ())))
                         if deps is None else tuple(deps))
            tid = self.graph.add(Task(name, TaskKind.COLLECTIVE, sim_devs, stream,
                                      transfers=self.transfers(op, axis, stage, size_bytes, groups),
                                      category=category, layer=layer, micro_batch=mb, bytes_moved=size_bytes),
                                 task_deps)
            ids.append(tid)
            if advance:
                for d in sim_devs:
                    self.cursor[d] = (tid,)
        return ids

    def memory(self, devices: Sequence[int], kind: TaskKind, n_bytes: float, mem_kind: MemKind, name: str,
               layer: int = -1, mb: int = -1) -> None:
        if n_bytes <= 0:
            return
        cursor, add = self.cursor, self.graph.add
        for d in devices:
            add(Task(name, kind, (d,), _COMPUTE_STREAM, mem_bytes=n_bytes, mem_kind=mem_kind,
                     layer=layer, micro_batch=mb, category="memory"), cursor.get(d, ()))


