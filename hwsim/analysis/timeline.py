"""timeline.png: a Gantt chart of the step, one row per device stream, with heat strips for
the busiest links and the critical path drawn under the rows it runs through; its title names
what limits the step (the top cause of the critical-path account and its share).

Rows are the simulated devices (a folded run: one per pipeline stage, labelled with how many
real devices it stands for). An unfolded run with more than `max_devices` devices shows one
device per pipeline stage (its first rank) plus a few peers, and says so under the title.
Touching intervals of one category are merged; those at least a pixel wide are drawn as one
PolyCollection of rectangles, and the shorter ones (thousands of small kernels and collectives
in a long step) as one image of pixels whose colour mixes the categories that ran in each pixel
and whose opacity is the fraction of the pixel they kept the stream busy (at least 0.3 where
anything ran). A dense row of short collectives therefore looks as busy as it was, not solid.

Two steps: `timeline_layout(result, account)` reduces the result to a `TimelineData` of plain
arrays and strings (numpy only), and `draw_timeline(data, path)` draws it with matplotlib (Agg,
imported on first use), so that the drawing can run in another process (outputs.py) and
report.html draws the same rows as an SVG (html_report.py). `plot_timeline` does both. (Over
400 lines: the layout and its drawing are the two halves of one picture and share its geometry.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwsim import units
from hwsim.analysis.critical_path import PathAccount
from hwsim.analysis.intervals import busiest_links, link_utilization
from hwsim.engine.task import Stream, TaskKind

__all__ = ["CATEGORY_COLORS", "CATEGORY_LABELS", "STREAM_LABELS", "DPI", "FIG_WIDTH_IN", "PNG_OPTIONS", "TimelineData",
           "shown_devices", "timeline_rows", "merge_intervals", "busy_fraction", "timeline_layout",
           "draw_timeline", "plot_timeline", "time_axis", "timeline_figure_size_in", "bottleneck_words",
           "hex_rgb"]

DPI = 100
PNG_OPTIONS = {"compress_level": 3}   # zlib level: files ~10% larger than the default 6, written 3x faster
FIG_WIDTH_IN = 16.0
_LEFT_IN, _RIGHT_IN = 3.3, 0.9          # room for row labels, and for the colour bar
CATEGORY_COLORS = {
    "fwd": "#4C72B0", "bwd": "#DD8452", "bwd-weight": "#F0B77E", "recompute": "#8172B3",
    "optimizer": "#7F5539", "tp": "#55A868", "cp": "#2A9D8F", "ep": "#B8A43A", "pp": "#C44E52",
    "dp": "#D17FC0", "host": "#E5C100", "fsdp": "#9C6644", "other": "#8C8C8C",
}
CATEGORY_LABELS = {
    "fwd": "forward", "bwd": "backward", "bwd-weight": "backward (weight grad)",
    "recompute": "recompute", "optimizer": "optimizer", "tp": "tp collective",
    "cp": "cp collective", "ep": "ep all-to-all", "pp": "pp send/recv", "dp": "dp collective",
    "host": "host dispatch / sync", "fsdp": "FSDP copy-out", "other": "other",
}
STREAM_LABELS = {
    Stream.COMPUTE: "compute", Stream.COMM: "comm (tp/cp/ep)", Stream.P2P: "p2p fwd sends",
    Stream.P2P_BWD: "p2p bwd sends", Stream.DP: "dp reduce", Stream.DP_GATHER: "dp gather",
    Stream.COPY: "host copy", Stream.HOST: "host thread",
}
IDLE_LABEL = "idle / bubble (no task)"
PATH_LABEL = "critical path"
_BACKGROUND = "#EDEDED"   # a row's idle time shows as this background
_PATH_COLOR = "black"
_MAX_EXTRA_DEVICES = 4
_MIN_SHORT_ALPHA = 0.3
_NOISE_FRACTION = 1e-6
_TITLE_LEFT_IN = 0.2      # the title starts at the figure's left edge (it is the longest line)
_TICK_PAD_PT = 3.5        # matplotlib's default gap between an axis and its tick labels
_ROW_PAD = 0.12           # a row's bar spans [y + pad, y + 1 - pad]
_SUBROWS = 25             # image rows per timeline row (0.12 and 0.88 fall on whole image rows)


def hex_rgb(colour: str) -> tuple[float, float, float]:
    """'#4C72B0' → (r, g, b) in [0, 1]."""
    return tuple(int(colour[i:i + 2], 16) / 255.0 for i in (1, 3, 5))  # type: ignore[return-value]


def time_axis(makespan_s: float) -> tuple[float, str]:
    """(scale, unit) for a time axis: ms below a second, s above."""
    return (units.MS, "ms") if makespan_s < 1.0 else (1.0, "s")


def shown_devices(compiled, summary: dict, max_devices: int = 16) -> tuple[list[int], str]:
    """The simulated devices to draw and a note saying which they are ("" when all)."""
    simulated = list(compiled.simulated)
    if len(simulated) <= max_devices:
        return simulated, ""
    plan, stage_of = compiled.plan, compiled.stage_of
    # room for the busiest device (and, unfolded, a few peers) beside the stages
    n_stage_rows = min(plan.pp, max_devices - (_MAX_EXTRA_DEVICES if plan.pp < max_devices else 1))
    stages = sorted({int(round(x)) for x in np.linspace(0, plan.pp - 1, max(n_stage_rows, 1))})
    by_stage: dict[int, int] = {}
    for device in simulated:
        by_stage.setdefault(stage_of.get(device, 0), device)
    chosen = [by_stage[s] for s in stages if s in by_stage]
    extras: list[tuple[int, str]] = []
    busiest = summary.get("breakdown_device")
    if busiest is not None and busiest not in chosen:
        extras.append((busiest, "the busiest"))
    first = chosen[0]
    if not compiled.folded:
        for axis in ("tp", "cp", "dp"):
            if getattr(plan, axis) > 1:
                extras.append((plan.group(axis, first)[1], f"a {axis} peer of device {first}"))
    for device, why in extras:
        if len(chosen) >= max_devices or device not in stage_of or device in chosen:
            continue
        chosen.append(device)
    extra_words = [f"{'stage ' + str(stage_of[d]) if compiled.folded else 'device ' + str(d)} ({why})"
                   for d, why in extras if d in chosen]
    if compiled.folded:
        listed = ", ".join(str(s) for s in stages)
        note = f"rows: {len(chosen)} of the {len(simulated)} pipeline stages (stages {listed}, spread evenly)"
    else:
        which = "each pipeline stage" if len(stages) == plan.pp else f"{len(stages)} of the {plan.pp} pipeline stages"
        note = (f"rows: {len(chosen)} of {len(simulated)} devices: the first rank of {which}"
                if plan.pp > 1 else f"rows: {len(chosen)} of {len(simulated)} devices: device {first}")
    return chosen, note + (f", plus {', '.join(extra_words)}" if extra_words else "")


def busy_fraction(starts: np.ndarray, ends: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The fraction of each bin [edges[i], edges[i+1]] covered by the (non-overlapping)
    intervals [starts, ends]."""
    def covered_until(times: np.ndarray) -> np.ndarray:
        total = np.zeros_like(times)
        for points, sign in ((np.sort(starts), 1.0), (np.sort(ends), -1.0)):
            before = np.concatenate(([0.0], np.cumsum(points)))
            k = np.searchsorted(points, times, side="right")
            total += sign * (times * k - before[k])
        return total
    edges = np.asarray(edges, dtype=np.float64)
    fraction = np.diff(covered_until(edges)) / np.diff(edges)
    # the running sums cancel: round-off below _NOISE_FRACTION of a bin is no work
    return np.where(fraction > _NOISE_FRACTION, np.minimum(fraction, 1.0), 0.0)


