"""The SimPy executor: runs a TaskGraph on simulated devices, streams, memory and network.

Semantics (DESIGN.md, engine): every (device, stream) is an in-order queue, like a CUDA
stream. A task starts when all its predecessors have ended and it is at the head of every one
of its streams; a collective spanning several devices is a rendezvous (it starts when the last
member stream reaches it and releases them all when it ends). COMPUTE and COPY take their
`duration_s`; ALLOC and FREE are instant; a COLLECTIVE runs its transfers one after the other
(each waits its latency, then moves its bytes through the shared network), or takes its
`duration_s` when it has no transfers.

Implementation ("worker per stream", ENGINE_PERF.md): one SimPy process per (device, stream)
walks its task list. Task ends live in a plain list; a done-event is created only when someone
arrives to wait for a task that has not ended yet. Link sharing is a fluid model in one object
(`FluidNetwork`): whenever the set of active transfers changes it asks the NetworkModel for
rates and re-plans the next completion; all starts and ends of one instant are batched into a
single re-solve by running it after every normal-priority event of that instant.

Deterministic by construction: processes are created in stream insertion order, SimPy breaks
ties by event id, and nothing iterates over a set.
"""

from __future__ import annotations

import contextlib
import gc
import math
from collections.abc import Generator, Iterator

from simpy import Environment, Event, Timeout
from simpy.events import NORMAL, EventPriority

from hwsim.engine.memory import DeviceMemory
from hwsim.engine.task import MemKind, Stream, TaskKind
from hwsim.engine.taskgraph import TaskGraph
from hwsim.engine.trace import NetworkRecord, Trace
from hwsim.errors import SimulationError
from hwsim.network.transfer import NetworkModel, Transfer

__all__ = ["FluidNetwork", "collector_paused", "simulate"]

# After every NORMAL event of the same instant: lets one re-solve see all starts and ends.
_AFTER_NORMAL = EventPriority(NORMAL + 1)
# A transfer whose remaining bytes fall below this fraction of its size has finished
# (float round-off of rate * time); the transfer the wake-up was planned for always finishes.
_DONE_REL_TOLERANCE = 1e-9
_N_STUCK_REPORTED = 5

# How a task runs: a timeout, a compute kernel slowed while a collective shares its SMs, a memory
# change, a collective; decided once per task before the run.
_TIMED, _SLOWED, _ALLOC, _FREE, _COLLECTIVE = 0, 1, 2, 3, 4


def _how(graph: TaskGraph, interference: bool) -> list[int]:
    """Each task's way to run (above); without interference compute is never slowed."""
    how = {TaskKind.COMPUTE: _SLOWED if interference else _TIMED, TaskKind.COPY: _TIMED, TaskKind.HOST: _TIMED,
           TaskKind.ALLOC: _ALLOC, TaskKind.FREE: _FREE, TaskKind.COLLECTIVE: _COLLECTIVE}
    return [how[task.kind] for task in graph.tasks]


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off, back as it was after: a step's tasks, tuples and
    events are many and acyclic, and each collection would walk over all of them again."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _Wakeup(Event):
    """An event triggered at creation, processed `delay` later after the NORMAL events of that
    instant (an Event subclass as simpy.Timeout is one, with a later priority)."""

    def __init__(self, env: Environment, delay: float, callback) -> None:
        self.env = env
        self.callbacks = [callback]
        self._value = None
        self._ok = True
        env.schedule(self, _AFTER_NORMAL, delay)


class _Flow:
    """One active transfer phase in the fluid model (mutable, internal)."""

    __slots__ = ("transfer", "size_bytes", "remaining_bytes", "rate", "seg_start_s", "row",
                 "done")

    def __init__(self, transfer: Transfer, size_bytes: float, row: int, done: Event) -> None:
        self.transfer = transfer
        self.size_bytes = size_bytes
        self.remaining_bytes = size_bytes
        self.rate = 0.0            # bytes/s of its most loaded link
        self.seg_start_s = 0.0     # since when it has had `rate`
        self.row = row             # its row in the NetworkRecord
        self.done = done


