"""Everything `hwsim run --out DIR` writes besides summary.json, in one call.

`write_outputs(result, out_dir)` writes timeline.png, memory.png, report.md, trace.json,
intervals.csv, and intervals.parquet when pyarrow is importable; it returns the paths by file
name. The bottleneck account is computed once and shared by the report and the timeline.
"""

from __future__ import annotations

from pathlib import Path

from hwsim.analysis.intervals import write_intervals_csv, write_intervals_parquet
from hwsim.analysis.memory_plot import plot_memory
from hwsim.analysis.perfetto import write_perfetto
from hwsim.analysis.report import bottleneck_account, report_markdown
from hwsim.analysis.timeline import plot_timeline

__all__ = ["OUTPUT_FILES", "write_outputs"]

OUTPUT_FILES = ("timeline.png", "memory.png", "report.md", "trace.json", "intervals.csv")


def write_outputs(result, out_dir: Path) -> dict[str, Path]:
    """Write the pictures, the report, the Perfetto trace and the intervals into `out_dir`
    (created if needed); returns {file name: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    account = bottleneck_account(result)
    written: dict[str, Path] = {}
    written["timeline.png"] = plot_timeline(result, out_dir / "timeline.png", account)
    written["memory.png"] = plot_memory(result, out_dir / "memory.png")
    report = out_dir / "report.md"
    report.write_text(report_markdown(result, account, pictures=("timeline.png", "memory.png")))
    written["report.md"] = report
    written["trace.json"] = write_perfetto(result, out_dir / "trace.json")
    write_intervals_csv(result.trace, out_dir / "intervals.csv")
    written["intervals.csv"] = out_dir / "intervals.csv"
    if write_intervals_parquet(result.trace, out_dir / "intervals.parquet"):
        written["intervals.parquet"] = out_dir / "intervals.parquet"
    return written