def _short_task_pixels(starts, ends, codes, edges, rgb: np.ndarray) -> np.ndarray:
    """RGBA pixels [n_px, 4] for tasks shorter than a pixel: each pixel's colour mixes the
    categories by their share of it, its opacity is the busy fraction (at least
    `_MIN_SHORT_ALPHA` where anything ran, so that a burst of short tasks stays visible)."""
    n_px = len(edges) - 1
    mixed = np.zeros((n_px, 3))
    total = np.zeros(n_px)
    for code in np.unique(codes).tolist():
        mask = codes == code
        share = busy_fraction(starts[mask], ends[mask], edges)
        mixed += share[:, None] * rgb[code]
        total += share
    pixels = np.zeros((n_px, 4))
    busy = total > 0.0
    pixels[busy, :3] = mixed[busy] / total[busy, None]
    pixels[busy, 3] = np.clip(np.maximum(total[busy], _MIN_SHORT_ALPHA), 0.0, 1.0)
    return pixels


def merge_intervals(starts: np.ndarray, ends: np.ndarray, codes: np.ndarray,
                    min_gap_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge consecutive intervals (by start) of the same code whose gap is at most
    `min_gap_s` (0: touching ones); returns (starts, ends, codes) of the merged runs."""
    if len(starts) == 0:
        return starts, ends, codes
    order = np.argsort(starts, kind="stable")
    s, e, c = starts[order], ends[order], codes[order]
    running_end = np.maximum.accumulate(e)
    breaks = np.ones(len(s), dtype=bool)
    breaks[1:] = (c[1:] != c[:-1]) | (s[1:] - running_end[:-1] > min_gap_s)
    first = np.flatnonzero(breaks)
    return s[first], np.maximum.reduceat(e, first), c[first]


def timeline_rows(trace, devices: list[int]) -> list[tuple[int, Stream, np.ndarray, np.ndarray, list[str]]]:
    """(device, stream, starts, ends, categories) for each non-empty stream of `devices`, in
    device order then Stream order; instant tasks are left out."""
    graph = trace.graph
    streams = trace.stream_intervals()
    rows = []
    for device in devices:
        for stream in Stream:
            key = (device, stream)
            if key not in streams:
                continue
            starts, ends, ids = streams[key]
            keep = ends > starts
            if not np.any(keep):
                continue
            cats = [graph.tasks[t].category or "other" for t in ids[keep].tolist()]
            rows.append((device, stream, starts[keep], ends[keep], cats))
    return rows


def _device_label(compiled, device: int) -> str:
    stage = compiled.stage_of.get(device, 0)
    n = compiled.stands_for.get(device, 1)
    if compiled.folded:
        return f"stage {stage}\n(stands for {n} devices)" if n > 1 else f"stage {stage}"
    return f"device {device}\n(stage {stage})" if compiled.plan.pp > 1 else f"device {device}"


_TOP_IN, _LEGEND_IN, _BOTTOM_IN = 1.4, 0.55, 0.6


def _row_height_in(n_rows: int) -> float:
    return 0.24 if n_rows <= 40 else max(0.16, 9.6 / n_rows)


def _gantt_height_in(n_rows: int) -> float:
    return n_rows * _row_height_in(n_rows) + 0.3


def _links_height_in(n_links: int) -> float:
    return 0.32 * n_links + (0.5 if n_links else 0.0)


def timeline_figure_size_in(n_rows: int, n_links: int) -> tuple[float, float]:
    """(width, height) in inches of timeline.png with `n_rows` stream rows and `n_links` heat
    strips (at `DPI` dots per inch)."""
    height_in = _TOP_IN + _gantt_height_in(max(n_rows, 1)) + _LEGEND_IN + _links_height_in(n_links) + _BOTTOM_IN
    return FIG_WIDTH_IN, height_in




@dataclass(frozen=True)
class TimelineData:
    """What the timeline shows, as plain arrays and strings (no result, no matplotlib): rows
    are numbered from the top; runs are touching intervals of one category merged."""

    title: str
    subtitle: str
    makespan_s: float
    row_labels: tuple[str, ...]                    # the stream of each row
    devices: tuple[tuple[str, int, int], ...]      # (label, first row, last row)
    run_starts_s: np.ndarray
    run_ends_s: np.ndarray
    run_rows: np.ndarray
    run_codes: np.ndarray                          # index into CATEGORY_COLORS
    path_starts_s: np.ndarray                      # the critical path, under the rows it runs through
    path_ends_s: np.ndarray
    path_rows: np.ndarray
    has_path: bool
    link_labels: tuple[str, ...]
    link_utilization: np.ndarray                   # [n_links, n_bins] in [0, 1]
    links_title: str

    @property
    def n_rows(self) -> int:
        return len(self.row_labels)


def bottleneck_words(account: PathAccount, step_s: float) -> str:
    """'limited by compute-bound kernels (62.8% of the critical path)': the largest part of the
    critical-path account (report.bottleneck_account) and its share of the step."""
    from hwsim.analysis.report import part_label   # late: report imports what-if machinery

    parts = [p for p in account.parts if p.seconds > 0.0]
    if not parts or step_s <= 0.0:
        return ""
    top = max(parts, key=lambda p: p.seconds)
    return f"limited by {part_label(top).split(' (')[0]} ({top.seconds / step_s:.1%} of the critical path)"


def _path_runs(account: PathAccount | None, trace, row_of) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    starts, ends, rows = [], [], []
    if account is not None:
        tasks = trace.graph.tasks
        for step in account.steps:
            if step.end_s <= step.start_s:
                continue
            task = tasks[step.task_id]
            if task.kind in (TaskKind.ALLOC, TaskKind.FREE):
                continue
            for device in task.devices:
                row = row_of.get((device, task.stream))
                if row is not None:
                    starts.append(step.start_s)
                    ends.append(step.end_s)
                    rows.append(row)
    return (np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64),
            np.asarray(rows, dtype=np.int32))


def _titles(summary: dict, note: str, account: PathAccount | None) -> tuple[str, str]:
    limited = bottleneck_words(account, summary["step_time_s"]) if account is not None else ""
    title = (f"{summary['name']}: step {units.fmt_time(summary['step_time_s'], 4)}, "
             f"MFU {summary['mfu']:.1%}, {summary['tokens_per_s']:,.0f} tokens/s"
             + (f" \N{EM DASH} {limited}" if limited else ""))
    p = summary["plan"]
    sub = (f"{summary['devices']} devices, tp={p['tp']} pp={p['pp']} dp={p['dp']} cp={p['cp']} ep={p['ep']}, "
           f"{p['schedule']}, {summary['micro_batches']} micro-batches"
           + ("; folded: each row group is one simulated device standing for its peers" if summary["folded"] else "")
           + (f"\n{note}" if note else "")
           + "\ntasks shorter than a pixel are drawn pale, as opaque as the share of the pixel they kept busy"
           + ("; the black line under the rows is the critical path" if account is not None else ""))
    return title, sub


def timeline_layout(result, account: PathAccount | None = None, max_devices: int = 16,
                    n_links: int = 6) -> TimelineData:
    """The rows, runs, critical path and link strips of `result`'s timeline (numpy only)."""
    compiled, trace, summary = result.compiled, result.trace, result.summary
    devices, note = shown_devices(compiled, summary, max_devices)
    rows = timeline_rows(trace, devices)
    links = busiest_links(compiled.topology, trace, n_links)
    codes = {name: i for i, name in enumerate(CATEGORY_COLORS)}
    starts, ends, row_ids, run_codes = [], [], [], []
    row_of: dict[tuple[int, Stream], int] = {}
    groups: dict[int, list[int]] = {}
    for r, (device, stream, s, e, cats) in enumerate(rows):
        row_of[(device, stream)] = r
        groups.setdefault(device, []).append(r)
        code = np.fromiter((codes.get(c, codes["other"]) for c in cats), dtype=np.int16, count=len(cats))
        ms, me, mc = merge_intervals(s, e, code, 0.0)  # touching runs of one category
        starts.append(ms)
        ends.append(me)
        run_codes.append(mc)
        row_ids.append(np.full(len(ms), r, dtype=np.int32))
    makespan = max(trace.makespan_s, 1e-30)
    n_bins = int(max(50, min(800, _plot_width_px() / 2)))
    util = (link_utilization(trace, compiled.topology.capacity_bytes_per_s, [b.link for b in links], n_bins)
            if links else np.zeros((0, n_bins)))
    untracked = sorted({t.category or t.stream.value for t in trace.graph.tasks
                        if t.kind is TaskKind.COLLECTIVE and not t.transfers and t.duration_s > 0.0})
    links_title = ("busiest links: utilization over time (links that carried the same bytes grouped)"
                   + (f"; {'/'.join(untracked)} collectives ran as fixed durations at this granularity and "
                      f"put no traffic on the links" if untracked else ""))
    title, sub = _titles(summary, note, account)
    path = _path_runs(account, trace, row_of)

    def joined(parts, dtype):
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)

    return TimelineData(
        title=title, subtitle=sub, makespan_s=makespan,
        row_labels=tuple(STREAM_LABELS.get(stream, stream.value) for _, stream, *_ in rows),
        devices=tuple((_device_label(compiled, d), members[0], members[-1]) for d, members in groups.items()),
        run_starts_s=joined(starts, np.float64), run_ends_s=joined(ends, np.float64),
        run_rows=joined(row_ids, np.int32), run_codes=joined(run_codes, np.int16),
        path_starts_s=path[0], path_ends_s=path[1], path_rows=path[2], has_path=account is not None,
        link_labels=tuple(f"{b.label}{f' (+{b.n_alike - 1} alike)' if b.n_alike > 1 else ''}, "
                          f"mean {b.utilization_frac:.0%}" for b in links),
        link_utilization=util, links_title=links_title)


