"""Scenarios side by side: a markdown table of the key metrics with the difference of each
against the first scenario, and a stacked-bar picture of where each one's step time goes.

Both read summaries (the dicts of hwsim.analysis.metrics.summarize, as written to
summary.json), so saved runs compare without simulating again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from matplotlib.figure import Figure  # no pyplot: the caller's backend (a notebook's inline one) stays as it is

from hwsim import units  # noqa: E402
from hwsim.analysis.timeline import CATEGORY_COLORS, DPI  # noqa: E402

__all__ = ["compare_summaries", "plot_comparison", "breakdown_parts", "PART_COLORS"]

PART_COLORS = {"compute": CATEGORY_COLORS["fwd"], "pipeline_bubble": "#BDBDBD", "idle": "#E0E0E0"}
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


def _part_color(key: str, index: int) -> str:
    if key in PART_COLORS:
        return PART_COLORS[key]
    kind = key.rsplit(".", 1)[-1]
    return CATEGORY_COLORS.get(kind, _FALLBACK_COLORS[index % len(_FALLBACK_COLORS)])


def plot_comparison(names: list[str], summaries: list[Summary], path: Path) -> Path:
    """Stacked bars of each scenario's breakdown (seconds), labelled with its step time and
    MFU; returns `path`."""
    _check(names, summaries)
    parts = breakdown_parts(summaries)
    longest = max(s["step_time_s"] for s in summaries)
    scale, unit = (units.MS, "ms") if longest < 1.0 else (1.0, "s")
    width_in = max(7.0, 1.3 * len(names) + 4.0)
    fig = Figure(figsize=(width_in, 5.5), dpi=DPI)
    ax = fig.subplots()
    bottoms = [0.0] * len(names)
    x = list(range(len(names)))
    for j, key in enumerate(parts):
        heights = [s.get("breakdown", {}).get(key, 0.0) / scale for s in summaries]
        ax.bar(x, heights, bottom=bottoms, color=_part_color(key, j), label=key, width=0.6,
               edgecolor="white", linewidth=0.5)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    for i, summary in enumerate(summaries):
        ax.text(i, summary["step_time_s"] / scale, f"{units.fmt_time(summary['step_time_s'], 3)}\n"
                f"MFU {summary['mfu']:.1%}", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=20 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center",
                       fontsize=9)
    ax.set_ylabel(f"step time ({unit})")
    ax.set_ylim(0.0, longest / scale * 1.2)
    ax.set_title("Where the step time goes (busiest device of each scenario)", fontsize=11, loc="left")
    handles, labels = ax.get_legend_handles_labels()  # listed top of the stack first
    ax.legend(handles[::-1], labels[::-1], loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
              frameon=False)
    ax.grid(axis="y", color="#DDDDDD", lw=0.5)
    ax.set_axisbelow(True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path
