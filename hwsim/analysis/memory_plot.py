"""memory.png: each shown device's memory over the step, stacked by kind (weights, gradients,
optimizer state, activations, temporary), against the device's capacity, with the peak and
the first out-of-memory moment marked.

Panels are simulated devices: all of them up to `max_panels`; past that one per pipeline stage
(spread evenly over the stages when there are more) plus the device with the highest peak and
the devices that ran out of memory, so the worst case is always on the page. When the peak is
far below the capacity the y axis follows the peak (so the stack stays readable) and the
capacity is written above the panel instead of drawn.

As timeline.py: `memory_layout(result)` reduces the result to a `MemoryData` of arrays and
strings (numpy only), `draw_memory(data, path)` draws it (matplotlib imported on first use),
and `plot_memory` does both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwsim import units
from hwsim.analysis.timeline import DPI, PNG_OPTIONS, time_axis
from hwsim.engine.memory import MEM_KINDS, MemoryTimeline
from hwsim.engine.task import MemKind

__all__ = ["MEMORY_COLORS", "MemoryData", "MemoryPanel", "memory_devices", "memory_figure_size_in",
           "memory_layout", "draw_memory", "memory_figure", "plot_memory", "step_curve"]

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


@dataclass(frozen=True)
class MemoryPanel:
    """One device's panel: its step curve in bytes by kind, its peak and its first OOM."""

    title: str
    x_s: np.ndarray
    levels_bytes: np.ndarray                  # [len(x_s), len(MEM_KINDS)]
    peak_time_s: float
    peak_bytes: float
    oom: tuple[float, float, str] | None      # (time, level in bytes, what it says)


@dataclass(frozen=True)
class MemoryData:
    """What memory.png shows, as plain arrays and strings."""

    title: str
    note: str
    makespan_s: float
    capacity_bytes: float
    panels: tuple[MemoryPanel, ...]


def memory_layout(result, max_panels: int = 8) -> MemoryData:
    """The panels of `result`'s memory picture (numpy only)."""
    compiled, trace, summary = result.compiled, result.trace, result.summary
    devices = memory_devices(compiled, trace, max_panels)
    makespan = max(trace.makespan_s, 1e-30)
    capacity = float(summary["memory_capacity_bytes"])
    oom_by_device = {f.device: f for f in trace.oom_findings}
    panels = []
    for device in devices:
        timeline = trace.memory[device]
        x, levels = step_curve(timeline, makespan)
        oom = oom_by_device.get(device)
        panels.append(MemoryPanel(
            _panel_title(compiled, device, timeline, capacity), x, levels, float(timeline.peak_time_s),
            float(timeline.peak_bytes),
            None if oom is None else (float(oom.time_s), float(oom.level_bytes),
                                      f"out of memory at {units.fmt_time(oom.time_s, 3)}\n"
                                      f"{units.fmt_bytes(oom.excess_bytes, precision=3)} over ({oom.task_name})")))
    fits = "fits" if summary["fits_in_memory"] else "DOES NOT FIT"
    title = (f"{summary['name']}: memory per device over one step (peak "
             f"{units.fmt_bytes(summary['peak_memory_bytes'], precision=3)} of "
             f"{units.fmt_bytes(capacity, precision=3)}: {fits})")
    shown = len(devices)
    note = (f"{shown} of {len(compiled.simulated)} simulated devices shown: one per pipeline stage and the "
            f"highest peak" + (" and every device out of memory" if trace.oom_findings else "")
            if shown < len(compiled.simulated) else f"all {shown} simulated devices")
    if compiled.folded:
        note += "; folded: each simulated device stands for its tensor/data-parallel peers"
    return MemoryData(title, note, makespan, capacity, tuple(panels))


def plot_memory(result, path: Path, max_panels: int = 8) -> Path:
    """Draw memory.png (see the module docstring); returns `path`."""
    return draw_memory(memory_layout(result, max_panels), path)


def draw_memory(data: MemoryData, path: Path) -> Path:
    """Draw `data` into a PNG at `path`; returns `path`."""
    memory_figure(data).savefig(path, dpi=DPI, pil_kwargs=PNG_OPTIONS)
    return path


