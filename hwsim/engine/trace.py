"""Trace: what ran when, as arrays; the executor's result and the analysis's input.

- tasks: `start_s[i]`, `end_s[i]` for task id i (float64); per-stream intervals derive from
  the graph's stream orders.
- network: one row per transfer phase that ran (task id, phase index, start incl. latency,
  end), and rate segments: during [segment_start_s, segment_end_s) the phase progressed at
  `segment_rate_bytes_per_s` on its most loaded link, so link l carried
  `rate * link_bytes[l] / max_link_bytes` bytes/s. That gives bytes per link and per-link
  utilization over time.
- memory: one `MemoryTimeline` per device, peak bytes, and the OOM findings.
"""

from __future__ import annotations

import hashlib

import numpy as np

from hwsim.engine.memory import MemoryTimeline, OomFinding
from hwsim.engine.task import Stream
from hwsim.engine.taskgraph import StreamKey, TaskGraph
from hwsim.network.transfer import Transfer

__all__ = ["NetworkRecord", "Trace"]


class NetworkRecord:
    """Filled by the executor while it runs: transfer phases and rate segments (plain lists)."""

    __slots__ = ("phase_task", "phase_index", "phase_start_s", "phase_end_s", "phase_transfer",
                 "segment_phase", "segment_start_s", "segment_end_s", "segment_rate")

    def __init__(self) -> None:
        self.phase_task: list[int] = []
        self.phase_index: list[int] = []
        self.phase_start_s: list[float] = []
        self.phase_end_s: list[float] = []
        self.phase_transfer: list[Transfer] = []
        self.segment_phase: list[int] = []
        self.segment_start_s: list[float] = []
        self.segment_end_s: list[float] = []
        self.segment_rate: list[float] = []

    def open_phase(self, task_id: int, phase: int, start_s: float, transfer: Transfer) -> int:
        """A phase begins (its latency first); returns its row. The end is set later."""
        self.phase_task.append(task_id)
        self.phase_index.append(phase)
        self.phase_start_s.append(start_s)
        self.phase_end_s.append(-1.0)
        self.phase_transfer.append(transfer)
        return len(self.phase_task) - 1

    def add_segment(self, row: int, start_s: float, end_s: float, rate: float) -> None:
        self.segment_phase.append(row)
        self.segment_start_s.append(start_s)
        self.segment_end_s.append(end_s)
        self.segment_rate.append(rate)

    def max_link_index(self) -> int:
        """The highest link index any phase used, -1 if none."""
        return max((transfer.max_link for transfer in self.phase_transfer), default=-1)


