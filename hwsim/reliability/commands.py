"""`hwsim goodput SCENARIO`: the whole training run under failures, in Monte Carlo; and the
time-to-train ranking of `hwsim plan --objective time-to-train` (`rank_plans_by_goodput`).

Every user error is a HwsimError naming the field or flag and the fix (exit 2 in hwsim.cli)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hwsim import units
from hwsim.errors import ConfigError

__all__ = ["goodput", "goodput_table", "PlanGoodput", "rank_plans_by_goodput", "print_goodput_ranking"]

out_console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True)


def _days(spread: dict[str, float]) -> str:
    return f"{spread['mean']:.1f} d (p10 {spread['p10']:.1f}, p50 {spread['p50']:.1f}, p90 {spread['p90']:.1f})"


def goodput_table(s: dict) -> Table:
    table = Table(title=f"{s['name']}: {s['tokens']:.3g} tokens under failures ({s['runs']} runs, seed {s['seed']})",
                  show_header=False, title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value")
    ck = s["checkpoint"]
    step = units.fmt_time(s["step_time_s"])
    if s["degraded_slowdown"] != 1.0:
        step += f" ({s['degraded_slowdown']:.3f}x the healthy {units.fmt_time(s['healthy_step_time_s'])}: degraded links)"
    table.add_row("step time", step)
    table.add_row("failure-free time", f"{s['failure_free_days']:.1f} days ({s['steps']:,.0f} steps)")
    table.add_row("time to train", _days(s["time_to_train_days"]))
    ett = s["effective_training_time"]
    table.add_row("effective training time", f"{ett['mean']:.1%} (p10 {ett['p10']:.1%}, p90 {ett['p90']:.1%})")
    table.add_row("interruptions per day", f"{s['interruptions_per_day']['mean']:.2f} simulated, "
                                           f"{s['interruptions_per_day_expected']:.2f} expected "
                                           f"(job MTBF {s['job_mtbf_h']:.2f} h; mix {s['failure_mix']})")
    by = ", ".join(f"{k} {v:.2f}" for k, v in s["interruptions_per_day_by_component"].items())
    table.add_row("  by component (per day)", by)
    table.add_row("recovery", f"{s['recovery']} scope: detection {units.fmt_time(s['detection_s'])}, restart "
                              f"{units.fmt_time(s['restart_s'])}, load {units.fmt_time(ck['read_s'])}"
                  + (f"; a replica is {s['replica_devices']} devices of {s['devices']}" if s["recovery"] == "replica"
                     else ""))
    table.add_row("checkpoint", f"{units.fmt_bytes(ck['total_bytes'], binary=False)} ({ck['mode']}, {ck['storage']}): "
                                f"write {units.fmt_time(ck['write_s'])}, stall {units.fmt_time(ck['stall_s'])}, every "
                                f"{units.fmt_time(ck['interval_s'])} ({ck['interval_note']})")
    table.add_row("time lost (mean)", f"lost work {s['lost_work_hours']['mean']:.1f} h, recovery "
                                      f"{s['recovery_hours']['mean']:.1f} h, checkpoint stalls "
                                      f"{s['checkpoint_stall_hours']['mean']:.1f} h")
    table.add_row("cost", f"${s['cost_usd']['mean']:,.0f} (failures: ${s['cost_of_failures_usd']['mean']:,.0f})")
    table.add_row("energy", f"{s['energy_mwh']['mean']:,.0f} MWh (failures: {s['energy_of_failures_mwh']['mean']:,.0f} "
                            f"MWh; at the power limit)")
    return table


def goodput(scenario: Annotated[Path, typer.Argument(help="scenario YAML file (training.tokens is the budget)")],
            runs: Annotated[int, typer.Option(help="Monte Carlo runs of the whole training")] = 1000,
            seed: Annotated[int, typer.Option(help="random seed (same seed, same results)")] = 0,
            out: Annotated[Optional[Path], typer.Option(help="directory for runs.parquet, timeline.png, ...")] = None,
            set_: Annotated[Optional[list[str]], typer.Option("--set", help="override a field: a.b.c=value")] = None,
            fold: Annotated[Optional[bool], typer.Option("--fold/--no-fold", help="simulate one device per role")]
            = None,
            as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False) -> None:
    """Time-to-train under failures: one simulated step, the scenario's failure rates and
    checkpoints (its `reliability:` block, or the Llama 3 405B failure mix), then the whole run
    many times over."""
    from hwsim.cli_common import check_out_dir
    from hwsim.config.loader import load_scenario
    from hwsim.reliability.goodput import build_goodput_model, run_goodput
    from hwsim.reliability.outputs import json_safe, write_goodput

    if runs < 1:
        raise ConfigError(f"--runs: {runs} must be at least 1")
    if seed < 0:
        raise ConfigError(f"--seed: {seed} must not be negative")
    check_out_dir(out)
    sc = load_scenario(scenario, set_ or [])
    with err_console.status(f"simulating one step of {sc.name} on {sc.cluster.n_devices:,} devices"):
        model = build_goodput_model(sc, fold=fold)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task("training runs", total=runs)
        result = run_goodput(model, runs, seed, on_chunk=lambda n: progress.advance(task, n))
    if as_json:
        out_console.print_json(json.dumps(json_safe(result.summary)))
    else:
        out_console.print(goodput_table(result.summary))
    if out is not None:
        files = write_goodput(result, out)
        out_console.print(f"wrote {out}/: {', '.join(f.name for f in files)}")


# --- hwsim plan --objective time-to-train --------------------------------------------------------

@dataclass
class PlanGoodput:
    run: object                 # hwsim.studies.planner.PlannedRun
    summary: dict


def rank_plans_by_goodput(report, runs: int = 200, seed: int = 0) -> list[PlanGoodput]:
    """The plan search's simulated plans that fit, ranked by expected time-to-train under the
    scenario's failures (each plan's own step time, checkpoint and recovery cost)."""
    from hwsim.config.schema import ScenarioConfig
    from hwsim.reliability.goodput import build_goodput_model, run_goodput

    ranked = []
    for planned in report.ranked:
        scenario = ScenarioConfig.model_validate(planned.scenario)
        model = build_goodput_model(scenario, step_time_s=planned.summary["step_time_s"])
        ranked.append(PlanGoodput(planned, run_goodput(model, runs, seed).summary))
    ranked.sort(key=lambda g: (g.summary["time_to_train_days"]["mean"], g.run.candidate.label))
    return ranked


def print_goodput_ranking(ranked: list[PlanGoodput], top: int, devices: int) -> None:
    table = Table(title=f"best plans on {devices} devices by time-to-train under failures", title_justify="left")
    for col in ("#", "plan", "replica", "step", "int/day", "per int", "ETT", "days (p10-p90)", "by step"):
        table.add_column(col, justify="left" if col == "plan" else "right", no_wrap=True)
    by_step = sorted(ranked, key=lambda g: (g.summary["step_time_s"], g.run.candidate.label))
    for i, g in enumerate(ranked[:top]):
        s = g.summary
        down = max(s["downtime_per_interruption_s"].values()) if s["recovery"] == "job" else \
            max(v for k, v in s["downtime_per_interruption_s"].items() if k != "maintenance")
        t = s["time_to_train_days"]
        table.add_row(str(i + 1), g.run.candidate.label, f"{s['replica_devices']} dev",
                      units.fmt_time(s["step_time_s"], 3), f"{s['interruptions_per_day']['mean']:.2f}",
                      units.fmt_time(down, 3), f"{s['effective_training_time']['mean']:.1%}",
                      f"{t['mean']:.1f} ({t['p10']:.1f}-{t['p90']:.1f})", str(by_step.index(g) + 1))
    out_console.print(table)
    out_console.print("int/day: interruptions a day; per int: the cluster-wide recovery time one unplanned failure "
                      "costs (with recovery: replica only the failed replica's share of the cluster stops, so a "
                      "smaller model-parallel replica restarts cheaper); ETT: effective training time; by step: the "
                      "plan's rank by step time alone.", highlight=False, soft_wrap=True)
