"""report.html: one self-contained page to share a run: the key numbers, the timeline (an inline
SVG that pans and zooms), the breakdowns, memory over time and the report in words.

Everything is inline (style, scripts, the memory picture as a data: URL) and a
Content-Security-Policy forbids fetching anything, so the page opens offline and cannot leak.
The words are report.md's (report.report_markdown), turned into HTML by `markdown_html` (the
few constructs report.md uses: headings, tables, numbered lists, bold and code), never derived
again here. The timeline draws the same `TimelineData` as timeline.png; every run of one
category is a rectangle, so zooming shows the short tasks the PNG can only shade.

Two bars say what two different "pipeline bubble" figures measure: the critical path by cause
(what sets the step time; its bubble is the path's time on other stages) and the busiest
device's own step (its bubble is the time that device waits on other stages).
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import numpy as np

from hwsim import units
from hwsim.analysis.compare import PART_COLORS, breakdown_label
from hwsim.analysis.critical_path import Cause, PathAccount
from hwsim.analysis.html_assets import ERROR_HOOK, SCRIPT, STYLE
from hwsim.analysis.report import part_label
from hwsim.analysis.timeline import (CATEGORY_COLORS, CATEGORY_LABELS, IDLE_LABEL, PATH_LABEL, TimelineData,
                                    bottleneck_words)

__all__ = ["KEY_METRICS", "write_html_report", "report_html", "timeline_svg", "markdown_html"]

# (summary key, label, how it is printed): the numbers at the top of the page
KEY_METRICS = (
    ("step_time_s", "step time", lambda v: units.fmt_time(v)),
    ("tokens_per_s", "throughput (tokens/s)", lambda v: f"{v:,.0f}"),
    ("mfu", "MFU", lambda v: f"{v:.1%}"),
    ("peak_memory_bytes", "peak memory per device", lambda v: units.fmt_bytes(v)),
)
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
_WIDTH, _LABEL_W, _ROW_H, _LINK_H, _AXIS_H = 1200, 290, 16, 14, 26
_PLOT_W = _WIDTH - _LABEL_W - 10
_MAX_ZOOM = 2000
_CAUSE_COLORS = {
    Cause.COMPUTE: CATEGORY_COLORS["fwd"], Cause.MEMORY_BOUND: "#64B5CD", Cause.OVERHEAD: "#8C8C8C",
    Cause.RECOMPUTE: CATEGORY_COLORS["recompute"], Cause.OPTIMIZER: CATEGORY_COLORS["optimizer"],
    Cause.HOST: CATEGORY_COLORS["host"], Cause.BUBBLE: PART_COLORS["pipeline_bubble"], Cause.IDLE: "#E0E0E0",
}
_UTIL_LEVELS = 10   # link utilization drawn in this many shades


def write_html_report(path: Path, summary: dict, markdown: str, timeline: TimelineData, account: PathAccount,
                      memory_png: bytes | None = None) -> Path:
    """Write report.html (see the module docstring); returns `path`."""
    Path(path).write_text(report_html(summary, markdown, timeline, account, memory_png), encoding="utf-8")
    return path


def report_html(summary: dict, markdown: str, timeline: TimelineData, account: PathAccount,
                memory_png: bytes | None = None) -> str:
    name = html.escape(summary["name"])
    limited = bottleneck_words(account, summary["step_time_s"])
    memory = ("" if memory_png is None else
              f'<img class="picture" id="memory-png" alt="memory per device over the step" '
              f'src="data:image/png;base64,{base64.b64encode(memory_png).decode("ascii")}">')
    body = markdown_html(_without_pictures(markdown), skip_title=True)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{name}: where the time goes</title>
<script>{ERROR_HOOK}</script>
<style>{STYLE}</style>
</head>
<body>
<pre id="errors" hidden></pre>
<h1 id="title">{name}: where the time goes</h1>
<p class="limited" id="limited">{html.escape(limited[:1].upper() + limited[1:])}</p>
{_numbers(summary)}
<h2>Timeline</h2>
<p class="caption">{html.escape(timeline.subtitle.split(chr(10))[0])}. Wheel: zoom the time axis; drag: pan;
double click: the whole step.</p>
<div class="toolbar"><button type="button" data-zoom-action="in">zoom in</button><button type="button"
data-zoom-action="out">zoom out</button><button type="button" data-zoom-action="reset">whole step</button>
<span id="tl-window"></span> <span id="tl-readout"></span></div>
{timeline_svg(timeline)}
{_timeline_legend(timeline)}
<h2>Where the time goes</h2>
{_breakdown_bars(summary, account)}
<h2>Memory over time</h2>
{memory}
<h2>Report</h2>
<div id="report">
{body}
</div>
<script>{SCRIPT}</script>
</body>
</html>
"""


