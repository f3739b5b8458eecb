"""`hwsim variance SCENARIO`: the step time as a distribution over many simulated steps, with the
scenario's `reliability.variance` block (kernel and device spread, stragglers).

The step is simulated unfolded (every device on its own: folding is exact only while peers run
identically, which variance breaks); a cluster too large to unfold is an exit-2 error saying so
and what to do. `hwsim run` of the same scenario stays the folded, noiseless step.
Every user error is a HwsimError naming the field or flag and the fix (exit 2 in hwsim.cli)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from hwsim import units
from hwsim.errors import ConfigError

__all__ = ["variance", "variance_summary", "variance_table"]

out_console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True)


def variance_summary(scenario, dist) -> dict:
    """The distribution as plain numbers (the --json output)."""
    block = scenario.reliability.variance if scenario.reliability is not None else None
    noiseless = dist.noiseless_step_s
    p = {q: dist.percentile(q) for q in (50, 90, 99)}
    return {
        "name": scenario.name,
        "devices": scenario.cluster.n_devices,
        "unfolded": True,
        "tasks": dist.n_tasks,
        "samples": int(len(dist.step_times_s)),
        "seed": 0 if block is None else block.seed,
        "kernel_cv": 0.0 if block is None else block.kernel_cv,
        "device_cv": 0.0 if block is None else block.device_cv,
        "link_cv": 0.0 if block is None else block.link_cv,
        "stragglers": [] if block is None else [s.model_dump(exclude_none=True) for s in block.stragglers],
        "noiseless_step_s": noiseless,
        "mean_s": float(dist.step_times_s.mean()),
        "p50_s": p[50], "p90_s": p[90], "p99_s": p[99],
        "max_s": float(dist.step_times_s.max()),
        "slowdown_p50": p[50] / noiseless, "slowdown_p99": p[99] / noiseless,
        "slowest_device": dist.slowest_device,
        "slowest_device_share": dist.slowest_share,
    }


def variance_table(s: dict) -> Table:
    table = Table(title=f"{s['name']}: step time over {s['samples']} simulated steps (seed {s['seed']}), "
                        f"unfolded: all {s['devices']:,} devices simulated ({s['tasks']:,} tasks)",
                  show_header=False, title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value")
    strag = ", ".join((f"device {x['device']}" if "device" in x else f"node {x['node']}") + f" x{x['slowdown']:g}"
                      for x in s["stragglers"]) or "none"
    table.add_row("variance", f"kernel_cv {s['kernel_cv']:g}, device_cv {s['device_cv']:g}, link_cv {s['link_cv']:g}; "
                                f"stragglers: {strag}")
    table.add_row("noiseless step", units.fmt_time(s["noiseless_step_s"]))
    table.add_row("p50", units.fmt_time(s["p50_s"]))
    table.add_row("p90", units.fmt_time(s["p90_s"]))
    table.add_row("p99", units.fmt_time(s["p99_s"]))
    table.add_row("mean / max", f"{units.fmt_time(s['mean_s'])} / {units.fmt_time(s['max_s'])}")
    table.add_row("slowdown", f"p99 / noiseless = {s['slowdown_p99']:.3f}x (p50: {s['slowdown_p50']:.3f}x)")
    table.add_row("slowest device", f"device {s['slowest_device']}: the busiest on compute in "
                                    f"{s['slowest_device_share']:.0%} of the samples (synchronous collectives make "
                                    f"the others wait for it)")
    return table


def variance(scenario: Annotated[Path, typer.Argument(help="scenario YAML file (its reliability.variance block)")],
             samples: Annotated[Optional[int], typer.Option(help="simulated steps (default: the block's, 100)")]
             = None,
             seed: Annotated[Optional[int], typer.Option(help="random seed (default: the block's, 0)")] = None,
             set_: Annotated[Optional[list[str]], typer.Option("--set", help="override a field: a.b.c=value")] = None,
             as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False) -> None:
    """Step-time distribution under kernel and device variance and stragglers: p50, p90, p99, the
    slowdown over the noiseless step, and the device the others wait for. Simulated unfolded
    (folding is exact only without variance); `hwsim run` stays the folded, noiseless step."""
    from hwsim.config.loader import load_scenario
    from hwsim.reliability.variance import variance_from_scenario

    if samples is not None and not 1 <= samples <= 100_000:
        raise ConfigError(f"--samples: {samples} must be in 1..100000")
    if seed is not None and seed < 0:
        raise ConfigError(f"--seed: {seed} must not be negative")
    sc = load_scenario(scenario, set_ or [])
    block = sc.reliability.variance if sc.reliability is not None else None
    n = samples if samples is not None else (block.samples if block is not None else 100)
    with err_console.status(f"simulating {sc.name} unfolded on {sc.cluster.n_devices:,} devices, {n} samples"):
        dist = variance_from_scenario(sc, samples=samples, seed=seed)
    summary = variance_summary(sc, dist)
    if seed is not None:
        summary["seed"] = seed
    if as_json:
        out_console.print_json(json.dumps(summary))
    else:
        out_console.print(variance_table(summary))
