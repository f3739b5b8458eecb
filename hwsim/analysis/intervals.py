"""What ran when, as rows and rates: task intervals per device, and link usage.

- `interval_rows(trace)`: one row per (task, device) for every task that took time
  (end > start); ALLOC/FREE and other instant tasks are left out (memory lives in the memory
  timelines). A collective over several simulated devices gives one row per device.
  `write_intervals_csv` / `write_intervals_parquet` write them with the columns of
  `INTERVAL_COLUMNS`.
- Link usage, computed from the trace's network record without expanding every phase into its
  links: the compiler shares Transfer objects between the many phases that send the same
  pattern, so the work is done once per distinct Transfer (a folded 1024-device run has ~60k
  phases but a few dozen distinct transfers of ~300k link entries each).
  `link_carried_bytes` (bytes per link over the step), `busiest_links` (the links to show,
  links carrying the same bytes on the same tier grouped), `link_utilization` (fraction of
  capacity per time bin) and `window_utilization` (over given time windows).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from hwsim.engine.task import TaskKind
from hwsim.engine.trace import Trace
from hwsim.hardware.topology import Topology
from hwsim.network.transfer import Transfer

__all__ = [
    "INTERVAL_COLUMNS", "interval_rows", "interval_columns", "write_intervals_csv", "write_intervals_parquet",
    "write_interval_files",
    "LinkRates", "BusyLink", "link_carried_bytes", "link_rates", "busiest_links",
    "link_utilization", "window_utilization", "link_label",
]

INTERVAL_COLUMNS = ("task_id", "device", "stream", "name", "category", "layer", "micro_batch",
                    "start_s", "end_s", "flop", "bytes_moved")
# Links whose carried bytes agree to this relative tolerance (and share a tier) are "alike".
_ALIKE_REL_TOLERANCE = 1e-6


# --- task intervals ------------------------------------------------------------------------

def interval_rows(trace: Trace) -> tuple[np.ndarray, np.ndarray]:
    """(task ids, devices), one entry per device of each task with end > start that is not an
    ALLOC or FREE; ordered by device, then start time, then task id."""
    graph = trace.graph
    ids: list[int] = []
    devices: list[int] = []
    durations = trace.end_s - trace.start_s
    for task_id, task in enumerate(graph.tasks):
        if durations[task_id] <= 0.0 or task.kind in (TaskKind.ALLOC, TaskKind.FREE):
            continue
        for device in task.devices:
            ids.append(task_id)
            devices.append(device)
    id_arr = np.asarray(ids, dtype=np.int64)
    dev_arr = np.asarray(devices, dtype=np.int64)
    order = np.lexsort((id_arr, trace.start_s[id_arr], dev_arr)) if len(id_arr) else id_arr
    return id_arr[order], dev_arr[order]


def interval_columns(trace: Trace) -> dict[str, list | np.ndarray]:
    """`interval_rows` as columns named `INTERVAL_COLUMNS` (numbers as numpy arrays, text and
    optional numbers as lists): what the CSV and Parquet files hold."""
    ids, devices = interval_rows(trace)
    tasks = trace.graph.tasks
    unique = np.unique(ids)
    per_task = {t: (task.stream.value, task.name, task.category, task.layer, task.micro_batch, task.flop,
                    task.bytes_moved) for t in unique.tolist() for task in (tasks[t],)}
    rows = [per_task[t] for t in ids.tolist()]
    text = list(zip(*rows)) if rows else [()] * 7
    return {"task_id": ids, "device": devices, "stream": list(text[0]), "name": list(text[1]),
            "category": list(text[2]), "layer": list(text[3]), "micro_batch": list(text[4]),
            "start_s": trace.start_s[ids], "end_s": trace.end_s[ids], "flop": list(text[5]),
            "bytes_moved": list(text[6])}


def write_intervals_csv(trace: Trace, path: Path) -> int:
    """Write `interval_rows` as CSV (header `INTERVAL_COLUMNS`, times in seconds with full
    precision); returns the number of rows."""
    return write_interval_files(interval_columns(trace), csv_path=path)


def write_intervals_parquet(trace: Trace, path: Path) -> bool:
    """Write the same rows as Parquet when pyarrow is importable; False (nothing written) if not."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    write_interval_files(interval_columns(trace), parquet_path=path)
    return True