def _numbers(summary: dict) -> str:
    cells = []
    for key, label, fmt in KEY_METRICS:
        value = summary[key]
        extra, bad = "", False
        if key == "peak_memory_bytes":
            extra = f" of {units.fmt_bytes(summary['memory_capacity_bytes'])}"
            bad = not summary["fits_in_memory"]
            extra += "" if not bad else " (does not fit)"
        cells.append(f'<div class="metric{" bad" if bad else ""}" data-metric="{key}" data-value="{value!r}">'
                     f'<span class="label">{html.escape(label)}</span><span class="value">{html.escape(fmt(value))}'
                     f'</span>{html.escape(extra)}</div>')
    return '<section id="numbers">' + "".join(cells) + "</section>"


def _num(x: float) -> str:
    return f"{x:.3f}".rstrip("0").rstrip(".") or "0"


def timeline_svg(data: TimelineData) -> str:
    """The timeline as an inline <svg>: row labels on the left, one <path> of rectangles per
    row and category (x in plot units at zoom 1, scaled by the script), the critical path, the
    busiest links as strips shaded by utilization, and an axis the script draws."""
    n_rows, n_links = data.n_rows, len(data.link_labels)
    gantt_h = n_rows * _ROW_H
    links_top = gantt_h + (22 if n_links else 0)
    plot_h = links_top + n_links * _LINK_H
    height = plot_h + _AXIS_H
    x_per_s = _PLOT_W / data.makespan_s
    out = [f'<svg id="timeline-svg" viewBox="0 0 {_WIDTH} {height}" data-plot-width="{_PLOT_W}" '
           f'data-plot-height="{plot_h}" data-makespan-s="{data.makespan_s!r}" data-max-zoom="{_MAX_ZOOM}" '
           f'role="img" aria-label="{html.escape(data.title)}" font-size="11">']
    for r, label in enumerate(data.row_labels):
        out.append(f'<text x="{_LABEL_W - 6}" y="{r * _ROW_H + 12}" text-anchor="end">{html.escape(label)}</text>')
    for g, (label, first, last) in enumerate(data.devices):
        lines = label.split("\n")
        mid = (first + last + 1) / 2 * _ROW_H - (len(lines) - 1) * 6.5 + 4
        spans = "".join(f'<tspan x="4" dy="{0 if i == 0 else 13}">{html.escape(line)}</tspan>'
                        for i, line in enumerate(lines))
        out.append(f'<text y="{mid:.1f}" font-weight="bold">{spans}</text>')
    for i, label in enumerate(data.link_labels):
        out.append(f'<text x="{_LABEL_W - 6}" y="{links_top + i * _LINK_H + 11}" text-anchor="end" '
                   f'font-size="9">{html.escape(label)}</text>')
    out.append(f'<svg id="tl-plot" x="{_LABEL_W}" y="0" width="{_PLOT_W}" height="{plot_h}" '
               f'viewBox="0 0 {_PLOT_W} {plot_h}" preserveAspectRatio="none">')
    out.append(f'<rect width="{_PLOT_W}" height="{plot_h}" fill="white"/>')
    out.append('<path fill="#EDEDED" d="' + "".join(f"M0 {r * _ROW_H + 2}h{_PLOT_W}v12H0z" for r in range(n_rows))
               + '"/>')
    for g, (_, first, _last) in enumerate(data.devices):
        if g:
            out.append(f'<line x1="0" x2="{_PLOT_W}" y1="{first * _ROW_H}" y2="{first * _ROW_H}" stroke="#555"/>')
    out.append('<g id="tl-grid"></g><g id="tl-zoom">')
    palette = list(CATEGORY_COLORS.values())
    x0 = data.run_starts_s * x_per_s
    width = np.maximum((data.run_ends_s - data.run_starts_s) * x_per_s, 0.001)
    order = np.lexsort((data.run_codes, data.run_rows))
    keys = np.stack((data.run_rows[order], data.run_codes[order]), axis=1)
    cuts = np.flatnonzero(np.any(keys[1:] != keys[:-1], axis=1)) + 1 if len(order) else np.zeros(0, int)
    for group in np.split(order, cuts) if len(order) else []:
        r, c = int(data.run_rows[group[0]]), int(data.run_codes[group[0]])
        y = r * _ROW_H + 2
        d = "".join(f"M{_num(x)} {y}h{_num(w)}v12h-{_num(w)}z" for x, w in zip(x0[group].tolist(),
                                                                           width[group].tolist()))
        out.append(f'<path class="run" data-category="{list(CATEGORY_COLORS)[c]}" fill="{palette[c]}" d="{d}"/>')
    if len(data.path_rows):
        d = "".join(f"M{_num(s * x_per_s)} {r * _ROW_H + 13}h{_num(max((e - s) * x_per_s, 0.001))}v2.5h-"
                    f"{_num(max((e - s) * x_per_s, 0.001))}z"
                    for s, e, r in zip(data.path_starts_s.tolist(), data.path_ends_s.tolist(), data.path_rows.tolist()))
        out.append(f'<path id="critical-path" fill="black" d="{d}"/>')
    out.append(_link_strips(data, links_top))
    out.append("</g></svg>")
    if n_links:
        out.append(f'<text x="{_LABEL_W}" y="{gantt_h + 16}" font-size="10">{html.escape(data.links_title)}</text>')
    out.append(f'<g id="tl-axis" transform="translate({_LABEL_W},{plot_h})" font-size="10"></g></svg>')
    return "\n".join(out)


