"""write_outputs on a small folded scenario: real PNGs of the expected size, a Perfetto trace
with every device and stream, one CSV row per (task, device) that took time, a report whose
account adds up to the step time, and report.html (self-contained, report.md's words, the
summary's numbers); the renderer processes write the same bytes as drawing here; plus the
comparison table and picture."""

from __future__ import annotations

import copy
import csv
import json
import os
import re
import struct

import numpy as np
import pytest

from hwsim import units
from hwsim.analysis.compare import compare_summaries, plot_comparison
from hwsim.analysis.html_report import KEY_METRICS, markdown_html
from hwsim.analysis.intervals import INTERVAL_COLUMNS, busiest_links
from hwsim.analysis.memory_plot import memory_devices, memory_figure_size_in
from hwsim.analysis.outputs import OUTPUT_FILES, Renderers, write_outputs
from hwsim.analysis.perfetto import trace_events
from hwsim.analysis.timeline import (DPI, busy_fraction, merge_intervals, shown_devices, timeline_figure_size_in,
                                    timeline_rows)
from hwsim.config.schema import ScenarioConfig
from hwsim.engine.task import Stream, TaskKind
from hwsim.simulate import run_step
from tests.conftest import SMALL

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REQUIRED = {"X": {"name", "cat", "ph", "ts", "dur", "pid", "tid", "args"},
            "C": {"name", "ph", "ts", "pid", "args"}, "M": {"name", "ph", "pid", "tid", "args"}}


@pytest.fixture(scope="module")
def small():
    return run_step(ScenarioConfig.model_validate(copy.deepcopy(SMALL)))