def write_interval_files(columns: dict[str, list | np.ndarray], csv_path: Path | None = None,
                         parquet_path: Path | None = None) -> int:
    """Write `interval_columns` as CSV (csv module: numbers as Python prints them) and/or Parquet
    (pyarrow, imported here); returns the number of rows."""
    if csv_path is not None:
        with open(csv_path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(INTERVAL_COLUMNS)
            writer.writerows(zip(*(_plain(columns[name]) for name in INTERVAL_COLUMNS)))
    if parquet_path is not None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        # Table.from_pydict, not pa.table: the latter imports pandas to check for a DataFrame
        pq.write_table(pa.Table.from_pydict({name: columns[name] for name in INTERVAL_COLUMNS}), parquet_path)
    return len(columns["task_id"])


def _plain(column: list | np.ndarray) -> list:
    return column.tolist() if isinstance(column, np.ndarray) else column


# --- link usage ----------------------------------------------------------------------------

def _distinct_transfers(trace: Trace) -> tuple[list[Transfer], np.ndarray]:
    """The distinct Transfer objects of the trace's phases, and for each phase row its index."""
    tasks = trace.graph.tasks
    distinct: list[Transfer] = []
    position: dict[int, int] = {}
    index = np.empty(len(trace.phase_task_id), dtype=np.int64)
    for row, (task_id, phase) in enumerate(zip(trace.phase_task_id.tolist(),
                                               trace.phase_index.tolist())):
        transfer = tasks[task_id].transfers[phase]
        found = position.get(id(transfer))
        if found is None:
            found = position[id(transfer)] = len(distinct)
            distinct.append(transfer)
        index[row] = found
    return distinct, index


def link_carried_bytes(trace: Trace, n_links: int) -> np.ndarray:
    """Bytes each link carried over the step, [n_links] (every phase ran to completion)."""
    out = np.zeros(n_links, dtype=np.float64)
    distinct, index = _distinct_transfers(trace)
    counts = np.bincount(index, minlength=len(distinct)) if len(index) else np.zeros(0)
    for transfer, count in zip(distinct, counts.tolist()):
        if count and transfer.link_bytes:
            links = np.fromiter((link for link, _ in transfer.link_bytes), dtype=np.int64)
            amounts = np.fromiter((b for _, b in transfer.link_bytes), dtype=np.float64)
            np.add.at(out, links, amounts * count)
    return out


@dataclass(frozen=True)
class LinkRates:
    """For each requested link, the rate segments that crossed it: (starts_s, ends_s,
    rates_bytes_per_s), arrays of equal length."""

    by_link: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]

    def carried_until(self, link: int, times_s: np.ndarray) -> np.ndarray:
        """Bytes the link had carried by each of `times_s` (any order)."""
        times = np.asarray(times_s, dtype=np.float64)
        if link not in self.by_link:
            return np.zeros_like(times)
        starts, ends, rates = self.by_link[link]
        total = np.zeros_like(times)
        # Each segment adds rate * clip(t - start, 0, end - start): a ramp up from `start`
        # cancelled by a ramp down from `end`.
        for points, sign in ((starts, 1.0), (ends, -1.0)):
            order = np.argsort(points, kind="stable")
            pts, rts = points[order], rates[order]
            cum_rate = np.concatenate(([0.0], np.cumsum(rts)))
            cum_moment = np.concatenate(([0.0], np.cumsum(rts * pts)))
            k = np.searchsorted(pts, times, side="right")
            total += sign * (times * cum_rate[k] - cum_moment[k])
        return total


def link_rates(trace: Trace, links: Sequence[int]) -> LinkRates:
    """The rate segments of `links` (see LinkRates)."""
    wanted = {link: j for j, link in enumerate(dict.fromkeys(int(x) for x in links))}
    distinct, index = _distinct_transfers(trace)
    fractions = np.zeros((len(distinct), len(wanted)), dtype=np.float64)
    for u, transfer in enumerate(distinct):
        top = transfer.max_link_bytes
        if top <= 0.0:
            continue
        for link, n_bytes in transfer.link_bytes:
            j = wanted.get(link)
            if j is not None:
                fractions[u, j] += n_bytes / top
    out: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    seg_transfer = index[trace.segment_phase] if len(trace.segment_phase) else np.zeros(0, np.int64)
    for link, j in wanted.items():
        rates = trace.segment_rate_bytes_per_s * fractions[seg_transfer, j]
        keep = rates > 0.0
        out[link] = (trace.segment_start_s[keep], trace.segment_end_s[keep], rates[keep])
    return LinkRates(out)


