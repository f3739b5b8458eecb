"""Device memory during a simulation: level per MemKind, high-water mark, out-of-memory findings.

`DeviceMemory` keeps the levels as plain floats: an allocation never blocks (going over the
device's real `capacity_bytes` is a finding for the report, not a stall or a crash), so a
SimPy Container would only add an event per change. It records every change as a step
function (time, level of each MemKind), which the Trace hands out as a `MemoryTimeline`.

A FREE of more than the device holds of that kind is a bug of the compiler: SimulationError.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import simpy

from hwsim.engine.task import MemKind
from hwsim.errors import SimulationError

__all__ = ["MEM_KINDS", "DeviceMemory", "MemoryTimeline", "OomFinding"]

MEM_KINDS: tuple[MemKind, ...] = tuple(MemKind)  # column order of every level array
_KIND_INDEX = {kind: i for i, kind in enumerate(MEM_KINDS)}
# A free may exceed what is held by float round-off of earlier sums; beyond this it is a bug.
_FREE_REL_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class OomFinding:
    """The first moment a device held more than its capacity, and the task that did it."""

    device: int
    time_s: float
    level_bytes: float
    capacity_bytes: float
    task_name: str

    @property
    def excess_bytes(self) -> float:
        return self.level_bytes - self.capacity_bytes


@dataclass(frozen=True)
class MemoryTimeline:
    """One device's memory as a step function: after event i (at `times_s[i]`) the device holds
    `levels_bytes[i, k]` of kind `MEM_KINDS[k]` until the next event."""

    device: int
    capacity_bytes: float
    times_s: np.ndarray       # [n_events] float64, non-decreasing
    levels_bytes: np.ndarray  # [n_events, len(MEM_KINDS)] float64
    peak_bytes: float
    peak_time_s: float

    @property
    def total_bytes(self) -> np.ndarray:
        """Total level after each event, [n_events]."""
        return self.levels_bytes.sum(axis=1)

    def level_bytes(self, kind: MemKind) -> np.ndarray:
        """Level of one kind after each event, [n_events]."""
        return self.levels_bytes[:, _KIND_INDEX[kind]]


class OutOfMemoryStop(Exception):
    """Raised out of the simulation at the first overflow when the caller asked to stop there
    (a what-if only needs to know that the plan does not fit, not its step time)."""

    def __init__(self, finding: OomFinding) -> None:
        super().__init__(finding)   # args = (finding,): SimPy re-raises it as type(exc)(*exc.args)
        self.finding = finding

    def __str__(self) -> str:
        f = self.finding
        return f"device {f.device} holds {f.level_bytes:.6g} B of {f.capacity_bytes:.6g} at t={f.time_s:.6g} s"


class DeviceMemory:
    """The memory of one simulated device; ALLOC and FREE tasks call `alloc` / `free`.
    `stop_at_oom`: raise OutOfMemoryStop at the first moment it holds more than its capacity."""

    __slots__ = ("env", "device", "capacity_bytes", "_total", "_levels", "_times",
                 "_history", "peak_bytes", "peak_time_s", "oom", "stop_at_oom")

    def __init__(self, env: simpy.Environment, device: int, capacity_bytes: float,
                 initial_bytes: dict[MemKind, float] | None = None, stop_at_oom: bool = False) -> None:
        self.stop_at_oom = stop_at_oom
        self.env = env
        self.device = device
        self.capacity_bytes = float(capacity_bytes)
        levels = [0.0] * len(MEM_KINDS)
        for kind, amount in (initial_bytes or {}).items():
            if not amount >= 0.0:
                raise SimulationError(
                    f"device {device}: initial memory of {kind} must be >= 0, got {amount}")
            levels[_KIND_INDEX[MemKind(kind)]] += float(amount)
        self._levels = levels
        self._total = sum(levels)   # all kinds: the sum of the changes, in their order
        self._times: list[float] = []
        self._history: list[float] = []  # flat: len(MEM_KINDS) levels per event
        self.peak_bytes = 0.0
        self.peak_time_s = env.now
        self.oom: OomFinding | None = None
        self._record("initial memory")

    def level_bytes(self, kind: MemKind | None = None) -> float:
        """Bytes held of `kind`, or in all if `kind` is None."""
        if kind is None:
            return float(self._total)
        return self._levels[_KIND_INDEX[kind]]

    def alloc(self, amount_bytes: float, kind: MemKind, task_name: str) -> None:
        """Take `amount_bytes` of `kind` now (never blocks)."""
        if amount_bytes <= 0.0:
            return
        self._levels[_KIND_INDEX[kind]] += amount_bytes
        self._total += amount_bytes
        self._record(task_name)

    def free(self, amount_bytes: float, kind: MemKind, task_name: str) -> None:
        """Give `amount_bytes` of `kind` back now; more than is held is a SimulationError."""
        if amount_bytes <= 0.0:
            return
        index = _KIND_INDEX[kind]
        held = self._levels[index]
        if amount_bytes - held > _FREE_REL_TOLERANCE * amount_bytes:
            raise SimulationError(
                f"task {task_name!r} frees {amount_bytes:.6g} B of {kind} on device "
                f"{self.device} at t={self.env.now:.9g} s, but the device holds only "
                f"{held:.6g} B of it (a FREE without its ALLOC: a bug of the compiler)")
        self._levels[index] = max(held - amount_bytes, 0.0)
        take = min(amount_bytes, self._total)
        if take > 0.0:
            self._total -= take
        self._record(task_name)

    def _record(self, task_name: str) -> None:
        now = self.env.now
        self._times.append(now)
        self._history.extend(self._levels)
        total = sum(self._levels)
        if total > self.peak_bytes:
            self.peak_bytes = total
            self.peak_time_s = now
        if self.oom is None and total > self.capacity_bytes:
            self.oom = OomFinding(self.device, now, total, self.capacity_bytes, task_name)
            if self.stop_at_oom:
                raise OutOfMemoryStop(self.oom)

    def timeline(self) -> MemoryTimeline:
        """The recorded step function (copies; the DeviceMemory may go on)."""
        levels = np.asarray(self._history, dtype=np.float64).reshape(-1, len(MEM_KINDS))
        return MemoryTimeline(
            device=self.device, capacity_bytes=self.capacity_bytes,
            times_s=np.asarray(self._times, dtype=np.float64), levels_bytes=levels,
            peak_bytes=self.peak_bytes, peak_time_s=self.peak_time_s)