class FluidNetwork:
    """Transfers sharing links, as fluid flows: rates from the NetworkModel, re-solved whenever
    the active set changes, completions planned from remaining bytes / rate."""

    def __init__(self, env: Environment, model: NetworkModel, record: NetworkRecord) -> None:
        self.env = env
        self.model = model
        self.record = record
        self.active: list[_Flow] = []     # insertion-ordered
        self._pending: list[_Flow] = []
        self._last_s = env.now
        self._wakeup: _Wakeup | None = None
        self._wakeup_s = -math.inf
        self._target: _Flow | None = None  # the flow the pending wake-up was planned for
        self._target_s = math.inf
        self.n_resolves = 0

    def start(self, transfer: Transfer, size_bytes: float, row: int) -> Event:
        """Start moving the bytes of `transfer` now; the event fires when they have arrived."""
        flow = _Flow(transfer, size_bytes, row, Event(self.env))
        self._pending.append(flow)
        now = self.env.now
        if self._wakeup is None or self._wakeup_s != now:
            self._wakeup = _Wakeup(self.env, 0.0, self._on_wakeup)
            self._wakeup_s = now
        return flow.done

    def _on_wakeup(self, event: Event) -> None:
        if event is self._wakeup:  # otherwise superseded by an earlier re-solve
            self._wakeup = None
            self._resolve()

    def _resolve(self) -> None:
        self.n_resolves += 1
        now = self.env.now
        elapsed_s = now - self._last_s
        self._last_s = now
        record = self.record
        still: list[_Flow] = []
        target_done = self._target is not None and now >= self._target_s
        for flow in self.active:
            if elapsed_s > 0.0:
                flow.remaining_bytes -= flow.rate * elapsed_s
            if (target_done and flow is self._target) or (
                    flow.remaining_bytes <= _DONE_REL_TOLERANCE * flow.size_bytes):
                self._close_segment(flow, now)
                record.phase_end_s[flow.row] = now
                flow.done.succeed()
            else:
                still.append(flow)
        still.extend(self._pending)
        self._pending = []
        self.active = still
        self._target, self._target_s = None, math.inf
        if not still:
            return
        rates = self.model.rates([flow.transfer for flow in still])
        if len(rates) != len(still):
            raise SimulationError(
                f"the network model gave {len(rates)} rates for {len(still)} transfers")
        best_s, target = math.inf, None
        for flow, rate in zip(still, rates):
            rate = float(rate)
            if not rate >= 0.0:
                raise SimulationError(f"the network model gave a rate of {rate} bytes/s")
            if rate != flow.rate:
                self._close_segment(flow, now)
                flow.rate = rate
            if rate > 0.0:
                time_s = max(flow.remaining_bytes / rate, 0.0)
                if time_s < best_s:
                    best_s, target = time_s, flow
        if target is not None:
            self._target, self._target_s = target, now + best_s
            self._wakeup = _Wakeup(self.env, best_s, self._on_wakeup)
            self._wakeup_s = now + best_s

    def _close_segment(self, flow: _Flow, now: float) -> None:
        if flow.rate > 0.0 and now > flow.seg_start_s:
            self.record.add_segment(flow.row, flow.seg_start_s, now, flow.rate)
        flow.seg_start_s = now


class _Compute:
    """A compute kernel whose speed depends on whether a collective shares its device's SMs."""

    __slots__ = ("remaining_s", "rate", "since_s", "version", "done")

    def __init__(self, remaining_s: float, done: Event) -> None:
        self.remaining_s = remaining_s   # seconds of work left at full speed
        self.rate = 1.0
        self.since_s = 0.0
        self.version = 0
        self.done = done


class _Finish:
    """The end of a compute kernel's planned run (a Timeout callback): it ends the kernel unless
    a later re-plan (a collective started or ended on its device) replaced the plan."""

    __slots__ = ("running", "stream", "job", "version")

    def __init__(self, running: dict[Stream, _Compute], stream: Stream, job: _Compute, version: int) -> None:
        self.running = running
        self.stream = stream
        self.job = job
        self.version = version

    def __call__(self, _event: Event) -> None:
        job = self.job
        if job.version == self.version and self.running.get(self.stream) is job:
            del self.running[self.stream]
            job.done.succeed()


