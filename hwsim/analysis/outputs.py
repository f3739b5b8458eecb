"""Everything `hwsim run --out DIR` writes besides summary.json, in one call.

`write_outputs(result, out_dir)` writes timeline.png, memory.png, report.md, report.html,
trace.json, intervals.csv, and intervals.parquet when pyarrow is importable; it returns the
paths by file name. The bottleneck account is computed once (or passed in) and shared by the
report, the timeline's title and the HTML page.

Speed: drawing the two PNGs with matplotlib costs more than the simulation, and importing
matplotlib and pyarrow another half second. `start_renderers()`, called before the simulation,
forks a process that imports and warms them up while the parent simulates, then forks a second
one that shares them; `write_outputs`
then hands them the pictures' data (timeline.TimelineData, memory_plot.MemoryData: arrays and
strings, not the result) and the interval columns, and writes report.md, trace.json and
report.html itself meanwhile. Without renderers everything runs in this process, in the same
order, with the same bytes written.
"""

from __future__ import annotations

import gc
import importlib.util
import multiprocessing
import os
import signal
import threading
import traceback
import weakref
from pathlib import Path
from typing import Any, Callable

from hwsim.engine.executor import collector_paused
from hwsim.analysis.html_report import write_html_report
from hwsim.analysis.intervals import interval_columns, write_interval_files
from hwsim.analysis.memory_plot import draw_memory, memory_layout
from hwsim.analysis.perfetto import write_perfetto
from hwsim.analysis.report import bottleneck_account, report_markdown
from hwsim.analysis.timeline import draw_timeline, timeline_layout

__all__ = ["OUTPUT_FILES", "Renderers", "start_renderers", "write_outputs"]

OUTPUT_FILES = ("timeline.png", "memory.png", "report.md", "report.html", "trace.json", "intervals.csv")
PICTURES = ("timeline.png", "memory.png")
_TIMELINE_WORKER, _OTHER_WORKER = 0, 1   # the second also imports pyarrow


def _warm_up() -> None:
    """Import and exercise what the drawing needs (fonts, the Agg canvas, the PNG writer, the
    Parquet writer), so that the first real picture pays none of it."""
    import io

    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1), dpi=20)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1])
    ax.set_title("warm-up", weight="bold")
    fig.savefig(io.BytesIO(), format="png")
    if importlib.util.find_spec("pyarrow") is not None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pydict({"x": [1.0]}), io.BytesIO())


