"""Scenarios side by side: a markdown table of the key metrics with the difference of each
against the first scenario, and a stacked-bar picture of where each one's step time goes.

Both read summaries (the dicts of hwsim.analysis.metrics.summarize, as written to
summary.json), so saved runs compare without simulating again. In the picture a scenario that
does not fit in device memory is a grey hatched bar labelled "does not fit", and the fastest
scenario that fits is marked; a variant's name (`a.b=v,c.d=w`) is written one override a line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from hwsim import units
from hwsim.analysis.timeline import CATEGORY_COLORS, DPI, PNG_OPTIONS

__all__ = ["compare_summaries", "plot_comparison", "comparison_figure", "breakdown_parts", "breakdown_label",
           "PART_COLORS", "OOM_LABEL", "BEST_LABEL"]

PART_COLORS = {"compute": CATEGORY_COLORS["fwd"], "pipeline_bubble": "#BDBDBD", "idle": "#E0E0E0"}
# What each part of a device's breakdown (metrics.summarize: "breakdown") measures: the time of
# *that device's* step, not the critical path (report.md's bottleneck account, whose "pipeline
# bubble" is the path's time on other stages and is usually a larger share).
_BREAKDOWN_WORDS = {
    "compute": "compute", "pipeline_bubble": "waiting on other pipeline stages (bubble)",
    "idle": "idle (no task)", "host": "waiting on its host thread",
}
OOM_LABEL = "does not fit"
BEST_LABEL = "fastest that fits"
_OOM_FACE, _OOM_EDGE, _OOM_HATCH = "#D9D9D9", "#B00020", "///"
_FALLBACK_COLORS = ("#8C564B", "#17BECF", "#BCBD22", "#7F7F7F", "#E377C2")
_SAME_REL_TOLERANCE = 1e-6  # differences below this (float noise) read as ±0

Summary = dict[str, Any]


def _check(names: Sequence[str], summaries: Sequence[Summary]) -> None:
    if len(names) != len(summaries):
        raise ValueError(f"{len(names)} names for {len(summaries)} summaries: give one name each")
    if not summaries:
        raise ValueError("nothing to compare: give at least one summary")


def breakdown_parts(summaries: Sequence[Summary]) -> list[str]:
    """Every breakdown part of any summary, largest in the first summary first."""
    first = summaries[0].get("breakdown", {})
    keys: dict[str, float] = {}
    for summary in summaries:
        for key in summary.get("breakdown", {}):
            keys.setdefault(key, first.get(key, 0.0))
    return sorted(keys, key=lambda k: (-keys[k], k))


def _relative(value: float, base: float) -> str:
    if abs(value - base) <= _SAME_REL_TOLERANCE * max(abs(value), abs(base)):
        return "±0%"
    if base == 0.0:
        return "n/a"
    return f"{(value - base) / base:+.1%}"


def _points(value: float, base: float) -> str:
    return f"{(value - base) * 100:+.1f} pp"


def _time(seconds: float) -> str:
    return units.fmt_time(seconds, 3) if seconds != 0.0 else "0"


def _seconds_delta(value: float, base: float) -> str:
    delta = value - base
    if abs(delta) <= _SAME_REL_TOLERANCE * max(abs(value), abs(base)):
        return "±0"
    return ("+" if delta > 0 else "−") + _time(abs(delta))


_Metric = tuple[str, Callable[[Summary], float], Callable[[float], str], Callable[[float, float], str]]
_METRICS: tuple[_Metric, ...] = (
    ("step time", lambda s: s["step_time_s"], units.fmt_time, _relative),
    ("tokens/s", lambda s: s["tokens_per_s"], lambda v: f"{v:,.0f}", _relative),
    ("tokens/s per device", lambda s: s["tokens_per_s_per_device"], lambda v: f"{v:,.0f}", _relative),
    ("MFU", lambda s: s["mfu"], lambda v: f"{v:.1%}", _points),
    ("HFU", lambda s: s["hfu"], lambda v: f"{v:.1%}", _points),
    ("peak memory", lambda s: s["peak_memory_bytes"], units.fmt_bytes, _relative),
    ("devices", lambda s: s["devices"], lambda v: f"{v:,.0f}", _relative),
)


def compare_summaries(names: list[str], summaries: list[Summary]) -> str:
    """A markdown table: one column per scenario, each cell a value and (after the first
    column) its difference from the first scenario — relative for quantities, percentage
    points for MFU/HFU, seconds for the breakdown parts."""
    _check(names, summaries)
    lines = ["| metric | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]

    def row(label: str, values: list[float | None], fmt, diff) -> str:
        cells = []
        for i, value in enumerate(values):
            if value is None:
                cells.append("—")
            elif i == 0 or values[0] is None:
                cells.append(fmt(value))
            else:
                cells.append(f"{fmt(value)} ({diff(value, values[0])})")
        return f"| {label} | " + " | ".join(cells) + " |"

    for label, get, fmt, diff in _METRICS:
        lines.append(row(label, [get(s) for s in summaries], fmt, diff))
    lines.append("| fits in memory | " + " | ".join("yes" if s["fits_in_memory"] else "**no**"
                                                    for s in summaries) + " |")
    if any(s.get("software") for s in summaries):
        lines.append("| software | " + " | ".join(_software_cell(s.get("software")) for s in summaries) + " |")
    for key in breakdown_parts(summaries):
        values = [s.get("breakdown", {}).get(key, 0.0) for s in summaries]
        shares = [v / s["step_time_s"] if s["step_time_s"] > 0 else 0.0 for v, s in zip(values, summaries)]
        cells = []
        for i, (value, share) in enumerate(zip(values, shares)):
            text = f"{_time(value)} ({share:.0%})"
            cells.append(text if i == 0 else f"{text}, {_seconds_delta(value, values[0])}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _software_cell(sw: dict | None) -> str:
    if not sw:
        return "—"
    version = f" {sw['version']}" if sw.get("version") else ""
    return (f"{sw['framework']}{version}: host {sw['host']}, attention {sw['attention']}, "
            f"recompute {sw['selective_recompute']}")


def breakdown_label(key: str) -> str:
    """What a breakdown part measures, in words ('exposed_comm.tp' → 'exposed tp communication')."""
    if key.startswith("exposed_comm."):
        return f"exposed {key.split('.', 1)[1]} communication"
    return _BREAKDOWN_WORDS.get(key, key.replace("_", " "))


def _part_color(key: str, index: int) -> str:
    if key in PART_COLORS:
        return PART_COLORS[key]
    kind = key.rsplit(".", 1)[-1]
    return CATEGORY_COLORS.get(kind, _FALLBACK_COLORS[index % len(_FALLBACK_COLORS)])


def _tick_label(name: str) -> str:
    """A variant's overrides one a line, so that long names do not run into their neighbours."""
    return "\n".join(part.strip() for part in name.split(",") if part.strip()) or name


