"""`hwsim goodput --out DIR`: runs.parquet (one row per Monte Carlo run), timeline.parquet
(run 0's interruptions), summary.json, and timeline.png (run 0's progress against wall time,
its interruptions counted by component; the spread of time-to-train beside it)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from hwsim import units
from hwsim.reliability.goodput import GoodputResult

__all__ = ["runs_frame", "timeline_frame", "timeline_figure", "write_goodput", "json_safe"]


def json_safe(value):
    """The summary with infinities as None (JSON has none) and numpy scalars as floats."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def runs_frame(result: GoodputResult) -> pd.DataFrame:
    runs, model = result.runs, result.model
    frame = pd.DataFrame({
        "run": np.arange(runs.wall_s.size),
        "time_to_train_days": runs.wall_s / units.DAY,
        "effective_training_time": model.run.work_s / runs.wall_s,
        "lost_work_hours": runs.lost_s / units.HOUR,
        "recovery_hours": runs.down_s / units.HOUR,
        "checkpoint_stall_hours": runs.stall_s / units.HOUR,
        "interruptions": runs.n_events.sum(axis=1),
    })
    for j, event in enumerate(model.run.events):
        frame[f"interruptions_{event.name}"] = runs.n_events[:, j]
    frame["seed"] = result.seed
    return frame


def timeline_frame(result: GoodputResult) -> pd.DataFrame:
    names = [e.name for e in result.model.run.events]
    rows = result.runs.timeline
    return pd.DataFrame({
        "wall_days": [r[0] / units.DAY for r in rows],
        "component": pd.Categorical([names[r[1]] for r in rows], categories=names),
        "lost_work_s": [r[2] for r in rows],
        "recovery_s": [r[3] for r in rows],
    })


def timeline_figure(result: GoodputResult):
    """The matplotlib Figure of timeline.png (not saved; no pyplot)."""
    from matplotlib.figure import Figure

    frame = timeline_frame(result)
    fig = Figure(figsize=(11, 4.2))
    ax, hist = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1]})
    names = list(frame["component"].cat.categories)
    colors = {n: f"C{i}" for i, n in enumerate(names)}
    days = np.concatenate([[0.0], frame["wall_days"].to_numpy(), [result.runs.wall_s[0] / units.DAY]])
    so_far = np.r_[np.arange(days.size - 1), days.size - 2]
    ax.step(days, so_far, where="post", color="0.3", lw=1, label="all")
    for name in names:
        sel = frame[frame["component"] == name]
        if len(sel):
            ax.step(np.r_[0.0, sel["wall_days"].to_numpy()], np.arange(len(sel) + 1), where="post",
                    color=colors[name], lw=1.2, label=f"{name} ({len(sel)})")
    ax.set_xlabel("wall time (days)")
    ax.set_ylabel("interruptions so far (run 0)")
    ax.set_title(f"{result.model.name}: failures and restarts over one simulated run", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    hist.hist(result.runs.wall_s / units.DAY, bins=30, color="C0")
    hist.axvline(result.model.run.work_s / units.DAY, color="k", ls="--", lw=1, label="no failures")
    hist.set_xlabel("time to train (days)")
    hist.set_ylabel("runs")
    hist.legend(fontsize=7)
    fig.tight_layout()
    return fig


def write_goodput(result: GoodputResult, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "runs.parquet", out / "timeline.parquet", out / "summary.json", out / "timeline.png"]
    runs_frame(result).to_parquet(files[0], index=False)
    timeline_frame(result).to_parquet(files[1], index=False)
    files[2].write_text(json.dumps(json_safe(result.summary), indent=2) + "\n")
    timeline_figure(result).savefig(files[3], dpi=110)
    return files
