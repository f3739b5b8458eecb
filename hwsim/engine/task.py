"""The tasks of a TaskGraph: typed, slotted, immutable (millions may exist)."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from enum import StrEnum

from hwsim.network.transfer import Transfer


class TaskKind(StrEnum):
    COMPUTE = "compute"        # a kernel (or a fused group of kernels) on a device's stream
    COLLECTIVE = "collective"  # a collective or send/recv over a group; phases = transfers
    ALLOC = "alloc"            # takes mem_bytes of HBM (instant)
    FREE = "free"              # gives mem_bytes of HBM back (instant)
    COPY = "copy"              # a host<->device copy (duration on the copy stream)
    HOST = "host"              # CPU time of the rank's host thread: dispatching kernels, syncs


class Stream(StrEnum):
    """A device's in-order queues, as CUDA streams: each runs one task at a time, in the order
    the compiler issued them."""

    COMPUTE = "compute"
    COMM = "comm"      # tensor/context/expert-parallel collectives
    P2P = "p2p"        # pipeline send/recv of activations (towards the last stage)
    P2P_BWD = "p2p-bwd"  # pipeline send/recv of gradients (towards the first stage)
    DP = "dp"          # data-parallel gradient reduction (all-reduce / reduce-scatter)
    DP_GATHER = "dp-gather"  # parameter all-gathers (ZeRO / FSDP), beside the reductions as in FSDP
    COPY = "copy"      # host <-> device
    HOST = "host"      # the rank's host thread (Python, dispatcher, launches): one op at a time


class MemKind(StrEnum):
    WEIGHTS = "weights"
    GRADIENTS = "gradients"
    OPTIMIZER = "optimizer"
    ACTIVATIONS = "activations"
    TEMPORARY = "temporary"


def _slot_setting_init(cls):
    """Give a frozen, slotted dataclass an __init__ that sets each slot through its descriptor.
    The generated one calls object.__setattr__ per field (1.5 µs for a Task, which the compiler
    issues ~30k times per step); this one has the same signature and makes the same object in
    half the time. The instance stays frozen: assigning a field still raises."""
    params, body, namespace = [], [], {}
    for f in fields(cls):
        assert f.default_factory is MISSING, "defaults are plain values"
        namespace[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        if f.default is MISSING:
            params.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        body.append(f"    _set_{f.name}(self, {f.name})\n")
    exec(f"def __init__(self, {', '.join(params)}):\n{''.join(body)}", namespace)
    cls.__init__ = namespace["__init__"]
    return cls


@_slot_setting_init
@dataclass(frozen=True, slots=True)
class Task:
    """One unit of work. `devices` are the simulated devices whose `stream` it occupies (one
    for compute, the simulated members of the group for a collective). `category` is the
    report's word for it: fwd, bwd, bwd-weight, recompute, optimizer, tp, cp, ep, pp, dp, ..."""

    name: str
    kind: TaskKind
    devices: tuple[int, ...]
    stream: Stream = Stream.COMPUTE
    duration_s: float = 0.0
    transfers: tuple[Transfer, ...] = ()
    mem_bytes: float = 0.0
    mem_kind: MemKind = MemKind.TEMPORARY
    category: str = ""
    layer: int = -1
    micro_batch: int = -1
    flop: float = 0.0
    bytes_moved: float = 0.0
