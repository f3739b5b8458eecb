"""The `hwsim sweep` and `hwsim plan` commands (typer functions; hwsim.cli registers them).

Every user error is a ConfigError naming the flag or field and the fix; hwsim.cli prints it
as one paragraph and exits with code 2.
"""

from __future__ import annotations

import copy
import json
import math
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from hwsim import units
from hwsim.errors import ConfigError, PlanError

__all__ = ["sweep", "plan", "parse_count", "print_plans", "plan_report_json"]

# Tables are the result: in a pipe or a log file they are drawn 140 columns wide, not cut to 80.
out_console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True)

# accelerator preset prefix -> default node preset; GB200/GB300 GPUs only come in NVL72 racks (compute
# trays of 4 GPUs in a 72-GPU NVLink domain), never in 8-GPU HGX nodes
_NODE_FOR = (("a100", "dgx-a100"), ("h100", "dgx-h100"), ("h200", "hgx-h200"), ("b200", "dgx-b200"),
             ("gb200", "gb200-nvl72"), ("gb300", "gb300-nvl72"), ("v100", "dgx-v100"))
_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}   # counts, not units


def parse_count(text: str, flag: str) -> float:
    """'300e9', '300B', '15T', '2.5M' -> a count (tokens, dollars)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKmMbBgGtT]?)\s*", str(text).replace(",", "").replace("_", ""))
    if not m:
        raise ConfigError(f"{flag}: {text!r} is not a number; write e.g. 300e9, 300B or 15T")
    value = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if value <= 0:
        raise ConfigError(f"{flag}: {text!r} must be positive")
    return value


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=err_console, transient=False)


_MAGNITUDES = ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "k"))


def _compact(x: float) -> str:
    """12345678 -> '12.3M' (a count or dollars, not a unit)."""
    for scale, suffix in _MAGNITUDES:
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


def _fmt_ttt(s: dict[str, Any]) -> str:
    t = s.get("time_to_train")
    if not t:
        return ""
    days = f"{t['days']:,.0f}" if t["days"] >= 10 else f"{t['days']:.2g}"
    return f"{days} d ${_compact(t['cost_usd'])}"


# --- sweep --------------------------------------------------------------------------------------

def sweep(sweep_file: Annotated[Path, typer.Argument(help="sweep YAML (a base scenario and axes)")],
          executor: Annotated[str, typer.Option(help="local (processes) | dask")] = "local",
          workers: Annotated[int, typer.Option(help="local processes, or Dask LocalCluster workers")] = 2,
          scheduler: Annotated[Optional[str], typer.Option(help="Dask scheduler address (tcp://host:8786)")] = None,
          out: Annotated[Optional[Path], typer.Option(help="output directory (default: sweep-<name>)")] = None,
          plots: Annotated[bool, typer.Option("--plots/--no-plots", help="draw the metric against each axis")] = True,
          ) -> None:
    """Run a sweep's points in parallel, storing each as it finishes (rerun to resume).

    Then print the table and write results.parquet, results.csv and plots into --out."""
    from hwsim.studies.executors import make_executor
    from hwsim.studies.plots import plot_sweep
    from hwsim.cli_common import check_out_dir
    from hwsim.studies.sweep import load_sweep, run_sweep, sweep_axes_text

    ex = make_executor(executor, workers, scheduler)
    sw = load_sweep(sweep_file)
    out_dir = out or Path(f"sweep-{re.sub(r'[^A-Za-z0-9_.-]+', '-', sw.name)}")
    check_out_dir(out_dir)
    out_console.print(f"sweep {sw.name}: {len(sw.points)} points ({sw.sample.kind.value}; {sweep_axes_text(sw)})")
    with _progress() as progress:
        task = progress.add_task("simulating", total=len(sw.points))

        def on_start(total: int, done: int) -> None:
            progress.update(task, total=total, completed=done)
            if done:
                progress.console.print(f"resuming: {done} of {total} points already in {out_dir}")

        outcome = run_sweep(sw, out_dir, ex, on_start=on_start, on_point=lambda r: progress.advance(task))
    files = list(outcome.files)
    if plots:
        files += plot_sweep(outcome.records, sw.axis_paths, out_dir)
    _print_sweep_table(sw.name, outcome.records, sw.axis_paths)
    n_plots = sum(1 for f in files if f.suffix == ".png")
    out_console.print(f"ran {outcome.ran}, skipped {outcome.skipped} (already done), {outcome.failed} recorded an "
                      f"error; {outcome.elapsed_s:.1f} s. Wrote {out_dir}/: results.sqlite, results.parquet, "
                      f"results.csv and {n_plots} plots")


def _print_sweep_table(name: str, records, axis_paths: list[str], limit: int = 60) -> None:
    table = Table(title=f"sweep {name}", title_justify="left")
    for p in axis_paths:
        table.add_column(p.rsplit(".", 1)[-1], no_wrap=True)
    errors = any(not r.ok for r in records)
    for col in ("devices", "step time", "tokens/s", "MFU", "memory", "time to train") + (("error",) if errors else ()):
        table.add_column(col, justify="right" if col not in ("error", "time to train") else "left",
                         no_wrap=col != "error")
    for r in records[:limit]:
        cells = [str(r.axes.get(p)) for p in axis_paths]
        s = r.summary
        if s:
            mem = units.fmt_bytes(s["peak_memory_bytes"], precision=4) + ("" if s["fits_in_memory"] else " OOM")
            cells += [str(s["devices"]), units.fmt_time(s["step_time_s"], 3), _compact(s["tokens_per_s"]),
                      f"{s['mfu']:.1%}", mem, _fmt_ttt(s)] + ([""] if errors else [])
        else:
            cells += ["", "", "", "", "", "", f"{r.error_kind}: {(r.error or '')[:100]}"]
        table.add_row(*cells)
    out_console.print(table)
    if len(records) > limit:
        out_console.print(f"... and {len(records) - limit} more rows in results.csv")


# --- plan ---------------------------------------------------------------------------------------

def _build_scenario(from_: Path | None, model: str | None, accelerator: str | None, devices: int | None,
                    node: str | None, seq_len: int | None, global_batch: int | None, tokens: float | None,
                    price: float | None, set_: list[str], devices_required: bool = True):
    from hwsim.config.loader import apply_overrides, read_yaml, scenario_from_mapping, set_path
    from hwsim.studies.planner import job_nvlink_domain

    if from_ is not None:
        data = read_yaml(from_)
        if not isinstance(data, dict):
            raise ConfigError(f"--from {from_}: a scenario must be a YAML mapping")
        origin = str(from_)
    else:
        missing = [f for f, v in (("--model", model), ("--accelerator", accelerator),
                                  ("--devices", devices if devices_required else 0),
                                  ("--global-batch", global_batch)) if v is None]
        if missing:
            # no default global batch: it is a convergence choice of the training run, which the
            # planner keeps fixed (GPT-3 175B: 3.2M tokens a step, Brown et al. 2020, Table 2.1)
            why = (" (the sequences per optimizer step are the training run's choice, not the planner's: "
                   "GPT-3 175B used 3.2M tokens a step, about 1536 sequences of 2048)"
                   if "--global-batch" in missing else "")
            raise ConfigError(f"plan: {', '.join(missing)} required without --from{why}; e.g. --model llama3-70b "
                              f"--accelerator h100-sxm --devices 64 --global-batch 512, or give --from SCENARIO")
        node = node or next((n for prefix, n in _NODE_FOR if accelerator.startswith(prefix)), None)
        if node is None:
            raise ConfigError(f"--node: no default node for accelerator {accelerator!r}; name a node preset "
                              f"(see `hwsim presets nodes`), e.g. --node dgx-h100")
        data = {"name": f"{model}-on-{devices}x{accelerator}", "cluster": {"preset": node},
                "model": model, "training": {"global_batch": global_batch, "micro_batch": 1}}
        origin = "plan"
    data = copy.deepcopy(data)
    if model is not None:
        data["model"] = model
    if accelerator is not None:
        set_path(data, "cluster.accelerator", accelerator)
    if node is not None and from_ is not None:
        raise ConfigError("--node: with --from the cluster comes from the scenario; change it there or leave "
                          "--node out")
    if seq_len is not None:
        set_path(data, "model.seq_len", seq_len)
    if global_batch is not None:
        set_path(data, "training.global_batch", global_batch)
    if tokens is not None:
        set_path(data, "training.tokens", tokens)
    if price is not None:
        set_path(data, "cluster.accelerator.price_per_hour", price)
    data = apply_overrides(data, set_ or [])
    if devices is not None:
        cluster = data.get("cluster") or {}
        probe = scenario_from_mapping(data, origin=origin)   # devices_per_node after presets
        dpn = probe.cluster.devices_per_node
        if devices % dpn:
            raise ConfigError(f"--devices: {devices} is not a whole number of nodes of {dpn} devices; use a "
                              f"multiple of {dpn}")
        cluster["nodes"] = devices // dpn
        segment = job_nvlink_domain(devices, dpn, probe.cluster.nvlink_domain)
        if segment is not None and "nvlink_domain" not in cluster:   # written by the user: kept
            cluster["nvlink_domain"] = segment
        data["cluster"] = cluster
        if devices != probe.cluster.n_devices:
            data.setdefault("parallel", {}).pop("dp", None)   # let dp follow the new device count
    return scenario_from_mapping(data, origin=origin)


def plan(model: Annotated[Optional[str], typer.Option(help="model preset (e.g. llama3-70b)")] = None,
         accelerator: Annotated[Optional[str], typer.Option(help="accelerator preset (e.g. h100-sxm)")] = None,
         devices: Annotated[Optional[int], typer.Option(help="devices (with --days: the most to consider)")] = None,
         tokens: Annotated[Optional[str], typer.Option(help="token budget: time to train, cost, energy (e.g. 300B)")] = None,
         days: Annotated[Optional[float], typer.Option(help="deadline: find the fewest devices that meet it")] = None,
         budget: Annotated[Optional[str], typer.Option(help="USD: drop plans that cost more (needs --tokens)")] = None,
         seq_len: Annotated[Optional[int], typer.Option(help="sequence length")] = None,
         global_batch: Annotated[Optional[int], typer.Option(
             help="sequences per optimizer step; required without --from (no default: it is the training "
                  "run's choice, kept fixed)")] = None,
         from_: Annotated[Optional[Path], typer.Option("--from", help="scenario: cluster, model, training and "
                                                       "the baseline plan")] = None,
         node: Annotated[Optional[str], typer.Option(help="node preset (default from the accelerator)")] = None,
         price: Annotated[Optional[float], typer.Option(help="USD per device-hour (default: the preset's)")] = None,
         rank: Annotated[str, typer.Option(help="throughput | cost")] = "throughput",
         objective: Annotated[str, typer.Option(help="step (ranked by --rank) | time-to-train (under the "
                                                "scenario's failures: hwsim goodput)")] = "step",
         top: Annotated[int, typer.Option(help="plans to print")] = 5,
         max_simulations: Annotated[int, typer.Option(help="most plans to simulate")] = 16,
         workers: Annotated[int, typer.Option(help="processes (or Dask workers)")] = 2,
         executor: Annotated[str, typer.Option(help="local | dask")] = "local",
         scheduler: Annotated[Optional[str], typer.Option(help="Dask scheduler address")] = None,
         granularity: Annotated[str, typer.Option(help="layer | op (simulation detail)")] = "layer",
         json_out: Annotated[Optional[Path], typer.Option("--json", help="write the ranked plans as JSON")] = None,
         set_: Annotated[Optional[list[str]], typer.Option("--set", help="override a field: a.b.c=value")] = None,
         ) -> None:
    """Search the parallel plans that fit in memory, simulate the promising ones, rank them.

    Give --from SCENARIO, or --model, --accelerator, --devices (or --days) and --global-batch:
    e.g. hwsim plan --model llama3-70b --accelerator h100-sxm --devices 64 --global-batch 512 --tokens 15T."""
    from hwsim.studies.executors import make_executor
    from hwsim.studies.planner import Objective, RankBy, plan_search

    try:
        rank_by = RankBy(rank)
    except ValueError:
        raise ConfigError(f"--rank: {rank!r} is not allowed; use throughput or cost") from None
    try:
        goal = Objective(objective)
    except ValueError:
        raise ConfigError(f"--objective: {objective!r} is not allowed; use step or time-to-train") from None
    if granularity not in ("layer", "op"):
        raise ConfigError(f"--granularity: {granularity!r} is not allowed; use layer or op")
    if top < 1 or max_simulations < 1:
        raise ConfigError("--top and --max-simulations must be at least 1")
    n_tokens = parse_count(tokens, "--tokens") if tokens is not None else None
    budget_usd = parse_count(budget, "--budget") if budget is not None else None
    if days is not None and days <= 0:
        raise ConfigError(f"--days: {days} must be positive")
    ex = make_executor(executor, workers, scheduler)
    sc = _build_scenario(from_, model, accelerator, devices if days is None else None, node, seq_len, global_batch,
                         n_tokens, price, set_ or [], devices_required=days is None)
    if budget_usd is not None and not sc.training.tokens:
        raise ConfigError("--budget: a budget needs a token budget to cost; give --tokens (e.g. 300B)")
    if goal == Objective.TIME_TO_TRAIN and (days is not None or not sc.training.tokens):
        raise ConfigError("--objective time-to-train: needs a token budget (--tokens, e.g. 15T, or training.tokens) "
                          "and ranks the plans of one device count (leave out --days)")
    if days is not None:
        report = _deadline(sc, days, devices, max_simulations, ex, granularity, budget_usd)
    else:
        with _progress() as progress:
            task = progress.add_task("estimating plans", total=None)

            def on_event(stage: str, done: int, total: int) -> None:
                progress.update(task, description="simulating plans" if stage == "simulate" else "estimating plans",
                                total=total, completed=done)

            report = plan_search(sc, rank_by=rank_by, max_simulations=max_simulations, executor=ex,
                                 granularity=granularity, include_baseline=from_ is not None, budget_usd=budget_usd,
                                 on_event=on_event)
    if report is None:
        return
    print_plans(report, top)
    if goal == Objective.TIME_TO_TRAIN:
        from hwsim.reliability.commands import print_goodput_ranking, rank_plans_by_goodput

        print_goodput_ranking(rank_plans_by_goodput(report), top, report.devices)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(plan_report_json(report), indent=2, default=str) + "\n")
        out_console.print(f"wrote {json_out}")
    if report.best is None:
        raise PlanError("no simulated plan fits in memory" + (" within the budget" if budget_usd else "") +
                        ": give more devices (--devices), a smaller --global-batch or --seq-len, or raise "
                        "--max-simulations")


def _deadline(sc, days: float, devices: int | None, max_simulations: int, ex, granularity: str,
              budget_usd: float | None):
    from hwsim.studies.planner import fewest_devices

    limit = devices or max(sc.cluster.n_devices * 8, sc.cluster.devices_per_node)
    with err_console.status(f"searching device counts up to {limit} for a {days:g}-day deadline"):
        result = fewest_devices(sc, days, limit, max_simulations=max_simulations, executor=ex,
                                granularity=granularity, budget_usd=budget_usd)
    table = Table(title=f"best plan per device count ({_compact(sc.training.tokens)} tokens)", title_justify="left")
    table.add_column("devices", justify="right")
    table.add_column("estimated days", justify="right")
    table.add_column("simulated days", justify="right")
    simulated = dict(result.checked)
    for n, d in result.curve:
        table.add_row(str(n), "no plan fits" if math.isinf(d) else f"{d:.1f}",
                      "" if n not in simulated else f"{simulated[n]:.1f}")
    out_console.print(table)
    if result.devices is None:
        raise PlanError(f"--days: no device count up to {limit} trains {_compact(sc.training.tokens)} tokens within "
                        f"{days:g} days in simulation; raise --devices (the most to consider) or the deadline")
    out_console.print(f"fewest devices for {days:g} days: {result.devices}")
    return result.report


def print_plans(report, top: int) -> None:
    table = Table(title=f"best plans on {report.devices} devices (by {report.rank_by.value}; "
                        f"{report.elapsed_s:.0f} s)", title_justify="left")
    for col in ("#", "plan", "step", "tokens/s", "MFU", "memory", "time to train"):
        table.add_column(col, justify="left" if col in ("plan", "time to train") else "right", no_wrap=True)
    rows = report.ranked[:top]
    if report.baseline is not None and report.baseline not in rows and report.baseline.summary:
        rows = rows + [report.baseline]
    for run in rows:
        s = run.summary
        rank = str(report.ranked.index(run) + 1) if run in report.ranked else "-"
        label = run.candidate.label + (" baseline" if run.baseline else "")
        table.add_row(rank, label, units.fmt_time(s["step_time_s"], 3), _compact(s["tokens_per_s"]),
                      f"{s['mfu']:.1%}",
                      units.fmt_bytes(s["peak_memory_bytes"], precision=4) + ("" if s["fits_in_memory"] else " OOM"),
                      _fmt_ttt(s))
    out_console.print(table)
    for line in report.explanation:
        out_console.print(line, highlight=False, soft_wrap=True)


def plan_report_json(report) -> dict[str, Any]:
    def run_json(run, rank: int | None) -> dict[str, Any]:
        c = run.candidate
        return {"rank": rank, "plan": c.label, "baseline": run.baseline,
                "parallel": {"tp": c.tp, "pp": c.pp, "dp": c.dp, "cp": c.cp, "ep": c.ep, "etp": c.etp,
                             "virtual_stages": c.virtual_stages, "schedule": c.schedule.value,
                             "zero_stage": c.zero_stage, "recompute": c.recompute.value,
                             "sequence_parallel": c.sequence_parallel},
                "micro_batch": c.micro_batch,
                "estimate": None if run.estimate is None else {
                    "step_time_s": run.estimate.step_time_s, "lower_bound_s": run.estimate.lower_bound_s,
                    "memory_bytes": run.estimate.memory_bytes},
                "scenario": run.scenario, "summary": run.summary, "error": run.error,
                "simulation_s": run.duration_s}

    return {"devices": report.devices, "rank_by": report.rank_by.value, "elapsed_s": report.elapsed_s,
            "counts": report.counts, "explanation": report.explanation,
            "ranked": [run_json(r, i + 1) for i, r in enumerate(report.ranked)],
            "rejected": [run_json(r, None) for r in report.rejected],
            "baseline": None if report.baseline is None else run_json(report.baseline, None)}