class Trace:
    """The result of `simulate`: task intervals, network phases and segments, memory."""

    def __init__(self, graph: TaskGraph, start_s: list[float], end_s: list[float],
                 network: NetworkRecord, memory: dict[int, MemoryTimeline],
                 oom_findings: list[OomFinding], n_links: int = 0) -> None:
        self.graph = graph
        self.start_s = np.asarray(start_s, dtype=np.float64)
        self.end_s = np.asarray(end_s, dtype=np.float64)
        self.makespan_s = float(self.end_s.max()) if len(self.end_s) else 0.0
        self.phase_task_id = np.asarray(network.phase_task, dtype=np.int64)
        self.phase_index = np.asarray(network.phase_index, dtype=np.int64)
        self.phase_start_s = np.asarray(network.phase_start_s, dtype=np.float64)
        self.phase_end_s = np.asarray(network.phase_end_s, dtype=np.float64)
        self.segment_phase = np.asarray(network.segment_phase, dtype=np.int64)
        self.segment_start_s = np.asarray(network.segment_start_s, dtype=np.float64)
        self.segment_end_s = np.asarray(network.segment_end_s, dtype=np.float64)
        self.segment_rate_bytes_per_s = np.asarray(network.segment_rate, dtype=np.float64)
        self._phase_transfers = tuple(network.phase_transfer)
        self.memory = memory
        self.oom_findings: tuple[OomFinding, ...] = tuple(oom_findings)
        self.n_links = n_links
        self._intervals: dict[StreamKey, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    # --- tasks and streams -------------------------------------------------------------------

    @property
    def n_tasks(self) -> int:
        return len(self.start_s)

    def stream_intervals(self) -> dict[StreamKey, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(device, stream) -> (starts_s, ends_s, task_ids) in the stream's issue order. Instant
        tasks (ALLOC, FREE, zero durations) appear as empty intervals."""
        if self._intervals is None:   # built once: reports and plots ask for it many times
            out = {}
            for key, order in self.graph.stream_order().items():
                ids = np.asarray(order, dtype=np.int64)
                out[key] = (self.start_s[ids], self.end_s[ids], ids)
            self._intervals = out
        return self._intervals

    def busy_s(self, device: int, stream: Stream) -> float:
        """Seconds the stream spent running tasks (its intervals never overlap)."""
        order = self.graph.stream_order().get((device, stream))
        if not order:
            return 0.0
        ids = np.asarray(order, dtype=np.int64)
        return float(np.sum(self.end_s[ids] - self.start_s[ids]))

    def utilization(self, device: int, stream: Stream) -> float:
        """Fraction of the makespan the stream was busy, in [0, 1] (0 for an empty run)."""
        if self.makespan_s <= 0.0:
            return 0.0
        return min(max(self.busy_s(device, stream) / self.makespan_s, 0.0), 1.0)

    def fingerprint(self) -> str:
        """sha256 of the start and end arrays: equal traces, equal fingerprints."""
        digest = hashlib.sha256()
        digest.update(self.start_s.tobytes())
        digest.update(self.end_s.tobytes())
        return digest.hexdigest()

    # --- network -----------------------------------------------------------------------------

    def _segment_link_rates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One entry per (segment, link of its phase): start, end, link, bytes/s on that link."""
        counts = np.zeros(len(self._phase_transfers), dtype=np.int64)
        links: list[int] = []
        fracs: list[float] = []
        for row, transfer in enumerate(self._phase_transfers):
            size_bytes = transfer.max_link_bytes
            counts[row] = len(transfer.link_bytes)
            for link, link_bytes in transfer.link_bytes:
                links.append(link)
                fracs.append(link_bytes / size_bytes if size_bytes > 0.0 else 0.0)
        offsets = np.concatenate(([0], np.cumsum(counts)))
        seg_counts = counts[self.segment_phase]
        # entry k of segment s reads link offsets[phase(s)] + k
        seg_of_entry = np.repeat(np.arange(len(self.segment_phase)), seg_counts)
        within = np.arange(len(seg_of_entry)) - np.repeat(np.cumsum(seg_counts) - seg_counts,
                                                          seg_counts)
        link_pos = offsets[self.segment_phase][seg_of_entry] + within
        link_arr = np.asarray(links, dtype=np.int64)[link_pos]
        rate_arr = (self.segment_rate_bytes_per_s[seg_of_entry]
                    * np.asarray(fracs, dtype=np.float64)[link_pos])
        return (self.segment_start_s[seg_of_entry], self.segment_end_s[seg_of_entry], link_arr,
                rate_arr)

    def _links(self, n_links: int | None) -> int:
        n = self.n_links if n_links is None else n_links
        used = max((link for t in self._phase_transfers for link, _ in t.link_bytes), default=-1)
        if n <= used:
            raise ValueError(f"n_links={n} but the trace used link {used}")
        return n

    def link_busy_bytes(self, n_links: int | None = None) -> np.ndarray:
        """Bytes each link carried over the run, [n_links] (default: the trace's n_links)."""
        n = self._links(n_links)
        start, end, link, rate = self._segment_link_rates()
        return np.bincount(link, weights=rate * (end - start), minlength=n).astype(np.float64)

    def link_utilization_timeline(self, capacity_bytes_per_s: np.ndarray,
                                  n_bins: int) -> np.ndarray:
        """[n_links, n_bins] in [0, 1]: the fraction of each link's capacity used in each of
        `n_bins` equal bins over [0, makespan]. Links of zero capacity read 0."""
        capacity = np.asarray(capacity_bytes_per_s, dtype=np.float64)
        n = self._links(len(capacity))
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        out = np.zeros((n, n_bins), dtype=np.float64)
        if self.makespan_s <= 0.0:
            return out
        edges = np.linspace(0.0, self.makespan_s, n_bins + 1)
        start, end, link, rate = self._segment_link_rates()
        # Bytes on a link by time T = sum over entries of rate * clip(T - start, 0, end - start):
        # ramps with slope +rate from `start` and -rate from `end`; evaluate at the bin edges.
        points = np.concatenate((start, end))
        slopes = np.concatenate((rate, -rate))
        point_links = np.concatenate((link, link))
        for one_link in np.unique(point_links):
            mask = point_links == one_link
            order = np.argsort(points[mask], kind="stable")
            pts, slp = points[mask][order], slopes[mask][order]
            cum_slope = np.concatenate(([0.0], np.cumsum(slp)))
            cum_moment = np.concatenate(([0.0], np.cumsum(slp * pts)))
            k = np.searchsorted(pts, edges, side="right")
            carried_bytes = edges * cum_slope[k] - cum_moment[k]
            if capacity[one_link] > 0.0:
                out[one_link] = np.diff(carried_bytes) / (capacity[one_link] * np.diff(edges))
        return np.clip(out, 0.0, 1.0)

    # --- memory ------------------------------------------------------------------------------

    def peak_memory_bytes(self) -> dict[int, float]:
        """Device -> its highest total memory level during the run."""
        return {device: timeline.peak_bytes for device, timeline in self.memory.items()}