def _bar_text(summary: Summary, fits: bool, best: bool) -> str:
    text = f"{units.fmt_time(summary['step_time_s'], 3)}\nMFU {summary['mfu']:.1%}"
    if not fits:
        return (f"{OOM_LABEL}\n(peak {units.fmt_bytes(summary['peak_memory_bytes'], precision=3)}"
                f" of {units.fmt_bytes(summary['memory_capacity_bytes'], precision=3)})\n{text}")
    return f"{BEST_LABEL}\n{text}" if best else text


def plot_comparison(names: list[str], summaries: list[Summary], path: Path) -> Path:
    """Write comparison.png (see `comparison_figure`); returns `path`."""
    comparison_figure(names, summaries).savefig(path, dpi=DPI, pil_kwargs=PNG_OPTIONS)
    return path


def comparison_figure(names: list[str], summaries: list[Summary]):
    """Stacked bars of each scenario's breakdown (seconds) on its busiest device, labelled with
    its step time and MFU; a scenario that does not fit in memory is one grey hatched bar
    labelled "does not fit" (its peak against the capacity), never marked fastest."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend (a notebook's inline one) stays
    from matplotlib.patches import Patch

    _check(names, summaries)
    parts = breakdown_parts(summaries)
    longest = max(s["step_time_s"] for s in summaries)
    scale, unit = (units.MS, "ms") if longest < 1.0 else (1.0, "s")
    labels = [_tick_label(n) for n in names]
    fits = [bool(s.get("fits_in_memory", True)) for s in summaries]
    fitting = [i for i, ok in enumerate(fits) if ok]
    best = min(fitting, key=lambda i: summaries[i]["step_time_s"]) if len(summaries) > 1 and fitting else None
    texts = [_bar_text(s, ok, i == best) for i, (s, ok) in enumerate(zip(summaries, fits))]
    widest = max(len(line) for label in labels + texts for line in label.splitlines())
    slot_in = max(1.4, 0.08 * widest + 0.4)   # ~0.08 in per character at 9 pt (bold)
    fig = Figure(figsize=(max(7.0, slot_in * len(names) + 3.2), 5.5 + 0.15 * max(lab.count("\n") for lab in labels)),
                 dpi=DPI)
    ax = fig.subplots()
    x = list(range(len(names)))
    bottoms = [0.0] * len(names)
    for j, key in enumerate(parts):
        heights = [s.get("breakdown", {}).get(key, 0.0) / scale if ok else 0.0 for s, ok in zip(summaries, fits)]
        ax.bar(x, heights, bottom=bottoms, color=_part_color(key, j), label=breakdown_label(key), width=0.6,
               edgecolor="white", linewidth=0.5)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    for i, (summary, ok) in enumerate(zip(summaries, fits)):
        if not ok:
            ax.bar([i], [summary["step_time_s"] / scale], width=0.6, color=_OOM_FACE, hatch=_OOM_HATCH,
                   edgecolor=_OOM_EDGE, linewidth=0.8, gid="does-not-fit")
    for i, (summary, ok, text) in enumerate(zip(summaries, fits, texts)):
        ax.text(i, summary["step_time_s"] / scale, text, ha="center", va="bottom", fontsize=9, linespacing=1.15,
                color=_OOM_EDGE if not ok else "black", weight="bold" if i == best or not ok else "normal",
                gid="bar-label")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=9)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_ylabel(f"step time ({unit})")
    ax.set_ylim(0.0, longest / scale * 1.32)   # room for four lines of label over the tallest bar
    ax.set_title("Where the step time goes (each scenario's busiest device)", fontsize=11, loc="left")
    handles, legend_labels = ax.get_legend_handles_labels()  # listed top of the stack first
    handles, legend_labels = handles[::-1], legend_labels[::-1]
    if not all(fits):
        handles.append(Patch(facecolor=_OOM_FACE, hatch=_OOM_HATCH, edgecolor=_OOM_EDGE,
                             label=f"{OOM_LABEL} in device memory"))
        legend_labels.append(f"{OOM_LABEL} in device memory")
    ax.legend(handles, legend_labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.grid(axis="y", color="#DDDDDD", lw=0.5)
    ax.set_axisbelow(True)
    fig.tight_layout()
    return fig
