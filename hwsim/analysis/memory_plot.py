"""memory.png: each shown device's memory over the step, stacked by kind (weights, gradients,
optimizer state, activations, temporary), against the device's capacity, with the peak and
the first out-of-memory moment marked.

Panels are simulated devices: all of them up to `max_panels`; past that one per pipeline stage
(spread evenly over the stages when there are more) plus the device with the highest peak and
the devices that ran out of memory, so the worst case is always on the page. When the peak is
far below the capacity the y axis follows the peak (so the stack stays readable) and the
capacity is written above the panel instead of drawn.
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: the caller's backend (a notebook's inline one) stays as it is
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from hwsim import units  # noqa: E402
from hwsim.analysis.timeline import DPI, time_axis  # noqa: E402
from hwsim.engine.memory import MEM_KINDS, MemoryTimeline  # noqa: E402
from hwsim.engine.task import MemKind  # noqa: E402

__all__ = ["MEMORY_COLORS", "memory_devices", "memory_figure_size_in", "plot_memory", "step_curve"]

MEMORY_COLORS = {
    MemKind.WEIGHTS: "#4C72B0", MemKind.GRADIENTS: "#DD8452", MemKind.OPTIMIZER: "#55A868",
    MemKind.ACTIVATIONS: "#C44E52", MemKind.TEMPORARY: "#9A9A9A",
}
FIG_WIDTH_IN = 15.0
PANEL_HEIGHT_IN = 2.5
_HEADER_IN, _FOOTER_IN = 1.45, 0.5
_CAPACITY_ON_CHART_FRAC = 0.25  # below this peak/capacity the y axis follows the peak


def memory_devices(compiled, trace, max_panels: int = 8) -> list[int]:
    """The simulated devices to draw (see the module docstring), in device order."""
    timelines = trace.memory
    simulated = [d for d in compiled.simulated if d in timelines]
    if len(simulated) <= max_panels:
        return simulated
    must = [f.device for f in trace.oom_findings if f.device in timelines]
    must.append(max(simulated, key=lambda d: (timelines[d].peak_bytes, -d)))
    must = list(dict.fromkeys(must))[:max_panels]
    by_stage: dict[int, int] = {}
    for device in simulated:
        by_stage.setdefault(compiled.stage_of.get(device, 0), device)
    stages = sorted(by_stage)
    room = max_panels - len(must)
    picks = [stages[int(round(i))] for i in np.linspace(0, len(stages) - 1, room)] if room > 0 else []
    chosen = list(dict.fromkeys(must + [by_stage[s] for s in picks]))
    return sorted(chosen[:max_panels])


def memory_figure_size_in(n_panels: int) -> tuple[float, float, int]:
    """(width, height, columns) of the figure for `n_panels` panels."""
    n_cols = 1 if n_panels <= 2 else 2
    n_rows = max(1, math.ceil(n_panels / n_cols))
    return FIG_WIDTH_IN, _HEADER_IN + _FOOTER_IN + PANEL_HEIGHT_IN * n_rows, n_cols


def step_curve(timeline: MemoryTimeline, end_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(x, levels) tracing the step function: the level after event i holds until event i+1,
    the last one until `end_s`. levels is [2n, len(MEM_KINDS)]."""
    times = timeline.times_s
    if len(times) == 0:
        return np.zeros(0), np.zeros((0, len(MEM_KINDS)))
    x = np.concatenate((np.repeat(times, 2)[1:], [max(end_s, float(times[-1]))]))
    return x, np.repeat(timeline.levels_bytes, 2, axis=0)