def link_utilization(trace: Trace, capacity_bytes_per_s: np.ndarray, links: Sequence[int],
                     n_bins: int, rates: LinkRates | None = None) -> np.ndarray:
    """[len(links), n_bins] in [0, 1]: the fraction of each link's capacity used in each of
    `n_bins` equal bins over [0, makespan]."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    out = np.zeros((len(links), n_bins), dtype=np.float64)
    if trace.makespan_s <= 0.0 or not len(links):
        return out
    rates = rates or link_rates(trace, links)
    edges = np.linspace(0.0, trace.makespan_s, n_bins + 1)
    for i, link in enumerate(links):
        capacity = float(capacity_bytes_per_s[link])
        if capacity > 0.0:
            out[i] = np.diff(rates.carried_until(int(link), edges)) / (capacity * np.diff(edges))
    return np.clip(out, 0.0, 1.0)


def window_utilization(rates: LinkRates, link: int, capacity_bytes_per_s: float,
                       windows_s: Sequence[tuple[float, float]]) -> float:
    """The link's utilization over the union of time windows (bytes carried in them over
    capacity × their total length); 0 for no time or no capacity."""
    if not windows_s or capacity_bytes_per_s <= 0.0:
        return 0.0
    w = np.asarray(windows_s, dtype=np.float64)
    length_s = float(np.sum(w[:, 1] - w[:, 0]))
    if length_s <= 0.0:
        return 0.0
    carried = rates.carried_until(link, w[:, 1]) - rates.carried_until(link, w[:, 0])
    return float(min(max(np.sum(carried) / (capacity_bytes_per_s * length_s), 0.0), 1.0))


@dataclass(frozen=True, slots=True)
class BusyLink:
    """A link to show, its mean utilization over the step, and how many links (itself
    included) carried the same bytes on the same tier."""

    link: int
    utilization_frac: float
    n_alike: int
    label: str


def link_label(topology: Topology, link: int) -> str:
    """'nvlink dev 3→n0.nvswitch', 'network n1.nic2→leaf0'."""
    lk = topology.links[link]
    src = f"dev {lk.src}" if isinstance(lk.src, int) else str(lk.src)
    dst = f"dev {lk.dst}" if isinstance(lk.dst, int) else str(lk.dst)
    return f"{lk.tier.value} {src}→{dst}"


def busiest_links(topology: Topology, trace: Trace, k: int,
                  carried_bytes: np.ndarray | None = None) -> list[BusyLink]:
    """Up to `k` links by mean utilization over the step, one per group of alike links (same
    tier, same carried bytes) so that a folded run's mirrored links do not fill the list; the
    busiest group of each tier is always among them (up to `k`); links that carried nothing
    are left out. Sorted by utilization, highest first."""
    capacity = np.asarray(topology.capacity_bytes_per_s, dtype=np.float64)
    carried = link_carried_bytes(trace, len(capacity)) if carried_bytes is None else carried_bytes
    if trace.makespan_s <= 0.0:
        return []
    with np.errstate(divide="ignore", invalid="ignore"):
        util = np.where(capacity > 0.0, carried / (capacity * trace.makespan_s), 0.0)
    groups: dict[tuple[str, float], list[int]] = {}
    for link in np.argsort(-util, kind="stable").tolist():
        if carried[link] <= 0.0:
            break
        tier = topology.links[link].tier.value
        # group by tier and carried bytes rounded to the tolerance
        key = (tier, float(np.round(np.log(carried[link]) / _ALIKE_REL_TOLERANCE)))
        groups.setdefault(key, []).append(link)
    ranked = sorted(groups.values(), key=lambda members: (-util[members[0]], members[0]))
    # the busiest group of every tier first (a reader wants to see each fabric), then the rest
    firsts: dict[str, list[int]] = {}
    for members in ranked:
        firsts.setdefault(topology.links[members[0]].tier.value, members)
    picked = list(firsts.values())[:k]
    picked += [m for m in ranked if all(m is not p for p in picked)][:k - len(picked)]
    chosen = sorted(picked, key=lambda members: (-util[members[0]], members[0]))
    return [BusyLink(members[0], float(min(util[members[0]], 1.0)), len(members),
                     link_label(topology, members[0])) for members in chosen]
