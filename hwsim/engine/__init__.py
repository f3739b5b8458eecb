"""The engine: TaskGraph (what to run), simulate (SimPy executor), Trace (what ran when)."""

from hwsim.engine.executor import simulate
from hwsim.engine.memory import MEM_KINDS, DeviceMemory, MemoryTimeline, OomFinding
from hwsim.engine.task import MemKind, Stream, Task, TaskKind
from hwsim.engine.taskgraph import StreamKey, TaskGraph
from hwsim.engine.trace import Trace

__all__ = [
    "MEM_KINDS", "DeviceMemory", "MemKind", "MemoryTimeline", "OomFinding", "Stream",
    "StreamKey", "Task", "TaskGraph", "TaskKind", "Trace", "simulate",
]