@pytest.fixture(scope="module")
def written(small, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return write_outputs(small, out), out


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_every_file_is_written(written):
    paths, out = written
    assert set(OUTPUT_FILES) <= set(paths)
    for name, path in paths.items():
        assert path == out / name and path.stat().st_size > 0


def test_timeline_png_has_one_row_per_nonempty_stream(small, written):
    paths, _ = written
    devices, note = shown_devices(small.compiled, small.summary)
    assert devices == list(small.compiled.simulated) and note == ""
    rows = timeline_rows(small.trace, devices)
    # SMALL: 2 stages, each with compute, comm (tp), p2p, p2p-bwd and dp streams
    assert [(d, s) for d, s, *_ in rows] == [(d, s) for d in devices for s in
                                            (Stream.COMPUTE, Stream.COMM, Stream.P2P, Stream.P2P_BWD, Stream.DP)]
    n_links = len(busiest_links(small.compiled.topology, small.trace, 6))
    width_in, height_in = timeline_figure_size_in(len(rows), n_links)
    assert png_size(paths["timeline.png"]) == (round(width_in * DPI), round(height_in * DPI))


def test_memory_png_size(small, written):
    paths, _ = written
    devices = memory_devices(small.compiled, small.trace)
    assert devices == list(small.compiled.simulated)
    width_in, height_in, _ = memory_figure_size_in(len(devices))
    assert png_size(paths["memory.png"]) == (round(width_in * DPI), round(height_in * DPI))


def test_busy_fraction_per_pixel():
    starts, ends = np.array([0.5, 2.0, 3.25]), np.array([1.5, 2.25, 3.5])
    fraction = busy_fraction(starts, ends, np.array([0.0, 1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_allclose(fraction, [0.5, 0.5, 0.25, 0.25])
    assert busy_fraction(np.array([]), np.array([]), np.array([0.0, 1.0])).tolist() == [0.0]


def test_merge_intervals_joins_same_category_within_a_pixel():
    starts = np.array([0.0, 1.0, 1.05, 3.0, 3.1])
    ends = np.array([1.0, 1.04, 2.0, 3.1, 4.0])
    codes = np.array([0, 0, 0, 0, 1])
    s, e, c = merge_intervals(starts, ends, codes, min_gap_s=0.02)
    # [0,1]+[1,1.04] touch; the gap to 1.05 is 0.01 < 0.02; 3.0 is far; code 1 stays apart
    assert s.tolist() == [0.0, 3.0, 3.1] and e.tolist() == [2.0, 3.1, 4.0] and c.tolist() == [0, 0, 1]
    s, e, c = merge_intervals(starts, ends, codes, min_gap_s=0.0)  # only touching ones
    assert s.tolist() == [0.0, 1.05, 3.0, 3.1] and e.tolist() == [1.04, 2.0, 3.1, 4.0]


def test_trace_json_is_a_valid_perfetto_trace(small, written):
    paths, _ = written
    data = json.loads(paths["trace.json"].read_text())
    events = data["traceEvents"]
    assert data["otherData"]["dropped_task_events"] == 0
    for event in events:
        assert REQUIRED[event["ph"]] <= set(event), event
        assert event["ts"] >= 0 if "ts" in event else True
    xs = [e for e in events if e["ph"] == "X"]
    assert all(e["dur"] > 0 and e["ts"] >= 0 for e in xs)
    # µs rounded to the nanosecond
    assert max(e["ts"] + e["dur"] for e in xs) == pytest.approx(small.trace.makespan_s / units.US, abs=2e-3)
    # every simulated device, and every stream that ran something, has events
    graph, trace = small.compiled.graph, small.trace
    tid = {stream: i for i, stream in enumerate(Stream)}
    expected = {(d, tid[s]) for (d, s), order in graph.stream_order().items()
                if any(trace.end_s[t] > trace.start_s[t] for t in order)}
    assert {(e["pid"], e["tid"]) for e in xs} == expected
    assert {e["pid"] for e in xs} == set(small.compiled.simulated)
    names = {(e["pid"], e["tid"]) if e["name"] == "thread_name" else e["pid"]: e["args"]["name"]
             for e in events if e["ph"] == "M" and e["name"] in ("process_name", "thread_name")}
    for device in small.compiled.simulated:
        stage = small.compiled.stage_of[device]
        assert names[device] == f"stage {stage}: device {device}, stands for 8 devices"
    for pid_tid in expected:
        assert names[pid_tid] == list(Stream)[pid_tid[1]].value
    one = next(e for e in xs if e["cat"] == "fwd")
    assert set(one["args"]) == {"flop", "bytes", "layer", "micro_batch", "task_id"}
    assert graph.tasks[one["args"]["task_id"]].name == one["name"]
    counters = {e["name"] for e in events if e["ph"] == "C"}
    assert "memory (GiB)" in counters and any(name.startswith("nvlink") for name in counters)


def test_trace_json_stays_under_the_cap_keeping_the_longest(small):
    data = trace_events(small, max_events=600)
    events = data["traceEvents"]
    assert len(events) <= 600
    xs = [e for e in events if e["ph"] == "X"]
    dropped = data["otherData"]["dropped_task_events"]
    assert dropped > 0 and "left out" in data["otherData"]["note"]
    full = trace_events(small)
    all_x = sorted((e["dur"] for e in full["traceEvents"] if e["ph"] == "X"), reverse=True)
    assert len(xs) + dropped == len(all_x)
    assert len(xs) > 100
    assert min(e["dur"] for e in xs) >= all_x[len(xs)] - 1e-9
    assert any(e["ph"] == "C" for e in events)  # counters thinned, not gone


def test_intervals_csv_has_one_row_per_task_and_device_that_took_time(small, written):
    paths, _ = written
    with open(paths["intervals.csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    graph, trace = small.compiled.graph, small.trace
    expected = sum(len(t.devices) for i, t in enumerate(graph.tasks)
                   if trace.end_s[i] > trace.start_s[i] and t.kind not in (TaskKind.ALLOC, TaskKind.FREE))
    assert len(rows) == expected
    assert tuple(rows[0]) == INTERVAL_COLUMNS
    sends = [r for r in rows if r["category"] == "pp"]
    assert len(sends) == 2 * sum(1 for t in graph.tasks if t.category == "pp")  # one per device
    for row in rows[::97]:
        task_id = int(row["task_id"])
        assert float(row["start_s"]) == trace.start_s[task_id]
        assert float(row["end_s"]) == trace.end_s[task_id]
        assert int(row["device"]) in graph.tasks[task_id].devices
        assert row["stream"] == graph.tasks[task_id].stream.value


def test_report_md_account_adds_up_to_the_step_time(small, written):
    paths, _ = written
    text = paths["report.md"].read_text()
    step_s = small.summary["step_time_s"]
    account = text.split("## Bottleneck account")[1].split("### In words")[0]
    parts = [line.split("|") for line in account.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(parts) >= 3
    seconds = [units.parse_time(cells[3].strip()) for cells in parts]
    assert sum(seconds) == pytest.approx(step_s, rel=0.01)
    shares = [float(cells[4].strip().rstrip("%")) for cells in parts]
    assert sum(shares) == pytest.approx(100.0, abs=1.0)
    assert seconds == sorted(seconds, reverse=True)
    assert "pipeline bubble" in account  # pp = 2
    assert f"step time | {units.fmt_time(step_s)}" in text


def test_compare_summaries_table_and_picture(small, tmp_path):
    base = small.summary
    slower = copy.deepcopy(base)
    slower["step_time_s"] = 2 * base["step_time_s"]
    slower["tokens_per_s"] = base["tokens_per_s"] / 2
    slower["mfu"] = base["mfu"] - 0.05
    slower["breakdown"] = {**base["breakdown"], "idle": 0.25}
    table = compare_summaries(["base", "slower"], [base, slower])
    lines = table.splitlines()
    assert lines[0] == "| metric | base | slower |"
    step_row = next(line for line in lines if line.startswith("| step time |"))
    assert "(+100.0%)" in step_row
    assert "(-50.0%)" in next(line for line in lines if line.startswith("| tokens/s |"))
    assert "(-5.0 pp)" in next(line for line in lines if line.startswith("| MFU |"))
    idle = next(line for line in lines if line.startswith("| idle |")).split("|")
    assert idle[2].strip() == "0 (0%)"
    assert idle[3].strip().endswith(", +250 ms")
    compute = next(line for line in lines if line.startswith("| compute |"))
    assert compute.endswith(", ±0 |")  # unchanged part
    assert all(f"| {key} |" in table for key in slower["breakdown"])
    with pytest.raises(ValueError):
        compare_summaries(["one"], [base, slower])
    path = plot_comparison(["base", "slower"], [base, slower], tmp_path / "compare.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_renderer_processes_write_the_same_files(small, written, tmp_path):
    paths, _ = written
    renderers = Renderers()   # forked directly: start_renderers declines in a threaded test runner
    forked = write_outputs(small, tmp_path, renderers=renderers)
    assert set(forked) == set(paths)
    for name in ("timeline.png", "memory.png", "intervals.csv", "intervals.parquet", "report.md", "trace.json",
                 "report.html"):
        assert forked[name].read_bytes() == paths[name].read_bytes(), name
    assert renderers.closed   # closed (and waited for) when done


def test_renderers_nobody_used_are_ended_and_reaped():
    renderers = Renderers()
    pid = renderers.pid
    del renderers                   # as when the run fails before write_outputs
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # already waited for: nothing left behind


def _fail(message: str) -> None:
    raise ValueError(message)


def test_a_failed_job_raises_in_the_parent_with_its_traceback():
    renderers = Renderers()
    try:
        wait_ok, wait_failed = renderers.submit(1, [(len, ("abc",)), (_fail, ("no such font",))])
        assert wait_ok() == 3
        with pytest.raises(RuntimeError, match=r"ValueError: no such font(.|\n)*Traceback"):
            wait_failed()
    finally:
        renderers.close()


def test_report_html_is_self_contained_with_the_summary_numbers_and_the_words(small, written):
    paths, _ = written
    page = paths["report.html"].read_text()
    assert "default-src 'none'" in page and not re.search(r'(src|href)="(https?:)?//', page)
    for key, _label, fmt in KEY_METRICS:
        value = small.summary[key]
        assert f'data-metric="{key}" data-value="{value!r}"' in page
        assert f'<span class="value">{fmt(value)}</span>' in page
    words = paths["report.md"].read_text().split("### In words")[1].split("\n## ")[0]
    first = re.search(r"^1\. (.+)$", words, re.M).group(1)
    assert markdown_html(f"1. {first}").removeprefix("<ol>").removesuffix("</ol>") in page   # report.md's advice
    assert "data:image/png;base64," in page and "## Pictures" not in page


def test_markdown_html_covers_what_report_md_uses():
    text = ("# title\n\n## Summary\n\n| metric | value |\n| --- | --- |\n| step | **1 s** |\n\n"
            "some words `key` <b>\nand more\n\n1. first <x>\n2. second\n")
    assert markdown_html(text, skip_title=True) == (
        "<h3>Summary</h3>\n<table><thead><tr><th>metric</th><th>value</th></tr></thead><tbody><tr><td>step</td>"
        "<td><strong>1 s</strong></td></tr></tbody></table>\n<p>some words <code>key</code> &lt;b&gt; and more</p>"
        "\n<ol><li>first &lt;x&gt;</li><li>second</li></ol>")
    assert markdown_html("# title").startswith("<h2>title</h2>")