class _Executor:
    """The state of one simulation (arrays indexed by task id) and its worker processes."""

    def __init__(self, graph: TaskGraph, network: NetworkModel, memory_capacity_bytes: float,
                 initial_memory: dict[int, dict[MemKind, float]] | None,
                 comm_slowdown: float = 0.0, stop_at_oom: bool = False) -> None:
        self.graph = graph
        self.env = env = Environment()
        # While a collective runs on a device its kernels hold SMs, so compute there runs at
        # (1 - comm_slowdown) of its speed; 0 turns the interference off.
        # a mapping gives each device its own (mixed accelerators, cluster.groups): the largest
        # decides whether interference is simulated at all
        self.slowdown_of = comm_slowdown if isinstance(comm_slowdown, dict) else None
        self.comm_slowdown = max(comm_slowdown.values(), default=0.0) if self.slowdown_of is not None else comm_slowdown
        self.comm_active: dict[int, int] = {}
        self.computing: dict[int, dict[Stream, _Compute]] = {}   # device -> its running kernels
        n_tasks = len(graph.tasks)
        self.start_s = [-1.0] * n_tasks
        self.end_s = [-1.0] * n_tasks
        self.events: list[Event | None] = [None] * n_tasks
        self.arrived: dict[int, int] = {}
        self.record = NetworkRecord()
        self.network = FluidNetwork(env, network, self.record)
        self.how = _how(graph, self.comm_slowdown > 0.0)
        initial = initial_memory or {}
        devices = sorted(set(graph.devices) | set(initial))
        self.memory = {device: DeviceMemory(env, device, memory_capacity_bytes[device]
                                            if isinstance(memory_capacity_bytes, dict) else memory_capacity_bytes,
                                            initial.get(device), stop_at_oom)
                       for device in devices}

    def run(self, n_links: int) -> Trace:
        env = self.env
        for (device, _stream), order in self.graph.stream_order().items():
            env.process(self._worker(device, order))
        with collector_paused():   # the run allocates many short-lived, acyclic objects
            env.run()
        if any(end < 0.0 for end in self.end_s):
            raise SimulationError(self._stuck_message())
        return Trace(graph=self.graph, start_s=self.start_s, end_s=self.end_s,
                     network=self.record,
                     memory={device: mem.timeline() for device, mem in self.memory.items()},
                     oom_findings=[mem.oom for mem in self.memory.values() if mem.oom],
                     n_links=max(n_links, self.record.max_link_index() + 1))

    def _worker(self, device: int, order: list[int]) -> Generator[Event, object, None]:
        env = self.env
        tasks, preds, how = self.graph.tasks, self.graph.preds, self.how
        start_s, end_s, events, arrived = self.start_s, self.end_s, self.events, self.arrived
        memory = self.memory[device]
        interference = self.comm_slowdown > 0.0
        for task_id in order:
            for pred in preds[task_id]:
                if end_s[pred] < 0.0:
                    event = events[pred]
                    if event is None:
                        event = events[pred] = Event(env)
                    yield event
            task = tasks[task_id]
            n_members = len(task.devices)
            if n_members > 1:  # rendezvous: the last member to arrive runs the task
                count = arrived.get(task_id, 0) + 1
                if count < n_members:
                    arrived[task_id] = count
                    event = events[task_id]
                    if event is None:
                        event = events[task_id] = Event(env)
                    yield event
                    continue
                del arrived[task_id]
            start_s[task_id] = env.now
            kind = how[task_id]
            if kind == _TIMED:
                if task.duration_s > 0.0:
                    yield Timeout(env, task.duration_s)
            elif kind == _SLOWED:
                if task.duration_s > 0.0:
                    yield self._compute(device, task.stream, task.duration_s)
            elif kind == _ALLOC:
                memory.alloc(task.mem_bytes, task.mem_kind, task.name)
            elif kind == _FREE:
                memory.free(task.mem_bytes, task.mem_kind, task.name)
            else:
                if interference:   # the collective's kernels hold SMs while it runs
                    self._comm_change(task.devices, +1)
                if task.transfers:
                    yield from self._collective(task_id, task.transfers)
                elif task.duration_s > 0.0:
                    yield Timeout(env, task.duration_s)
                if interference:
                    self._comm_change(task.devices, -1)
            end_s[task_id] = env.now
            event = events[task_id]
            if event is not None:
                events[task_id] = None
                event.succeed()

    def _compute(self, device: int, stream: Stream, duration_s: float) -> Event:
        job = _Compute(duration_s, Event(self.env))
        running = self.computing.get(device)
        if running is None:
            running = self.computing[device] = {}
        running[stream] = job
        self._replan(device, stream, job)
        return job.done

    def _replan(self, device: int, stream: Stream, job: _Compute) -> None:
        if self.comm_active.get(device, 0):
            job.rate = 1.0 - (self.comm_slowdown if self.slowdown_of is None else self.slowdown_of.get(device, 0.0))
        else:
            job.rate = 1.0
        job.since_s = self.env.now
        job.version += 1
        Timeout(self.env, job.remaining_s / job.rate).callbacks.append(
            _Finish(self.computing[device], stream, job, job.version))

    def _comm_change(self, devices: tuple[int, ...], delta: int) -> None:
        comm_active = self.comm_active
        for device in devices:
            before = comm_active.get(device, 0)
            comm_active[device] = before + delta
            if (before == 0) != (before + delta == 0):      # the device's SM share changed
                running = self.computing.get(device)
                if running:
                    now = self.env.now
                    for stream, job in list(running.items()):
                        job.remaining_s = max(0.0, job.remaining_s - (now - job.since_s) * job.rate)
                        self._replan(device, stream, job)

    def _collective(self, task_id: int, transfers: tuple[Transfer, ...]
                    ) -> Generator[Event, object, None]:
        env, record = self.env, self.record
        for phase, transfer in enumerate(transfers):
            row = record.open_phase(task_id, phase, env.now, transfer)
            if transfer.latency_s > 0.0:
                yield Timeout(env, transfer.latency_s)
            size_bytes = transfer.max_link_bytes
            if size_bytes > 0.0:
                yield self.network.start(transfer, size_bytes, row)
            else:
                record.phase_end_s[row] = env.now

    def _stuck_message(self) -> str:
        graph, end_s = self.graph, self.end_s
        n_stuck = sum(1 for end in end_s if end < 0.0)
        lines: list[str] = []
        heads: dict[int, list[int]] = {}  # stuck head task -> devices whose stream reached it
        for (device, _stream), order in graph.stream_order().items():
            head = next((t for t in order if end_s[t] < 0.0), None)
            if head is not None:
                heads.setdefault(head, []).append(device)
        for head, reached in list(heads.items())[:_N_STUCK_REPORTED]:
            task = graph.tasks[head]
            waits = [f"{graph.tasks[p].name!r} (id {p})" for p in graph.preds[head]
                     if end_s[p] < 0.0][:3]
            missing = [d for d in task.devices if d not in reached]
            why = []
            if waits:
                why.append("waits for " + ", ".join(waits))
            if missing:
                why.append(f"waits for devices {missing} to reach it on their {task.stream} "
                           "stream")
            if not why and self.start_s[head] >= 0.0:
                why.append("started but its transfer got no bandwidth")
            lines.append(f"  task {task.name!r} (id {head}) at the head of stream {task.stream} "
                         f"of devices {reached}: {'; '.join(why) or 'never started'}")
        return (f"the simulation stopped with {n_stuck} of {len(end_s)} tasks not run (a "
                f"deadlock: stream orders that contradict the dependencies, or a collective "
                f"issued in different orders on its devices). Stuck:\n" + "\n".join(lines))


def simulate(graph: TaskGraph, network: NetworkModel, memory_capacity_bytes: float,
             n_links: int = 0,
             initial_memory: dict[int, dict[MemKind, float]] | None = None,
             comm_slowdown: float = 0.0, stop_at_oom: bool = False) -> Trace:
    """Run `graph` and return its Trace. `network` shares links between concurrent transfers;
    every device has `memory_capacity_bytes` (or its entry, a mapping by device; exceeding it is an OOM finding in the trace) and
    starts with `initial_memory[device]` (bytes per kind: weights, optimizer state, ...).
    `n_links` sizes the trace's per-link arrays (0: the highest link index used, plus one).
    `comm_slowdown`: the fraction of a device's compute speed lost while one of its collectives
    runs (collective kernels hold SMs; 0 = no interference), or a mapping by device.
    `stop_at_oom`: end the run at the first moment a device holds more than its capacity,
    raising hwsim.engine.memory.OutOfMemoryStop (what-ifs that only need to know it does not fit).
    Raises SimulationError if some tasks could not run (a deadlock)."""
    return _Executor(graph, network, memory_capacity_bytes, initial_memory, comm_slowdown,
                     stop_at_oom).run(n_links)