def memory_figure(data: MemoryData):
    """The matplotlib Figure of memory.png (not saved)."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend (a notebook's inline one) stays
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    panels = data.panels
    width_in, height_in, n_cols = memory_figure_size_in(max(len(panels), 1))
    n_rows = max(1, math.ceil(len(panels) / n_cols))
    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    grid = fig.add_gridspec(n_rows, n_cols, left=0.07, right=0.98, hspace=0.38, wspace=0.12,
                            top=1.0 - _HEADER_IN / height_in, bottom=_FOOTER_IN / height_in)
    makespan, capacity = data.makespan_s, data.capacity_bytes
    scale, unit = time_axis(makespan)
    highest = max([p.peak_bytes for p in panels], default=0.0)
    capacity_on_chart = highest >= _CAPACITY_ON_CHART_FRAC * capacity or highest <= 0.0
    top = (max(capacity, highest) if capacity_on_chart else highest) * 1.15 / units.GiB
    colours = [MEMORY_COLORS[k] for k in MEM_KINDS]
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(grid[i // n_cols, i % n_cols])
        if len(panel.x_s):
            ax.stackplot(panel.x_s, (panel.levels_bytes / units.GiB).T, colors=colours, edgecolor=colours,
                         linewidth=0.4)
        if capacity_on_chart:
            ax.axhline(capacity / units.GiB, color="#B00020", ls="--", lw=1.2)
            ax.text(makespan, capacity / units.GiB, f"capacity {units.fmt_bytes(capacity, precision=3)} ",
                    ha="right", va="bottom", fontsize=8, color="#B00020")
        else:
            ax.text(1.0, 1.02, f"capacity {units.fmt_bytes(capacity, precision=3)}: far above this scale",
                    transform=ax.transAxes, ha="right", va="bottom", fontsize=8, color="#B00020")
        ax.plot([panel.peak_time_s], [panel.peak_bytes / units.GiB], marker="v", color="black", ms=6, ls="none")
        ax.annotate(f"peak {units.fmt_bytes(panel.peak_bytes, precision=3)}",
                    (panel.peak_time_s, panel.peak_bytes / units.GiB), textcoords="offset points",
                    xytext=(0, 7), ha="center", fontsize=8)
        if panel.oom is not None:
            time_s, level_bytes, words = panel.oom
            ax.plot([time_s], [level_bytes / units.GiB], marker="X", color="#B00020", ms=11, ls="none", zorder=5)
            ax.annotate(words, (time_s, level_bytes / units.GiB), textcoords="offset points",
                        xytext=(10, -26), fontsize=8, color="#B00020", weight="bold",
                        bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "#B00020", "lw": 0.8})
        ax.set_xlim(0.0, makespan)
        ax.set_ylim(0.0, top)
        ax.set_title(panel.title, fontsize=9.5, loc="left")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / scale:g}"))
        ax.tick_params(labelsize=8)
        ax.grid(axis="y", color="#DDDDDD", lw=0.5)
        ax.set_axisbelow(True)
        ax.set_ylabel("GiB", fontsize=8)
        # every panel has the same time axis: its numbers under the bottom panel of each column
        if i // n_cols == n_rows - 1 or i + n_cols >= len(panels):
            ax.set_xlabel(f"time ({unit})", fontsize=8)
        else:
            ax.tick_params(labelbottom=False)
    fig.text(0.07, 1.0 - 0.3 / height_in, data.title, fontsize=13, weight="bold", va="center")
    fig.text(0.07, 1.0 - 0.6 / height_in, data.note, fontsize=9, color="#333333", va="center")
    handles = [Patch(facecolor=MEMORY_COLORS[k], label=k.value) for k in MEM_KINDS]
    if capacity_on_chart:
        handles.append(Line2D([], [], color="#B00020", ls="--", label="capacity"))
    handles.append(Line2D([], [], color="black", marker="v", ls="none", label="peak"))
    if any(p.oom is not None for p in panels):
        handles.append(Line2D([], [], color="#B00020", marker="X", ls="none", label="out of memory"))
    fig.legend(handles=handles, loc="center", ncol=len(handles), fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, 1.0 - 0.95 / height_in))
    return fig


def _panel_title(compiled, device: int, timeline: MemoryTimeline, capacity: float) -> str:
    stage = compiled.stage_of.get(device, 0)
    who = (f"stage {stage} (device {device}, stands for {compiled.stands_for.get(device, 1)})"
           if compiled.folded else f"device {device} (stage {stage})")
    return f"{who}: peak {timeline.peak_bytes / capacity:.0%} of capacity"
