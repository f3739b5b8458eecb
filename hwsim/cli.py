"""The `hwsim` command: run | validate | collective | presets.

Every user error (HwsimError) is printed as one paragraph on stderr with exit code 2 — never
a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from hwsim import units
from hwsim.cli_common import check_out_dir
from hwsim.errors import ConfigError, HwsimError, PlanError

# -h is --help on every command (subcommands inherit help_option_names from this context)
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="hwsim: simulate distributed transformer training on what-if clusters.")
out_console = Console()
err_console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("hwsim")
        except PackageNotFoundError:   # run from a checkout that was never installed
            text = "unknown (not installed)"
        out_console.print(f"hwsim {text}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main_options(version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="print hwsim's version and exit")] = False) -> None:
    """hwsim: simulate distributed transformer training on what-if clusters."""

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override a field: a.b.c=value (repeatable)")]


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")


def software_line(sw: dict) -> str:
    if sw["framework"] == "custom":
        return (f"hwsim's default stack (no framework named): host {sw['host']}, attention {sw['attention']}, "
                f"loss {sw['loss']}, grads reduced in {sw['grad_reduce_dtype']}")
    version = f" {sw['version']}" if sw.get("version") else ""
    profile = f" (profile from {sw['profile']})" if sw.get("profile") else ""
    return (f"{sw['framework']}{version}{profile}: host {sw['host']}, attention {sw['attention']}, "
            f"loss {sw['loss']}, grads reduced in {sw['grad_reduce_dtype']}")


def plan_violation_line(s: dict) -> str:
    """One line when the plan is one the named framework version cannot run ("" otherwise)."""
    sw, bad = s.get("software") or {}, s.get("software_plan_violations") or []
    if not bad:
        return ""
    version = f" {sw['version']}" if sw.get("version") else ""
    return (f"note: {sw['framework']}{version} cannot run this plan ({'; '.join(bad)}; see its profile's "
            f"plan_space): the step is simulated with its costs all the same, as a what-if.")


def _print_software(s: dict) -> None:
    """Every software setting the step was simulated with, and where it came from (the full
    sources are in summary.json and report.md)."""
    sw, sources = s.get("software"), s.get("software_sources") or {}
    if not sw:
        return
    if plan_violation_line(s):
        err_console.print(f"[yellow]{plan_violation_line(s)}[/yellow]", highlight=False, soft_wrap=True)
    from hwsim.software.profiles import DEFAULT_SOURCE

    out_console.print("[bold]software settings used[/bold] (value: where it comes from)")
    defaults = []
    for name, source in sources.items():
        value = sw.get(name, "counted in the framework's code" if name in ("layer_ops", "eager_elementwise")
                       else "read in the framework's code" if name == "plan_space" else "")
        if source == DEFAULT_SOURCE:   # one line for all of them, below
            defaults.append(f"{name} = {value}")
            continue
        short = source if len(source) <= 110 else source[:107].rstrip() + "..."
        out_console.print(f"  {name} = {value}: {short}", highlight=False, soft_wrap=True)
    if defaults:
        out_console.print(f"  hwsim's default stack (neither the scenario nor a framework profile sets them): "
                          f"{', '.join(defaults)}", highlight=False, soft_wrap=True)


def _print_summary(s: dict) -> None:
    from hwsim.analysis.compare import breakdown_label

    table = Table(title=f"{s['name']} — one training step", show_header=False, title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value")
    plan = s["plan"]
    table.add_row("devices", f"{s['devices']} (simulated {s['simulated_devices']}"
                             f"{', folded' if s['folded'] else ''}; {s['n_tasks']:,} tasks, {s['granularity']} level)")
    table.add_row("plan", f"tp={plan['tp']} pp={plan['pp']} dp={plan['dp']} cp={plan['cp']} ep={plan['ep']} "
                          f"v={plan['virtual_stages']} {plan['schedule']} zero={plan['zero_stage']} "
                          f"recompute={plan['recompute']} sp={plan['sequence_parallel']}; {s['micro_batches']} micro-batches")
    if s.get("software"):
        table.add_row("software", software_line(s["software"]))
    table.add_row("step time", units.fmt_time(s["step_time_s"]))
    table.add_row("throughput", f"{s['tokens_per_s']:,.0f} tokens/s ({s['tokens_per_s_per_device']:,.0f} per device)")
    table.add_row("model TFLOP/s per device", f"{s['tflops_per_device']:.1f}")
    table.add_row("MFU / HFU", f"{s['mfu']:.1%} / {s['hfu']:.1%}")
    fits = "fits" if s["fits_in_memory"] else "[red]DOES NOT FIT[/red]"
    table.add_row("peak memory", f"{units.fmt_bytes(s['peak_memory_bytes'])} of "
                                 f"{units.fmt_bytes(s['memory_capacity_bytes'])} ({fits})")
    step = s["step_time_s"]
    # the busiest device's own time (what report.md's last table splits), not the critical path's
    table.add_row(f"time on device {s.get('breakdown_device', '?')}", "(the busiest device; every instant of its step)")
    for k, val in sorted(s["breakdown"].items(), key=lambda kv: -kv[1]):
        table.add_row(f"  {breakdown_label(k)}", f"{units.fmt_time(val)} ({val / step:.1%})")
    if "time_to_train" in s:
        t = s["time_to_train"]
        table.add_row("time to train", f"{t['days']:.1f} days, {t['device_hours']:,.0f} device-hours, "
                                       f"${t['cost_usd']:,.0f}, {t['energy_mwh']:,.0f} MWh at TDP")
    out_console.print(table)


@app.command()
def run(scenario: Annotated[Path, typer.Argument(help="scenario YAML file")],
        out: Annotated[Optional[Path], typer.Option(help="directory for summary.json and pictures")] = None,
        set_: SetOpt = None,
        fold: Annotated[Optional[bool], typer.Option("--fold/--no-fold", help="simulate one device per role")] = None,
        granularity: Annotated[Optional[str], typer.Option(help="op | layer | step (default: op unless large)")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
        allow_oom: Annotated[bool, typer.Option("--allow-oom", help="exit 0 even if the plan does not fit")] = False,
        allow_batch_change: Annotated[bool, typer.Option(
            "--allow-batch-change", help="let the advice try a larger training.global_batch (a different "
                                         "training run: judged by time per sample)")] = False,
        ) -> None:
    """Simulate one training step of SCENARIO and print its summary.

    The advice under "What limits the step" names only changes it has simulated (each with
    its --set flags, predicted step time and peak memory); it keeps the device count and,
    unless --allow-batch-change, the global batch.

    A plan that does not fit in device memory is still simulated and reported (the finding is
    in summary.json), then the command exits with code 2 unless --allow-oom."""
    from hwsim.config.loader import load_scenario
    from hwsim.simulate import run_step

    if granularity is not None and granularity not in ("op", "layer", "step"):
        raise ConfigError(f"--granularity: {granularity!r} is not allowed; use op, layer or step")
    check_out_dir(out)
    sc = load_scenario(scenario, set_ or [])
    renderers = None
    if out is not None:   # processes that import and warm up matplotlib while the step simulates
        from hwsim.analysis.outputs import start_renderers

        renderers = start_renderers()
    with err_console.status(f"simulating one step of {sc.name} on {sc.cluster.n_devices:,} devices"):
        result = run_step(sc, fold=fold, granularity=granularity)
    from hwsim.analysis.report import bottleneck_account, report_text

    account = bottleneck_account(result) if (out is not None or not as_json) else None
    if as_json:
        out_console.print_json(json.dumps(result.summary, default=_json_default))
    else:
        _print_summary(result.summary)
        _print_software(result.summary)
    files = None
    if out is not None:   # first: the renderers draw the pictures while report.md's advice simulates its what-ifs
        from hwsim.analysis.outputs import write_outputs

        write_json(out / "summary.json", result.summary)
        with err_console.status("simulating the advice's what-ifs; writing timeline, memory, reports, trace "
                                "and intervals"):
            files = write_outputs(result, out, account, renderers, allow_batch_change)
    if not as_json:   # the what-ifs are simulated once per result: report.md's serve the terminal's
        out_console.print(report_text(result, account, allow_batch_change), highlight=False, soft_wrap=True)
    if files is not None:
        out_console.print(f"wrote {out}/: summary.json, {', '.join(sorted(files))}")
    if not result.summary["fits_in_memory"] and not allow_oom:
        raise PlanError(out_of_memory_advice(result.summary))


def out_of_memory_advice(s: dict) -> str:
    p = s["plan"]
    fixes = []
    if p["recompute"] != "full":
        fixes.append("parallel.recompute: full")
    if p["zero_stage"] < 3 and p["dp"] > 1:
        fixes.append(f"parallel.zero_stage: {p['zero_stage'] + 1}")
    fixes.append(f"a larger parallel.tp or parallel.pp (now tp={p['tp']}, pp={p['pp']})")
    fixes.append("a smaller training.micro_batch")
    return (f"the plan does not fit in memory: the peak is {units.fmt_bytes(s['peak_memory_bytes'])} on a device "
            f"with {units.fmt_bytes(s['memory_capacity_bytes'])} (parallel plan and training.micro_batch). "
            f"Try {', or '.join(fixes)}; or run with --allow-oom to accept it.")


@app.command()
def compare(scenarios: Annotated[list[Path], typer.Argument(help="two or more scenario YAML files")],
            set_: SetOpt = None,
            variant: Annotated[Optional[list[str]], typer.Option(
                help="with one scenario: a variant as 'a.b=v,c.d=w' (repeatable)")] = None,
            out: Annotated[Optional[Path], typer.Option(help="directory for comparison.png and .md")] = None) -> None:
    """Simulate scenarios (or variants of one) and show their summaries side by side."""
    from hwsim.analysis.compare import compare_summaries, plot_comparison
    from hwsim.config.loader import load_scenario
    from hwsim.simulate import run_step

    check_out_dir(out)
    runs: list[tuple[str, list[str]]] = []
    if variant:
        if len(scenarios) != 1:
            raise ConfigError("--variant: give exactly one scenario with --variant, or several scenarios without it")
        runs.append((scenarios[0].stem, []))
        for v in variant:
            runs.append((v, [x.strip() for x in v.split(",") if x.strip()]))
    else:
        if len(scenarios) < 2:
            raise ConfigError("compare: give two or more scenario files, or one with --variant a.b=v")
        runs = [(p.stem, []) for p in scenarios]
    names, summaries = [], []
    for i, (name, extra) in enumerate(runs):
        path = scenarios[0] if variant else scenarios[i]
        summaries.append(run_step(load_scenario(path, (set_ or []) + extra)).summary)
        names.append(name)
    text = compare_summaries(names, summaries)
    out_console.print(text, highlight=False, soft_wrap=True)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "comparison.md").write_text(text + "\n")
        plot_comparison(names, summaries, out / "comparison.png")
        write_json(out / "comparison.json", dict(zip(names, summaries)))
        out_console.print(f"wrote {out}/: comparison.md, comparison.png, comparison.json")


@app.command()
def validate(file: Annotated[Optional[Path], typer.Argument(
                 help="validation file: a YAML list of published runs (id, source, scenario, published)")] = None,
             builtin: Annotated[Optional[str], typer.Option(
                 help="a validation set hwsim ships instead of FILE: public (published runs) | vtrain "
                      "(vTrain's single-node A100 measurements)")] = None,
             json_out: Annotated[Optional[Path], typer.Option("--json", help="write the results as JSON")] = None,
             tag: Annotated[Optional[list[str]], typer.Option(help="only records with this tag (repeatable)")] = None,
             workers: Annotated[int, typer.Option(help="processes")] = 2,
             set_: SetOpt = None) -> None:
    """Simulate every published run in FILE (or --builtin public); print predicted vs published step time and errors.

    --set applies to every record: a what-if over the whole set (e.g. training.attention=unfused)."""
    from rich.progress import Progress
    from hwsim.studies.validation import load_records, run_validation, validation_report

    file = _validation_file(file, builtin)
    records = load_records(file)
    if tag:
        records = [r for r in records if set(tag) & set(r.get("tags") or ())]
        if not records:
            raise ConfigError(f"--tag: no record has tag {' or '.join(tag)}; see the `tags` of the records in {file}")
    with Progress(transient=True, console=err_console) as progress:
        task = progress.add_task("simulating published runs", total=len(records))
        results = run_validation(records, workers=workers, progress=lambda r: progress.advance(task),
                                 overrides=tuple(set_ or ()))
    report = validation_report(results)
    out_console.print(_comparison_table(
        f"Validation: {file}",
        [(r["id"], units.fmt_time(r["published_step_time_s"]), units.fmt_time(r["predicted_step_time_s"]), r["error"])
         for r in report["records"]]))
    tags = Table(title="Per tag (records with a published step time)", title_justify="left")
    for col in ("tag", "n", "MAPE", "median", "p90"):
        tags.add_column(col, justify="right" if col != "tag" else "left")
    for t, st in report["per_tag"].items():
        if st.get("n"):
            tags.add_row(t, str(st["n"]), f"{st['mape']:.1%}", f"{st['median_ape']:.1%}", f"{st['p90_ape']:.1%}")
    out_console.print(tags)
    if report["peak_memory"]:
        out_console.print(_comparison_table(
            "Peak memory vs published (where published)",
            [(m["id"], units.fmt_bytes(m["published_bytes"]), units.fmt_bytes(m["predicted_bytes"]), m["error"])
             for m in report["peak_memory"]]))
    for u in report["unsupported"]:
        out_console.print(f"[yellow]not simulated[/yellow] {u['id']}: {u['reason']}")
    o = report["overall"]
    if o.get("n"):
        out_console.print(f"simulated {report['simulated']} of {report['total']} records; "
                          f"MAPE {o['mape']:.1%}, median {o['median_ape']:.1%}, p90 {o['p90_ape']:.1%}, "
                          f"mean signed error {o['mean_signed_error']:+.1%}")
    if json_out:
        write_json(json_out, report)


def _validation_file(file: Path | None, builtin: str | None) -> Path:
    """FILE or the shipped set --builtin names; a missing FILE is a one-paragraph error."""
    from hwsim.data import BUILTIN_VALIDATION, builtin_validation_file

    sets = " or ".join(f"--builtin {name}" for name in BUILTIN_VALIDATION)
    if builtin is not None:
        if file is not None:
            raise ConfigError(f"validate: give a validation file or --builtin {builtin}, not both")
        return builtin_validation_file(builtin)
    if file is None:
        raise ConfigError(f"validate: give a validation file (a YAML list of published runs), or use one that "
                          f"hwsim ships: {sets} (e.g. hwsim validate --builtin public)")
    if not file.is_file():
        what = "is a directory, not a file" if file.is_dir() else "no such file"
        raise ConfigError(f"{file}: {what}. `hwsim validate` needs a validation file (a YAML list of published "
                          f"runs: id, source, scenario, published), or use one that hwsim ships: {sets}")
    return file


def _comparison_table(title: str, rows: list[tuple[str, str, str, float]]) -> Table:
    """record | published | predicted | error, one row each."""
    table = Table(title=title, title_justify="left")
    for col in ("record", "published", "predicted", "error"):
        table.add_column(col, justify="right" if col != "record" else "left")
    for name, published, predicted, error in rows:
        table.add_row(name, published, predicted, f"{error:+.1%}")
    return table


@app.command()
def collective(scenario: Annotated[Path, typer.Argument(help="scenario YAML (its cluster is used)")],
               op: Annotated[str, typer.Option(help="all-reduce | all-gather | reduce-scatter | all-to-all | broadcast | send-recv")] = "all-reduce",
               group: Annotated[str, typer.Option(help="all | node | N (the first N devices)")] = "all",
               sizes: Annotated[str, typer.Option(help="MIN:MAX, doubling (e.g. 1MiB:8GiB)")] = "1MiB:8GiB",
               set_: SetOpt = None,
               as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """nccl-tests-style table of a collective on the scenario's cluster."""
    from hwsim.config.loader import load_scenario
    from hwsim.network.benchmark import collective_table
    from hwsim.network.collectives import CollectiveOp

    try:
        cop = CollectiveOp(op)
    except ValueError:
        raise ConfigError(f"--op: {op!r} is not a collective; use one of "
                          f"{', '.join(c.value for c in CollectiveOp)}") from None
    lo_text, sep, hi_text = sizes.partition(":")
    try:
        lo = units.parse_bytes(lo_text)
        hi = units.parse_bytes(hi_text) if sep else lo
    except units.UnitError as exc:
        raise ConfigError(f"--sizes: {exc}") from None
    if lo <= 0 or hi < lo:
        raise ConfigError(f"--sizes: {sizes!r} must be MIN:MAX with 0 < MIN <= MAX, e.g. 1MiB:8GiB")
    grp: str | int = group
    if group not in ("all", "node"):
        try:
            grp = int(group)
        except ValueError:
            raise ConfigError(f"--group: {group!r} must be all, node or a number of devices") from None
    sc = load_scenario(scenario, set_ or [])
    if isinstance(grp, int) and not 2 <= grp <= sc.cluster.n_devices:
        raise ConfigError(f"--group: {grp} must be between 2 and the cluster's {sc.cluster.n_devices} devices")
    size_list = []
    s = lo
    while s <= hi * (1 + 1e-9):
        size_list.append(s)
        s *= 2
    rows = collective_table(sc.cluster, cop, grp, size_list)
    if as_json:
        out_console.print_json(json.dumps(rows, default=_json_default))
        return
    table = Table(title=f"{cop.value} on {grp} of {sc.name}", title_justify="left")
    for col in ("size", "time", "algbw", "busbw"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(units.fmt_bytes(r["size_bytes"]), units.fmt_time(r["time_s"]),
                      units.fmt_rate(r["algbw_bytes_per_s"]), units.fmt_rate(r["busbw_bytes_per_s"]))
    out_console.print(table)


@app.command()
def presets(kind: Annotated[Optional[str], typer.Argument(
        help="accelerators | models | nodes | software")] = None) -> None:
    """List the presets hwsim ships (accelerators, models, nodes, software profiles)."""
    from hwsim.config.presets import PresetKind, load_preset, preset_names

    kinds = list(PresetKind)
    if kind == "software":
        kinds = []
    elif kind is not None:
        try:
            kinds = [PresetKind(kind)]
        except ValueError:
            raise ConfigError(f"presets: unknown kind {kind!r}; use one of "
                              f"{', '.join(k.value for k in PresetKind)}, software") from None
    for k in kinds:
        table = Table(title=k.value, title_justify="left")
        table.add_column("name")
        table.add_column("description")
        for name in preset_names(k):
            data = load_preset(k, name, k.value)
            table.add_row(name, str(data.get("description", "")))
        out_console.print(table)
    if kind in (None, "software"):
        _print_software_profiles()


def _print_software_profiles() -> None:
    """Each framework's profiles (software.framework, software.version) and what they set."""
    from hwsim.software.profiles import ProfileSettings, known_frameworks, load_framework

    table = Table(title="software (software.framework; software.version picks a profile)", title_justify="left")
    table.add_column("framework")
    table.add_column("profile from")
    table.add_column("settings it states (each with its source in the file)")
    for name in known_frameworks():
        spec = load_framework(name)
        for profile in spec.profiles:
            stated = [f"{f}={getattr(profile.settings, f).value}" for f in ProfileSettings.model_fields
                      if getattr(profile.settings, f) is not None and getattr(profile.settings, f).value is not None]
            extra = [x for x, v in (("layer_ops", profile.layer_ops), ("eager_elementwise", profile.eager_elementwise))
                     if v is not None]
            table.add_row(name, profile.from_, ", ".join(stated + extra))
    out_console.print(table)


from hwsim.studies.commands import plan as _plan_command, sweep as _sweep_command  # noqa: E402
from hwsim.reliability.commands import goodput as _goodput_command  # noqa: E402
from hwsim.reliability.variance_command import variance as _variance_command  # noqa: E402

app.command("sweep")(_sweep_command)
app.command("plan")(_plan_command)
app.command("goodput")(_goodput_command)


def _reflow_help(typer_app: typer.Typer) -> None:
    """Each command's help is its docstring with the line breaks inside a paragraph joined: rich
    keeps a docstring's own line breaks and then wraps each line again to the terminal, which
    leaves fragments like "(each with" alone on a line at 80 columns."""
    import inspect

    for info in typer_app.registered_commands:
        doc = info.help or inspect.getdoc(info.callback) or ""
        info.help = "\n\n".join(" ".join(line.strip() for line in para.splitlines())
                                 for para in doc.split("\n\n"))


_reflow_help(app)
app.command("variance")(_variance_command)


def main() -> None:
    try:
        app()
    except HwsimError as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
