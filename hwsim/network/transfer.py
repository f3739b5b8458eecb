"""What the engine hands the network: a Transfer (bytes on links), and the NetworkModel protocol.

A collective or a point-to-point send becomes one or more sequential Transfers (one per
algorithm phase). A Transfer is the union of the flows its phase sends, as bytes per link:
`link_bytes[i] = (link index, bytes that cross that link)`. Links are indexed by the
`Topology` (hwsim.hardware.topology), whose `capacity_bytes_per_s` array a NetworkModel uses.

A NetworkModel decides how concurrent transfers share links. It is pure (no SimPy): the engine
asks it for rates whenever the set of active transfers changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence


@dataclass(frozen=True, slots=True)
class Transfer:
    """One phase of a collective: its flows as bytes per link, and its fixed latency.

    `latency_s` is paid once at the start of the phase (per-step latencies of a ring, summed),
    while the bytes flow; `max_link_bytes` is the largest per-link load (the transfer's size
    for fairness between transfers).
    """

    link_bytes: tuple[tuple[int, float], ...]
    latency_s: float = 0.0
    max_link_bytes: float = field(init=False, compare=False)   # computed once: read on every re-solve
    max_link: int = field(init=False, compare=False)           # the highest link index used (-1: none)

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_link_bytes", max((b for _, b in self.link_bytes), default=0.0))
        object.__setattr__(self, "max_link", max((link for link, _ in self.link_bytes), default=-1))


class NetworkModel(Protocol):
    """How active transfers share link bandwidth."""

    def rates(self, transfers: Sequence[Transfer]) -> list[float]:
        """For each active transfer, its progress rate in bytes/s of its most-loaded link
        (so it would finish its bytes phase after `max_link_bytes / rate` seconds if the set
        stayed the same)."""
        ...
