"""What `hwsim run --out` costs on top of the simulation: each output timed on its own, then
all of them as the CLI writes them (renderer processes forked before the simulation, so that
matplotlib and pyarrow import while it runs), as a ratio to the simulation time; then the CLI
itself, `hwsim run` with and without --out, in subprocesses (best of --repeat).

    python bench/outputs.py [SCENARIO] [--repeat N]      (default: GPT-3 175B on 1024 A100)

The goal (issue 15): the outputs cost no more than the simulation (ratio <= 1). The CLI rows
include the advice's what-if simulations, which `run` prints with or without --out.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT = REPO / "scenarios" / "gpt3-175b-1024xa100.yaml"


def _timed(function, *args):
    start = time.perf_counter()
    value = function(*args)
    return time.perf_counter() - start, value


def _cli_wall_s(scenario: Path, out: Path | None, repeat: int) -> float:
    command = [sys.executable, "-m", "hwsim.cli", "run", str(scenario), "--allow-oom"]
    if out is not None:
        command += ["--out", str(out)]
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=REPO)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--repeat", type=int, default=3, help="CLI runs per row (the best is shown)")
    args = parser.parse_args()

    from hwsim.analysis.outputs import start_renderers, write_outputs
    from hwsim.config.loader import load_scenario
    from hwsim.simulate import run_step

    scenario = load_scenario(args.scenario, [])
    renderers = start_renderers()          # as the CLI does: before the simulation
    sim_s, result = _timed(run_step, scenario)
    from hwsim.analysis.report import bottleneck_account, report_text

    account_s, account = _timed(bottleneck_account, result)
    advice_s, _ = _timed(report_text, result, account)   # the advice's what-ifs, cached for report.md
    with tempfile.TemporaryDirectory() as tmp:
        together = Path(tmp) / "together"
        total_s, _ = _timed(write_outputs, result, together, account, renderers)
        alone = _each_output(result, account, Path(tmp) / "alone")
        print(f"{result.summary['name']}: simulation {sim_s:.3f} s (bottleneck account {account_s:.3f} s, "
              f"shared by the outputs)")
        print(f"advice: {len(result.what_ifs)} what-ifs simulated in {advice_s:.3f} s "
              f"({advice_s / sim_s:.2f} x simulation; printed by run with or without --out)")
        print(f"{'output (each alone, in this process)':<44}{'seconds':>9}{'x simulation':>14}")
        for name, seconds in alone:
            print(f"  {name:<42}{seconds:>9.3f}{seconds / sim_s:>14.2f}")
        serial = sum(s for _, s in alone)
        print(f"  {'sum, one after the other':<42}{serial:>9.3f}{serial / sim_s:>14.2f}")
        mode = "with renderer processes" if renderers is not None else "in this process (no fork here)"
        print(f"  {'write_outputs, ' + mode:<42}{total_s:>9.3f}{total_s / sim_s:>14.2f}")
        plain = _cli_wall_s(args.scenario, None, args.repeat)
        with_out = _cli_wall_s(args.scenario, Path(tmp) / "cli", args.repeat)
    print(f"CLI wall (best of {args.repeat}): run {plain:.3f} s, run --out {with_out:.3f} s, "
          f"--out adds {with_out - plain:.3f} s ({(with_out - plain) / sim_s:.2f} x simulation)")


def _each_output(result, account, out: Path) -> list[tuple[str, float]]:
    """Each output written on its own, in this process (matplotlib's and pyarrow's first import
    counted apart)."""
    from hwsim.analysis.html_report import write_html_report
    from hwsim.analysis.intervals import interval_columns, write_interval_files
    from hwsim.analysis.memory_plot import draw_memory, memory_layout
    from hwsim.analysis.perfetto import write_perfetto
    from hwsim.analysis.report import report_markdown
    from hwsim.analysis.timeline import draw_timeline, timeline_layout

    out.mkdir(parents=True)
    rows = []
    import_s, _ = _timed(lambda: (__import__("matplotlib.figure"), __import__("pyarrow.parquet")))
    rows.append(("import matplotlib + pyarrow (first use)", import_s))
    layout_s, timeline = _timed(timeline_layout, result, account)
    draw_s, _ = _timed(draw_timeline, timeline, out / "timeline.png")
    rows.append(("timeline.png (layout + draw)", layout_s + draw_s))
    memory_s, _ = _timed(lambda: draw_memory(memory_layout(result), out / "memory.png"))
    rows.append(("memory.png", memory_s))
    md_s, markdown = _timed(report_markdown, result, account, ("timeline.png", "memory.png"))
    (out / "report.md").write_text(markdown)
    rows.append(("report.md", md_s))
    rows.append(("trace.json", _timed(write_perfetto, result, out / "trace.json")[0]))
    columns_s, columns = _timed(interval_columns, result.trace)
    rows.append(("intervals.csv", columns_s + _timed(write_interval_files, columns, out / "i.csv")[0]))
    rows.append(("intervals.parquet", _timed(write_interval_files, columns, None, out / "i.parquet")[0]))
    png = (out / "memory.png").read_bytes()
    rows.append(("report.html", _timed(write_html_report, out / "report.html", result.summary, markdown, timeline,
                                       account, png)[0]))
    return rows


if __name__ == "__main__":
    main()