def plot_memory(result, path: Path, max_panels: int = 8) -> Path:
    """Draw memory.png (see the module docstring); returns `path`."""
    compiled, trace, summary = result.compiled, result.trace, result.summary
    devices = memory_devices(compiled, trace, max_panels)
    width_in, height_in, n_cols = memory_figure_size_in(max(len(devices), 1))
    n_rows = max(1, math.ceil(len(devices) / n_cols))
    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    grid = fig.add_gridspec(n_rows, n_cols, left=0.07, right=0.98, hspace=0.38, wspace=0.12,
                            top=1.0 - _HEADER_IN / height_in, bottom=_FOOTER_IN / height_in)
    makespan = max(trace.makespan_s, 1e-30)
    scale, unit = time_axis(makespan)
    capacity = float(summary["memory_capacity_bytes"])
    highest = max([trace.memory[d].peak_bytes for d in devices], default=0.0)
    capacity_on_chart = highest >= _CAPACITY_ON_CHART_FRAC * capacity or highest <= 0.0
    top = (max(capacity, highest) if capacity_on_chart else highest) * 1.15 / units.GiB
    oom_by_device = {f.device: f for f in trace.oom_findings}
    axes = []
    for i, device in enumerate(devices):
        ax = fig.add_subplot(grid[i // n_cols, i % n_cols])
        axes.append(ax)
        timeline = trace.memory[device]
        x, levels = step_curve(timeline, makespan)
        if len(x):
            colours = [MEMORY_COLORS[k] for k in MEM_KINDS]
            ax.stackplot(x, (levels / units.GiB).T, colors=colours, edgecolor=colours, linewidth=0.4)
        if capacity_on_chart:
            ax.axhline(capacity / units.GiB, color="#B00020", ls="--", lw=1.2)
            ax.text(makespan, capacity / units.GiB, f"capacity {units.fmt_bytes(capacity, precision=3)} ",
                    ha="right", va="bottom", fontsize=8, color="#B00020")
        else:
            ax.text(1.0, 1.02, f"capacity {units.fmt_bytes(capacity, precision=3)}: far above this scale",
                    transform=ax.transAxes, ha="right", va="bottom", fontsize=8, color="#B00020")
        ax.plot([timeline.peak_time_s], [timeline.peak_bytes / units.GiB], marker="v", color="black",
                ms=6, ls="none")
        ax.annotate(f"peak {units.fmt_bytes(timeline.peak_bytes, precision=3)}",
                    (timeline.peak_time_s, timeline.peak_bytes / units.GiB), textcoords="offset points",
                    xytext=(0, 7), ha="center", fontsize=8)
        oom = oom_by_device.get(device)
        if oom is not None:
            ax.plot([oom.time_s], [oom.level_bytes / units.GiB], marker="X", color="#B00020", ms=11,
                    ls="none", zorder=5)
            ax.annotate(f"out of memory at {units.fmt_time(oom.time_s, 3)}\n"
                        f"{units.fmt_bytes(oom.excess_bytes, precision=3)} over ({oom.task_name})",
                        (oom.time_s, oom.level_bytes / units.GiB), textcoords="offset points",
                        xytext=(10, -26), fontsize=8, color="#B00020", weight="bold",
                        bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "#B00020", "lw": 0.8})
        ax.set_xlim(0.0, makespan)
        ax.set_ylim(0.0, top)
        ax.set_title(_panel_title(compiled, device, timeline, capacity), fontsize=9.5, loc="left")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / scale:g}"))
        ax.set_ylabel("GiB", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(axis="y", color="#DDDDDD", lw=0.5)
        ax.set_axisbelow(True)
        if i // n_cols == n_rows - 1 or i + n_cols >= len(devices):
            ax.set_xlabel(f"time ({unit})", fontsize=8)
    fits = "fits" if summary["fits_in_memory"] else "DOES NOT FIT"
    fig.text(0.07, 1.0 - 0.3 / height_in,
             f"{summary['name']}: memory per device over one step (peak "
             f"{units.fmt_bytes(summary['peak_memory_bytes'], precision=3)} of "
             f"{units.fmt_bytes(capacity, precision=3)}: {fits})",
             fontsize=13, weight="bold", va="center")
    shown = len(devices)
    note = (f"{shown} of {len(compiled.simulated)} simulated devices shown: one per pipeline stage and the "
            f"highest peak" + (" and every device out of memory" if trace.oom_findings else "")
            if shown < len(compiled.simulated) else f"all {shown} simulated devices")
    if compiled.folded:
        note += "; folded: each simulated device stands for its tensor/data-parallel peers"
    fig.text(0.07, 1.0 - 0.6 / height_in, note, fontsize=9, color="#333333", va="center")
    handles = [Patch(facecolor=MEMORY_COLORS[k], label=k.value) for k in MEM_KINDS]
    if capacity_on_chart:
        handles.append(Line2D([], [], color="#B00020", ls="--", label="capacity"))
    handles.append(Line2D([], [], color="black", marker="v", ls="none", label="peak"))
    if oom_by_device:
        handles.append(Line2D([], [], color="#B00020", marker="X", ls="none", label="out of memory"))
    fig.legend(handles=handles, loc="center", ncol=len(handles), fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, 1.0 - 0.95 / height_in))
    fig.savefig(path, dpi=DPI)
    return path


def _panel_title(compiled, device: int, timeline: MemoryTimeline, capacity: float) -> str:
    stage = compiled.stage_of.get(device, 0)
    who = (f"stage {stage} (device {device}, stands for {compiled.stands_for.get(device, 1)})"
           if compiled.folded else f"device {device} (stage {stage})")
    return f"{who}: peak {timeline.peak_bytes / capacity:.0%} of capacity"