def _plot_width_px() -> float:
    return (FIG_WIDTH_IN - _LEFT_IN - _RIGHT_IN) * DPI


def plot_timeline(result, path: Path, account: PathAccount | None = None,
                  max_devices: int = 16, n_links: int = 6) -> Path:
    """Draw timeline.png (see the module docstring); returns `path`."""
    return draw_timeline(timeline_layout(result, account, max_devices, n_links), path)


def draw_timeline(data: TimelineData, path: Path) -> Path:
    """Draw `data` into a PNG at `path`; returns `path`."""
    timeline_figure(data).savefig(path, dpi=DPI, pil_kwargs=PNG_OPTIONS)
    return path


def timeline_figure(data: TimelineData):
    """The matplotlib Figure of timeline.png (not saved)."""
    from matplotlib.collections import LineCollection, PolyCollection
    from matplotlib.figure import Figure  # no pyplot: the caller's backend (a notebook's inline one) stays
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    makespan, n_rows = data.makespan_s, max(data.n_rows, 1)
    n_links = len(data.link_labels)
    gantt_in, links_in = _gantt_height_in(n_rows), _links_height_in(n_links)
    _, height_in = timeline_figure_size_in(n_rows, n_links)
    fig = Figure(figsize=(FIG_WIDTH_IN, height_in), dpi=DPI)
    width_frac = 1.0 - (_LEFT_IN + _RIGHT_IN) / FIG_WIDTH_IN
    left_frac = _LEFT_IN / FIG_WIDTH_IN

    def axes_at(bottom_in: float, h_in: float):
        return fig.add_axes((left_frac, bottom_in / height_in, width_frac, h_in / height_in))

    gantt_bottom = _BOTTOM_IN + links_in + _LEGEND_IN
    ax = axes_at(gantt_bottom, gantt_in)
    scale, unit = time_axis(makespan)
    n_px = int(round(_plot_width_px()))
    px_s = makespan / n_px
    palette = list(CATEGORY_COLORS.values())
    rgb = np.asarray([hex_rgb(c) for c in palette])
    edges = np.linspace(0.0, makespan, n_px + 1)
    ys = (n_rows - 1 - np.arange(n_rows)).astype(np.float64)   # row r's bottom, top row first

    # idle background of every row, one collection
    back = np.empty((data.n_rows, 4, 2))
    back[:, (0, 1), 0], back[:, (2, 3), 0] = 0.0, makespan
    back[:, (0, 3), 1] = ys[:data.n_rows, None] + _ROW_PAD
    back[:, (1, 2), 1] = ys[:data.n_rows, None] + 1.0 - _ROW_PAD
    ax.add_collection(PolyCollection(back, facecolors=_BACKGROUND, edgecolors="none", zorder=0))

    s, e, rows, c = data.run_starts_s, data.run_ends_s, data.run_rows, data.run_codes
    wide = (e - s) >= px_s
    quad = np.empty((int(wide.sum()), 4, 2))
    quad[:, 0, 0] = quad[:, 1, 0] = s[wide]
    quad[:, 2, 0] = quad[:, 3, 0] = e[wide]
    y0 = ys[rows[wide]] + _ROW_PAD
    quad[:, (0, 3), 1] = y0[:, None]
    quad[:, (1, 2), 1] = (y0 + 1.0 - 2 * _ROW_PAD)[:, None]
    if len(quad):
        ax.add_collection(PolyCollection(quad, facecolors=[palette[i] for i in c[wide].tolist()],
                                         edgecolors="none", zorder=2))
    short = ~wide
    if short.any():   # one image for the short tasks of every row; the gaps between rows stay clear
        image = np.zeros((n_rows * _SUBROWS, n_px, 4), dtype=np.uint8)   # 8 bits: no float resampling
        pad = int(round(_ROW_PAD * _SUBROWS))
        for r in np.unique(rows[short]).tolist():
            mine = short & (rows == r)
            pixels = _short_task_pixels(s[mine], e[mine], c[mine], edges, rgb)
            top = r * _SUBROWS
            image[top + pad: top + _SUBROWS - pad] = np.round(pixels * 255.0).astype(np.uint8)[None]
        ax.imshow(image, extent=(0.0, makespan, 0.0, n_rows), aspect="auto", interpolation="nearest", zorder=1)
    if len(data.path_rows):
        y = ys[data.path_rows] + 0.06
        segments = np.stack((np.column_stack((data.path_starts_s, y)), np.column_stack((data.path_ends_s, y))), axis=1)
        ax.add_collection(LineCollection(segments, colors=_PATH_COLOR, linewidths=2.0, zorder=3, capstyle="butt"))
    _label_rows(ax, data, n_rows)
    ax.set_xlim(0.0, makespan)
    ax.set_ylim(0.0, n_rows)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / scale:g}"))
    if n_links:
        ax.tick_params(labelbottom=False)
    else:
        ax.set_xlabel(f"time ({unit})")
    ax.grid(axis="x", color="#BBBBBB", lw=0.5, zorder=1)

    fig.text(_TITLE_LEFT_IN / FIG_WIDTH_IN, 1.0 - 0.35 / height_in, data.title, fontsize=13.5, weight="bold",
             va="center")
    fig.text(left_frac, 1.0 - 0.62 / height_in, data.subtitle, fontsize=9.5, va="top", color="#333333",
             linespacing=1.4)
    present = set(c.tolist())
    handles = [Patch(facecolor=palette[i], label=CATEGORY_LABELS[name])
               for i, name in enumerate(CATEGORY_COLORS) if i in present]
    handles.append(Patch(facecolor=_BACKGROUND, label=IDLE_LABEL))
    if data.has_path:
        handles.append(Line2D([], [], color=_PATH_COLOR, lw=2.0, label=PATH_LABEL))
    fig.legend(handles=handles, loc="center", ncol=min(len(handles), 10), fontsize=9, frameon=False,
               bbox_to_anchor=(left_frac + width_frac / 2, (gantt_bottom - _LEGEND_IN / 2) / height_in))
    if n_links:
        _draw_links(fig, axes_at(_BOTTOM_IN, links_in - 0.5), data, scale, unit)
    return fig


