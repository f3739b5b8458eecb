"""TaskGraph: the tasks of one training step, their dependencies and their streams.

Compact on purpose (the compiler may add ~500k tasks): tasks live in a list (id = index),
predecessors in a parallel list of tuples, and each (device, stream) pair keeps the ids of
its tasks in issue order, as a CUDA stream does. Dependencies must point to earlier ids, so
the id order is a topological order by construction.

By default a stream runs its tasks in the order they were added; a compiler that issues a
stream in another order (a pipeline schedule, say) states it with `set_stream_order`. An
order that contradicts the dependencies deadlocks, and the executor reports it.

`to_networkx()` builds a networkx view for people who inspect small graphs; the executor
never uses it.
"""

from __future__ import annotations

from collections.abc import Iterable

import networkx as nx

from hwsim.engine.task import Stream, Task, TaskKind

__all__ = ["StreamKey", "TaskGraph"]

StreamKey = tuple[int, Stream]  # (device, stream)


_MEMORY_KINDS = frozenset((TaskKind.ALLOC, TaskKind.FREE))
_TIMED_KINDS = frozenset((TaskKind.COMPUTE, TaskKind.COPY, TaskKind.COLLECTIVE))


def _check_devices(task: Task) -> None:
    """A task has at least one device; only a collective spans several, each once."""
    devices = task.devices
    if not devices:
        raise ValueError(f"task {task.name!r} has no device: give it at least one")
    if len(set(devices)) != len(devices):
        raise ValueError(f"task {task.name!r} lists a device twice: {devices}")
    if task.kind is not TaskKind.COLLECTIVE:
        raise ValueError(
            f"task {task.name!r} of kind {task.kind} has {len(devices)} devices; only a "
            f"collective may span several devices")


class TaskGraph:
    """Tasks (id = index), their predecessors and the in-order task list of every stream."""

    __slots__ = ("tasks", "preds", "_streams")

    def __init__(self) -> None:
        self.tasks: list[Task] = []
        self.preds: list[tuple[int, ...]] = []
        self._streams: dict[StreamKey, list[int]] = {}

    def __len__(self) -> int:
        return len(self.tasks)

    def add(self, task: Task, deps: Iterable[int] = ()) -> int:
        """Append `task` after its dependencies `deps` (ids of tasks already added); return its
        id. The task joins the end of `task.stream` on each of `task.devices`."""
        task_id = len(self.tasks)
        deps_tuple = deps if type(deps) is tuple else tuple(deps)
        for dep in deps_tuple:
            if not 0 <= dep < task_id:
                raise ValueError(
                    f"task {task.name!r}: dependency {dep!r} is not an earlier task id "
                    f"(valid ids are 0..{task_id - 1}); add dependencies first")
        devices = task.devices
        if len(devices) != 1:
            _check_devices(task)
        if task.kind in _MEMORY_KINDS:
            if not task.mem_bytes >= 0.0:
                raise ValueError(f"task {task.name!r}: mem_bytes must be >= 0, got {task.mem_bytes}")
        elif not task.duration_s >= 0.0 and task.kind in _TIMED_KINDS:
            raise ValueError(f"task {task.name!r}: duration_s must be >= 0, got {task.duration_s}")
        self.tasks.append(task)
        self.preds.append(deps_tuple)
        streams = self._streams
        stream = task.stream
        for device in devices:
            key = (device, stream)
            order = streams.get(key)
            if order is None:
                streams[key] = [task_id]
            else:
                order.append(task_id)
        return task_id

    def stream_order(self) -> dict[StreamKey, list[int]]:
        """(device, stream) -> its task ids in issue order; keys in first-use order. The lists
        are the graph's own: do not modify them (use `set_stream_order`)."""
        return self._streams

    def set_stream_order(self, device: int, stream: Stream, order: Iterable[int]) -> None:
        """Issue the tasks of (device, stream) in `order`, a permutation of its current list."""
        key = (device, stream)
        if key not in self._streams:
            raise ValueError(f"device {device} has no task on stream {stream}")
        new_order = list(order)
        if sorted(new_order) != sorted(self._streams[key]):
            raise ValueError(
                f"the new order of device {device} stream {stream} must be a permutation of its "
                f"{len(self._streams[key])} tasks")
        self._streams[key] = new_order

    @property
    def devices(self) -> list[int]:
        """The simulated device ids that have at least one task, sorted."""
        return sorted({device for device, _ in self._streams})

    def successors(self) -> list[list[int]]:
        """For each task id, the ids of the tasks that depend on it (in id order)."""
        succ: list[list[int]] = [[] for _ in self.tasks]
        for task_id, deps in enumerate(self.preds):
            for dep in deps:
                succ[dep].append(task_id)
        return succ

    def to_networkx(self) -> nx.DiGraph:
        """A networkx view: nodes are task ids with attribute `task`, edges pred -> task."""
        graph = nx.DiGraph()
        graph.add_nodes_from((task_id, {"task": task}) for task_id, task in enumerate(self.tasks))
        graph.add_edges_from((dep, task_id) for task_id, deps in enumerate(self.preds)
                             for dep in deps)
        return graph