def _serve(connection) -> None:
    """A renderer's loop: run each batch of (function, args) jobs it receives, sending back
    each result in order, until None (or the parent's end closing) arrives."""
    while True:
        try:
            batch = connection.recv()
        except EOFError:
            return
        if batch is None:
            return
        for function, args in batch:
            try:
                connection.send((True, function(*args)))
            except Exception as exc:  # noqa: BLE001 - sent back and raised in the parent
                connection.send((False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


def _renderers_main(first, second) -> None:
    """The first renderer: warm up, fork the second (which shares the imports: matplotlib is
    imported once), serve; wait for the second before leaving."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent decides; Ctrl-C prints one message
    try:
        _warm_up()
    except Exception:  # noqa: BLE001 - a failed warm-up only costs time; the jobs will say what is wrong
        pass
    # a renderer lives for a picture or two: no collector passes over the parent's objects and
    # matplotlib's (its garbage goes with the process)
    gc.freeze()
    gc.disable()
    pid = os.fork()
    if pid == 0:
        first.close()
        _exit_after(_serve, second)
    second.close()
    _serve(first)
    os.waitpid(pid, 0)


def _exit_after(function: Callable, *args: Any) -> None:
    """Run `function` in a forked child and leave with os._exit: no atexit handlers, no flush of
    the parent's buffered output, whatever happens."""
    code = 1
    try:
        function(*args)
        code = 0
    finally:
        os._exit(code)


class Renderers:
    """Two forked processes that draw pictures and write files for the parent (see the module
    docstring): the first imports matplotlib and pyarrow and then forks the second.
    `submit(worker, jobs)` sends a batch of (function, args) in one message (a second message
    could block on a full pipe while the worker draws) and returns one waiter per job, to be
    called in order; a failed job's waiter raises RuntimeError with the worker's traceback.
    Close with `close()`."""

    def __init__(self) -> None:
        pipes = [multiprocessing.Pipe() for _ in range(2)]   # (parent's end, renderer's end)
        pid = os.fork()
        if pid == 0:
            for parent_end, _ in pipes:
                parent_end.close()
            _detach_stdio()
            _exit_after(_renderers_main, pipes[0][1], pipes[1][1])
        for _, child_end in pipes:
            child_end.close()
        self._connections = [parent_end for parent_end, _ in pipes]
        self.pid = pid
        # closed when dropped too (an error before write_outputs): the renderers must not linger
        self._used = [False]
        self._close = weakref.finalize(self, _stop, self._connections, pid, self._used)

    def submit(self, worker: int, jobs: list[tuple[Callable, tuple]]) -> list[Callable[[], Any]]:
        connection = self._connections[worker]
        self._used[0] = True
        connection.send(list(jobs))

        def result() -> Any:
            try:
                ok, value = connection.recv()
            except EOFError:
                raise RuntimeError("a renderer process ended before its job was done") from None
            if not ok:
                raise RuntimeError(f"drawing an output failed in a renderer process: {value}")
            return value
        return [result] * len(jobs)

    @property
    def closed(self) -> bool:
        return not self._close.alive

    def close(self) -> None:
        """Stop both renderers and wait for them."""
        self._close()


def _stop(connections, pid: int, used: list[bool]) -> None:
    if not used[0]:   # nothing asked of them (the run failed first): no need to let them warm up
        os.kill(pid, signal.SIGTERM)
    for connection in connections:
        try:
            connection.send(None)
        except OSError:
            pass
        connection.close()
    os.waitpid(pid, 0)


def _detach_stdio() -> None:
    """Point a renderer's stdin, stdout and stderr at /dev/null: whoever reads the command's
    output must not wait for the renderers to end (their errors come back through the pipe)."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def start_renderers() -> Renderers | None:
    """Renderers when this platform can fork, this process runs one thread (forking a threaded
    process can deadlock its children) and may use two CPUs or more; None otherwise (outputs
    then draw here: on one CPU the processes would only add their start-up)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if not hasattr(os, "fork") or threading.active_count() > 1 or cpus < 2:
        return None
    try:
        return Renderers()
    except OSError:
        return None


def _run_here(jobs: list[tuple[Callable, tuple]]) -> list[Callable[[], Any]]:
    values = [function(*args) for function, args in jobs]
    return [lambda value=value: value for value in values]


def write_outputs(result, out_dir: Path, account=None, renderers: Renderers | None = None,
                  allow_batch_change: bool = False) -> dict[str, Path]:
    """Write the pictures, the reports, the Perfetto trace and the intervals into `out_dir`
    (created if needed); returns {file name: path}. `account` is result's bottleneck account
    (computed when None); `renderers` (start_renderers) draw the pictures in parallel, and are
    closed when done; `allow_batch_change` lets the reports' advice try a larger global batch."""
    # the GC off while writing: tens of thousands of small acyclic dicts for trace.json, whose
    # collections would cost a fifth of the writing
    with collector_paused():
        return _write_outputs(result, Path(out_dir), account, renderers, allow_batch_change)


def _write_outputs(result, out_dir: Path, account, renderers: Renderers | None,
                   allow_batch_change: bool = False) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    account = account if account is not None else bottleneck_account(result)
    paths = {name: out_dir / name for name in OUTPUT_FILES}
    if importlib.util.find_spec("pyarrow") is not None:
        paths["intervals.parquet"] = out_dir / "intervals.parquet"
    timeline = timeline_layout(result, account)
    timeline_jobs = [(draw_timeline, (timeline, paths["timeline.png"]))]
    other_jobs = [(draw_memory, (memory_layout(result), paths["memory.png"])),
                  (write_interval_files, (interval_columns(result.trace), paths["intervals.csv"],
                                          paths.get("intervals.parquet")))]
    if renderers is not None:
        [wait_timeline] = renderers.submit(_TIMELINE_WORKER, timeline_jobs)
        wait_memory, wait_intervals = renderers.submit(_OTHER_WORKER, other_jobs)
    else:
        [wait_timeline], (wait_memory, wait_intervals) = _run_here(timeline_jobs), _run_here(other_jobs)
    markdown = report_markdown(result, account, pictures=PICTURES, allow_batch_change=allow_batch_change)
    paths["report.md"].write_text(markdown)
    write_perfetto(result, paths["trace.json"])
    wait_memory()
    write_html_report(paths["report.html"], result.summary, markdown, timeline, account,
                      paths["memory.png"].read_bytes())
    wait_intervals()
    wait_timeline()
    if renderers is not None:
        renderers.close()
    return paths
