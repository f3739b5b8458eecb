"""timeline.png: a Gantt chart of the step, one row per device stream, with heat strips for
the busiest links and the critical path drawn under the rows it runs through.

Rows are the simulated devices (a folded run: one per pipeline stage, labelled with how many
real devices it stands for). An unfolded run with more than `max_devices` devices shows one
device per pipeline stage (its first rank) plus a few peers, and says so under the title.
Touching intervals of one category are merged; those at least a pixel wide are drawn as one
PolyCollection of rectangles, and the shorter ones (thousands of small kernels and collectives
in a long step) as a strip of pixels whose colour mixes the categories that ran in each pixel
and whose opacity is the fraction of the pixel they kept the stream busy (at least 0.3 where
anything ran). A dense row of short collectives therefore looks as busy as it was, not solid.
100k+ intervals draw in about a second.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: the caller's backend (a notebook's inline one) stays as it is
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection, PolyCollection  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from hwsim import units  # noqa: E402
from hwsim.analysis.critical_path import PathAccount  # noqa: E402
from hwsim.analysis.intervals import busiest_links, link_utilization  # noqa: E402
from hwsim.engine.task import Stream, TaskKind  # noqa: E402

__all__ = ["CATEGORY_COLORS", "CATEGORY_LABELS", "STREAM_LABELS", "DPI", "FIG_WIDTH_IN",
           "shown_devices", "timeline_rows", "merge_intervals", "busy_fraction", "plot_timeline", "time_axis",
           "timeline_figure_size_in"]

DPI = 100
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
_BACKGROUND = "#EDEDED"   # a row's idle time shows as this background
_PATH_COLOR = "black"
_MAX_EXTRA_DEVICES = 4
_MIN_SHORT_ALPHA = 0.3
_NOISE_FRACTION = 1e-6


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
    """An RGBA strip [1, n_px, 4] for tasks shorter than a pixel: each pixel's colour mixes
    the categories by their share of it, its opacity is the busy fraction (at least
    `_MIN_SHORT_ALPHA` where anything ran, so that a burst of short tasks stays visible)."""
    n_px = len(edges) - 1
    mixed = np.zeros((n_px, 3))
    total = np.zeros(n_px)
    for code in np.unique(codes).tolist():
        mask = codes == code
        share = busy_fraction(starts[mask], ends[mask], edges)
        mixed += share[:, None] * rgb[code]
        total += share
    image = np.zeros((1, n_px, 4))
    busy = total > 0.0
    image[0, busy, :3] = mixed[busy] / total[busy, None]
    image[0, busy, 3] = np.clip(np.maximum(total[busy], _MIN_SHORT_ALPHA), 0.0, 1.0)
    return image


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


def plot_timeline(result, path: Path, account: PathAccount | None = None,
                  max_devices: int = 16, n_links: int = 6) -> Path:
    """Draw timeline.png (see the module docstring); returns `path`."""
    compiled, trace, summary = result.compiled, result.trace, result.summary
    makespan = max(trace.makespan_s, 1e-30)
    devices, note = shown_devices(compiled, summary, max_devices)
    rows = timeline_rows(trace, devices)
    links = busiest_links(compiled.topology, trace, n_links)

    n_rows = max(len(rows), 1)
    gantt_in, links_in = _gantt_height_in(n_rows), _links_height_in(len(links))
    _, height_in = timeline_figure_size_in(n_rows, len(links))
    fig = Figure(figsize=(FIG_WIDTH_IN, height_in), dpi=DPI)
    width_frac = 1.0 - (_LEFT_IN + _RIGHT_IN) / FIG_WIDTH_IN
    left_frac = _LEFT_IN / FIG_WIDTH_IN

    def axes_at(bottom_in: float, h_in: float):
        return fig.add_axes((left_frac, bottom_in / height_in, width_frac, h_in / height_in))

    legend_in = _LEGEND_IN
    links_bottom = _BOTTOM_IN
    gantt_bottom = _BOTTOM_IN + links_in + legend_in
    ax = axes_at(gantt_bottom, gantt_in)
    scale, unit = time_axis(makespan)
    px_s = makespan / (width_frac * FIG_WIDTH_IN * DPI)

    codes = {name: i for i, name in enumerate(CATEGORY_COLORS)}
    palette = list(CATEGORY_COLORS.values())
    rgb = np.asarray([to_rgb(c) for c in palette])
    n_px = int(round(width_frac * FIG_WIDTH_IN * DPI))
    edges = np.linspace(0.0, makespan, n_px + 1)
    verts, colours, present = [], [], set()
    row_y: dict[tuple[int, Stream], float] = {}
    ax.set_facecolor("white")
    for r, (device, stream, starts, ends, cats) in enumerate(rows):
        y = n_rows - 1 - r
        row_y[(device, stream)] = y
        y0, y1 = y + 0.12, y + 0.88
        ax.axhspan(y0, y1, color=_BACKGROUND, zorder=0, lw=0)
        code = np.asarray([codes.get(c, codes["other"]) for c in cats], dtype=np.int64)
        s, e, c = merge_intervals(starts, ends, code, 0.0)  # touching runs of one category
        present.update(c.tolist())
        wide = (e - s) >= px_s
        quad = np.empty((int(wide.sum()), 4, 2))
        quad[:, 0, 0] = quad[:, 1, 0] = s[wide]
        quad[:, 2, 0] = quad[:, 3, 0] = e[wide]
        quad[:, (0, 3), 1] = y0
        quad[:, (1, 2), 1] = y1
        verts.append(quad)
        colours.extend(palette[i] for i in c[wide].tolist())
        if not wide.all():
            image = _short_task_pixels(s[~wide], e[~wide], c[~wide], edges, rgb)
            ax.imshow(image, extent=(0.0, makespan, y0, y1), aspect="auto", interpolation="nearest",
                      zorder=1)
    if verts:
        ax.add_collection(PolyCollection(np.concatenate(verts), facecolors=colours,
                                         edgecolors="none", zorder=2))
    _draw_path(ax, account, trace, row_y)
    _label_rows(ax, compiled, rows, n_rows)
    ax.set_xlim(0.0, makespan)
    ax.set_ylim(0.0, n_rows)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / scale:g}"))
    if links:
        ax.tick_params(labelbottom=False)
    else:
        ax.set_xlabel(f"time ({unit})")
    ax.grid(axis="x", color="#BBBBBB", lw=0.5, zorder=1)

    title = (f"{summary['name']}: step {units.fmt_time(summary['step_time_s'], 4)}, "
             f"MFU {summary['mfu']:.1%}, {summary['tokens_per_s']:,.0f} tokens/s")
    p = summary["plan"]
    sub = (f"{summary['devices']} devices, tp={p['tp']} pp={p['pp']} dp={p['dp']} cp={p['cp']} ep={p['ep']}, "
           f"{p['schedule']}, {summary['micro_batches']} micro-batches"
           + ("; folded: each row group is one simulated device standing for its peers" if summary["folded"] else "")
           + (f"\n{note}" if note else "")
           + "\ntasks shorter than a pixel are drawn pale, as opaque as the share of the pixel they kept busy"
           + ("; the black line under the rows is the critical path" if account is not None else ""))
    fig.text(left_frac, 1.0 - 0.35 / height_in, title, fontsize=14, weight="bold", va="center")
    fig.text(left_frac, 1.0 - 0.62 / height_in, sub, fontsize=9.5, va="top", color="#333333",
             linespacing=1.4)

    handles = [Patch(facecolor=palette[i], label=CATEGORY_LABELS[name])
               for name, i in codes.items() if i in present]
    handles.append(Patch(facecolor=_BACKGROUND, label="idle / bubble (no task)"))
    if account is not None:
        handles.append(Line2D([], [], color=_PATH_COLOR, lw=2.0, label="critical path"))
    fig.legend(handles=handles, loc="center", ncol=min(len(handles), 10), fontsize=9, frameon=False,
               bbox_to_anchor=(left_frac + width_frac / 2, (gantt_bottom - legend_in / 2) / height_in))

    if links:
        lax = axes_at(links_bottom, links_in - 0.5)
        _draw_links(fig, lax, compiled, trace, links, makespan, scale, unit, width_frac)
    fig.savefig(path, dpi=DPI)
    return path


def _draw_path(ax, account: PathAccount | None, trace, row_y) -> None:
    if account is None:
        return
    segments = []
    tasks = trace.graph.tasks
    for step in account.steps:
        if step.end_s <= step.start_s:
            continue
        task = tasks[step.task_id]
        if task.kind in (TaskKind.ALLOC, TaskKind.FREE):
            continue
        for device in task.devices:
            y = row_y.get((device, task.stream))
            if y is not None:
                segments.append(((step.start_s, y + 0.06), (step.end_s, y + 0.06)))
    if segments:
        ax.add_collection(LineCollection(segments, colors=_PATH_COLOR, linewidths=2.0, zorder=3,
                                         capstyle="butt"))


def _label_rows(ax, compiled, rows, n_rows: int) -> None:
    ax.set_yticks([n_rows - 1 - r + 0.5 for r in range(len(rows))])
    small = _row_height_in(n_rows) < 0.2
    ax.set_yticklabels([STREAM_LABELS.get(stream, stream.value) for _, stream, *_ in rows],
                       fontsize=6.5 if small else 8)
    ax.tick_params(axis="y", length=0)
    groups: dict[int, list[int]] = {}
    for r, (device, *_rest) in enumerate(rows):
        groups.setdefault(device, []).append(r)
    for g, (device, members) in enumerate(groups.items()):
        top = n_rows - members[0]
        bottom = n_rows - 1 - members[-1]
        if g:
            ax.axhline(top, color="#555555", lw=0.8, zorder=4)
        ax.text(-0.115, (top + bottom) / 2, _device_label(compiled, device), transform=ax.get_yaxis_transform(),
                ha="right", va="center", fontsize=8 if small else 9, weight="bold")


def _draw_links(fig, lax, compiled, trace, links, makespan: float, scale: float, unit: str,
                width_frac: float) -> None:
    capacity = compiled.topology.capacity_bytes_per_s
    n_bins = int(max(50, min(800, width_frac * FIG_WIDTH_IN * DPI / 2)))
    util = link_utilization(trace, capacity, [b.link for b in links], n_bins)
    image = lax.imshow(util, aspect="auto", cmap="magma_r", vmin=0.0, vmax=1.0, interpolation="nearest",
                       extent=(0.0, makespan, len(links), 0.0))
    lax.set_yticks([i + 0.5 for i in range(len(links))])
    lax.set_yticklabels([f"{b.label}{f' (+{b.n_alike - 1} alike)' if b.n_alike > 1 else ''}, "
                         f"mean {b.utilization_frac:.0%}" for b in links], fontsize=8)
    lax.tick_params(axis="y", length=0)
    lax.set_xlim(0.0, makespan)
    lax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / scale:g}"))
    lax.set_xlabel(f"time ({unit})")
    untracked = sorted({t.category or t.stream.value for t in trace.graph.tasks
                        if t.kind is TaskKind.COLLECTIVE and not t.transfers and t.duration_s > 0.0})
    lax.set_title("busiest links: utilization over time (links that carried the same bytes grouped)"
                  + (f"; {'/'.join(untracked)} collectives ran as fixed durations at this granularity and "
                     f"put no traffic on the links" if untracked else ""), fontsize=9, loc="left")
    box = lax.get_position()
    cax = fig.add_axes((box.x1 + 0.01, box.y0, 0.008, box.height))
    bar = fig.colorbar(image, cax=cax)
    bar.set_label("utilization", fontsize=8)
    bar.ax.tick_params(labelsize=7)