def _link_strips(data: TimelineData, top: float) -> str:
    util = data.link_utilization
    if not len(util):
        return ""
    n_bins = util.shape[1]
    bin_w = _PLOT_W / n_bins
    out = []
    for i, row in enumerate(util):
        level = np.minimum((row * _UTIL_LEVELS).astype(int), _UTIL_LEVELS - 1)
        starts = np.flatnonzero(np.r_[True, level[1:] != level[:-1]])
        ends = np.r_[starts[1:], n_bins]
        y = top + i * _LINK_H + 1
        by_level: dict[int, list[str]] = {}
        for s, e in zip(starts.tolist(), ends.tolist()):
            by_level.setdefault(int(level[s]), []).append(f"M{_num(s * bin_w)} {y}h{_num((e - s) * bin_w)}v12"
                                                          f"h-{_num((e - s) * bin_w)}z")
        for lv, parts in sorted(by_level.items()):
            shade = (lv + 0.5) / _UTIL_LEVELS
            out.append(f'<path class="link" fill="#3B0F70" fill-opacity="{0.05 + 0.95 * shade:.2f}" '
                       f'd="{"".join(parts)}"/>')
    return "".join(out)


def _timeline_legend(data: TimelineData) -> str:
    present = sorted(set(data.run_codes.tolist()))
    names = list(CATEGORY_COLORS)
    items = [(CATEGORY_COLORS[names[c]], CATEGORY_LABELS[names[c]]) for c in present]
    items.append(("#EDEDED", IDLE_LABEL))
    if data.has_path:
        items.append(("black", PATH_LABEL + " (under the rows it runs through)"))
    if data.link_labels:
        items.append(("#3B0F70", "link utilization (darker: busier)"))
    return '<div class="legend">' + "".join(f'<span><span class="swatch" style="background:{c}"></span>'
                                            f'{html.escape(label)}</span>' for c, label in items) + "</div>"


