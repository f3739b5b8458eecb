"""Pictures of a sweep: each metric against each axis (one line per combination of the other
axes), throughput against the device count, and cost against time-to-train with its Pareto
front (the points no other point beats on both).

The x value of a point is read from its resolved scenario at the axis path (SI units inside),
then shown in the unit the scenario writes it in: a NIC bandwidth in Gb/s ("400 Gb/s" plots
at 400, as the sweep table prints it), other bandwidths in GB/s, memory sizes in GiB; so
text values plot on a true numeric scale. An axis whose values are not numbers plots as
categories. The cost plot's axes carry plain numbers (days, "$30M"), a few ticks each.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from hwsim.studies.store import PointRecord
from hwsim.units import BITS_PER_BYTE, GB, GiB

__all__ = ["plot_sweep", "sweep_figures", "pareto_front", "value_at", "axis_unit", "money"]

# metric: (label, scale to divide by)
_METRICS: dict[str, tuple[str, float]] = {
    "tokens_per_s": ("throughput (tokens/s)", 1.0),
    "step_time_s": ("step time (s)", 1.0),
    "mfu": ("MFU", 1.0),
    "peak_memory_bytes": ("peak memory per device (GiB)", GiB),
}
_MAX_SERIES = 10


def value_at(mapping: dict[str, Any], dotted: str) -> Any:
    node: Any = mapping
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated when both coordinates are to be minimised (ties:
    the first kept), in increasing x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1], i))
    front, best_y = [], float("inf")
    for i in order:
        if points[i][1] < best_y:
            front.append(i)
            best_y = points[i][1]
    return front


def axis_unit(path: str) -> tuple[float, str]:
    """(SI value per shown unit, ' (unit)') for a sweep axis: NIC bandwidth in Gb/s as scenarios
    write it, other bandwidths in GB/s, sizes in GiB."""
    last = path.rsplit(".", 1)[-1]
    if last == "nic_bandwidth":
        return GB / BITS_PER_BYTE, " (Gb/s)"
    if "bandwidth" in last:
        return GB, " (GB/s)"
    if last in ("hbm", "l2_cache", "dp_bucket"):
        return GiB, " (GiB)"
    return 1.0, ""


def money(usd: float) -> str:
    """'$26.5M', '$1.2B', '$950k', '$120'."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(usd) >= size:
            return f"${usd / size:.3g}{suffix}"
    return f"${usd:.3g}"


def plot_sweep(records: Sequence[PointRecord], axis_paths: Sequence[str], out_dir: str | Path) -> list[Path]:
    """Write the sweep's PNGs into `out_dir`; the paths written (none when no point succeeded)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [_save(fig, out / name) for name, fig in sweep_figures(records, axis_paths).items()]


def sweep_figures(records: Sequence[PointRecord], axis_paths: Sequence[str]) -> dict[str, Any]:
    """The sweep's pictures as matplotlib Figures, by file name (empty when no point succeeded)."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend stays as it is

    ok = [r for r in records if r.ok and r.summary]
    figures: dict[str, Any] = {}
    if not ok:
        return figures
    for path in axis_paths:
        scale, unit = axis_unit(path)
        xs = [value_at(r.scenario, path) for r in ok]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
        if not numeric:
            labels = list(dict.fromkeys(str(r.axes.get(path)) for r in ok))
        others = [p for p in axis_paths if p != path]
        for metric, (label, mscale) in _METRICS.items():
            series: dict[str, list[tuple[Any, float]]] = defaultdict(list)
            for r, x in zip(ok, xs):
                name = ", ".join(f"{p.rsplit('.', 1)[-1]}={r.axes.get(p)}" for p in others) or metric
                xv = x / scale if numeric else labels.index(str(r.axes.get(path)))
                series[name].append((xv, r.summary[metric] / mscale))
            fig = Figure(figsize=(6.4, 4.2))
            ax = fig.subplots()
            for name in list(series)[:_MAX_SERIES]:
                pts = sorted(series[name])
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
            if not numeric:
                ax.set_xticks(range(len(labels)), labels, rotation=20)
            ax.set_xlabel(path + unit)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if len(series) > 1:
                ax.legend(fontsize=7, title=f"{len(series)} series" if len(series) > _MAX_SERIES else None)
            fig.tight_layout()
            figures[f"{metric}-vs-{path}.png"] = fig
    devices = [r.summary["devices"] for r in ok]
    if len(set(devices)) > 1:
        fig = Figure(figsize=(6.4, 4.2))
        ax = fig.subplots()
        ax.scatter(devices, [r.summary["tokens_per_s"] for r in ok])
        lo, hi = min(devices), max(devices)
        best_lo = max(r.summary["tokens_per_s"] for r in ok if r.summary["devices"] == lo)
        xs = [lo * (hi / lo) ** (i / 40) for i in range(41)]
        ax.plot(xs, [best_lo * x / lo for x in xs], ls="--", color="grey", label="linear scaling from the best")
        ax.set_xscale("log", base=2)
        _finish_with_legend(fig, ax, "devices", "throughput (tokens/s)")
        figures["throughput-vs-devices.png"] = fig
    ttt = [r for r in ok if r.summary.get("time_to_train")]
    if ttt:
        figures["cost-vs-time-to-train.png"] = _cost_figure(Figure, ttt, axis_paths)
    return figures


def _cost_figure(Figure, ttt: list[PointRecord], axis_paths: Sequence[str]):  # noqa: N803 - the class
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    pts = [(r.summary["time_to_train"]["days"], r.summary["time_to_train"]["cost_usd"]) for r in ttt]
    front = pareto_front(pts)
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], color="lightgrey", label="points")
    ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], marker="o", color="C3", label="Pareto front")
    for i in front:
        ax.annotate(", ".join(f"{p.rsplit('.', 1)[-1]}={ttt[i].axes.get(p)}" for p in axis_paths),
                    pts[i], fontsize=6, xytext=(4, 6), textcoords="offset points", rotation=35)
    if max(p[0] for p in pts) > 10 * min(p[0] for p in pts):
        ax.set_xscale("log")
        # majors at 1, 2, 5 × 10^k, as plain numbers; no labels on the minor ticks (they collide)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.xaxis.set_major_locator(MaxNLocator(6))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 10 else f"{v:.2g}"))
    ax.yaxis.set_major_locator(MaxNLocator(6))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: money(v)))
    _finish_with_legend(fig, ax, "time to train (days)", "cost (USD)")
    return fig


def _finish_with_legend(fig, ax, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path