def _label_rows(ax, data: TimelineData, n_rows: int) -> None:
    """Each row's stream left of it, as plain texts where tick labels would be (a tick per
    row costs as much again to draw)."""
    from matplotlib.transforms import ScaledTranslation

    ax.set_yticks([])
    small = _row_height_in(n_rows) < 0.2
    beside = ax.get_yaxis_transform() + ScaledTranslation(-_TICK_PAD_PT / 72.0, 0.0, ax.figure.dpi_scale_trans)
    for r, label in enumerate(data.row_labels):
        ax.text(0.0, n_rows - 1 - r + 0.5, label, transform=beside, ha="right", va="center_baseline",
                fontsize=6.5 if small else 8)
    for g, (label, first, last) in enumerate(data.devices):
        top, bottom = n_rows - first, n_rows - 1 - last
        if g:
            ax.axhline(top, color="#555555", lw=0.8, zorder=4)
        ax.text(-0.115, (top + bottom) / 2, label, transform=ax.get_yaxis_transform(),
                ha="right", va="center", fontsize=8 if small else 9, weight="bold")


def _draw_links(fig, lax, data: TimelineData, scale: float, unit: str) -> None:
    from matplotlib.ticker import FuncFormatter

    n_links = len(data.link_labels)
    image = lax.imshow(data.link_utilization, aspect="auto", cmap="magma_r", vmin=0.0, vmax=1.0,
                       interpolation="nearest", extent=(0.0, data.makespan_s, n_links, 0.0))
    lax.set_yticks([i + 0.5 for i in range(n_links)])
    lax.set_yticklabels(data.link_labels, fontsize=8)
    lax.tick_params(axis="y", length=0)
    lax.set_xlim(0.0, data.makespan_s)
    lax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / scale:g}"))
    lax.set_xlabel(f"time ({unit})")
    lax.set_title(data.links_title, fontsize=9, loc="left")
    box = lax.get_position()
    cax = fig.add_axes((box.x1 + 0.01, box.y0, 0.008, box.height))
    bar = fig.colorbar(image, cax=cax)
    bar.set_label("utilization", fontsize=8)
    bar.ax.tick_params(labelsize=7)