def _bar(parts: list[tuple[str, str, float]], step_s: float, bar_id: str) -> str:
    """A stacked bar (share of the step) and its legend: parts are (colour, label, seconds)."""
    spans = "".join(f'<span style="width:{100 * sec / step_s:.3f}%;background:{colour}" '
                    f'title="{html.escape(label)}: {sec / step_s:.1%}"></span>'
                    for colour, label, sec in parts if sec > 0)
    legend = "".join(f'<span data-part="{html.escape(label)}"><span class="swatch" style="background:{colour}">'
                     f'</span>{html.escape(label)}: {units.fmt_time(sec, 3)} ({sec / step_s:.1%})</span>'
                     for colour, label, sec in parts if sec > 0)
    return f'<div class="bar" id="{bar_id}">{spans}</div><div class="legend">{legend}</div>'


def _breakdown_bars(summary: dict, account: PathAccount) -> str:
    step = summary["step_time_s"]
    if step <= 0:
        return ""
    path_parts = [(_CAUSE_COLORS.get(p.cause) or CATEGORY_COLORS.get(p.kind, "#8C8C8C"),
                   _path_words(p), p.seconds) for p in account.parts]
    device = summary["breakdown_device"]
    device_parts = [(PART_COLORS.get(key) or CATEGORY_COLORS.get(key.rsplit(".", 1)[-1], "#8C8C8C"),
                     breakdown_label(key), sec)
                    for key, sec in sorted(summary["breakdown"].items(), key=lambda kv: -kv[1])]
    return (f'<h3>The critical path, by cause: what sets the step time</h3>'
            f'<p class="caption">The chain of tasks that ends last, split by what each moment of it was; it adds '
            f'up to the step time. Its pipeline bubble is time the path spends waiting on other pipeline '
            f'stages.</p>{_bar(path_parts, step, "critical-path-bar")}'
            f'<h3>Device {device} (the busiest): what it was doing over the step</h3>'
            f'<p class="caption">Every instant of one device\'s step (compute first, then exposed communication, '
            f'then waiting); its pipeline bubble is the time <em>this device</em> waits on other stages, a '
            f'different measure from the critical path\'s.</p>{_bar(device_parts, step, "device-bar")}')


def _path_words(part) -> str:
    label = part_label(part)
    return "pipeline bubble on the critical path" if part.cause is Cause.BUBBLE else label


def _without_pictures(markdown: str) -> str:
    return markdown.split("\n## Pictures\n", 1)[0]


# --- markdown (the subset report.md uses) ------------------------------------------------------

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")
_NUMBERED = re.compile(r"^(\d+)\. (.*)$")


def _inline(text: str) -> str:
    return _BOLD.sub(r"<strong>\1</strong>", _CODE.sub(r"<code>\1</code>", html.escape(text)))


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_html(text: str, skip_title: bool = False) -> str:
    """HTML for report.md's markdown: #/##/### headings, pipe tables (the second line is the
    separator), numbered lists, paragraphs; **bold** and `code` inline; everything escaped."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            if not (skip_title and level == 1):
                out.append(f"<h{level + 1}>{_inline(line[level:].strip())}</h{level + 1}>")
            i += 1
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(_cells(lines[i]))
                i += 1
            head, rows = block[0], block[2:]
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows)
                       + "</tbody></table>")
        elif _NUMBERED.match(line):
            items = []
            while i < len(lines) and _NUMBERED.match(lines[i]):
                items.append(_NUMBERED.match(lines[i]).group(2))
                i += 1
            out.append("<ol>" + "".join(f"<li>{_inline(item)}</li>" for item in items) + "</ol>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "|")) \
                    and not _NUMBERED.match(lines[i]):
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)
