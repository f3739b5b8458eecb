"""Pictures that do not mislead (issue 15, point 3), checked on the matplotlib Figures: an
out-of-memory variant is marked and never ranked fastest, labels do not collide, a NIC
bandwidth axis is in Gb/s as scenarios write it, the cost plot's ticks stay apart, the
timeline's title names what limits the step, and the two "pipeline bubble" figures each say
what they measure."""

from __future__ import annotations

import copy
import itertools

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex

from hwsim import units
from hwsim.analysis.compare import BEST_LABEL, OOM_LABEL, breakdown_label, comparison_figure
from hwsim.analysis.critical_path import Cause
from hwsim.analysis.html_report import report_html
from hwsim.analysis.report import bottleneck_account, part_label
from hwsim.analysis.timeline import timeline_figure, timeline_layout
from hwsim.config.schema import ScenarioConfig
from hwsim.simulate import run_step
from hwsim.studies.plots import sweep_figures
from hwsim.studies.store import PointRecord
from tests.conftest import SMALL

# the variant names of the example, as `hwsim compare --variant` makes them
VARIANTS = ["base", "parallel.pp=16,parallel.tp=4", "parallel.tp=4,parallel.pp=4,parallel.dp=64",
            "parallel.recompute=none"]


@pytest.fixture(scope="module")
def small():
    return run_step(ScenarioConfig.model_validate(copy.deepcopy(SMALL)))


@pytest.fixture(scope="module")
def account(small):
    return bottleneck_account(small)


def drawn(fig):
    """The figure drawn once (so that text extents are final), and its renderer."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def assert_apart(texts, renderer, what: str) -> None:
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts if t.get_visible() and t.get_text()]
    assert len(boxes) >= 2, what
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        assert not box_a.overlaps(box_b), f"{what}: {a!r} overlaps {b!r}"


def four_variants(summary: dict) -> list[dict]:
    """The base, a slower variant that fits, and two faster ones that do not fit."""
    out = [summary]
    for factor, fits in ((0.95, True), (0.9, False), (0.7, False)):
        s = copy.deepcopy(summary)
        s["step_time_s"] *= factor
        s["breakdown"] = {k: v * factor for k, v in s["breakdown"].items()}
        s["fits_in_memory"] = fits
        if not fits:
            s["peak_memory_bytes"] = 2.3 * s["memory_capacity_bytes"]
        out.append(s)
    return out


# --- comparison.png ---------------------------------------------------------------------------

def test_out_of_memory_variants_are_hatched_grey_labelled_and_never_fastest(small):
    summaries = four_variants(small.summary)
    fig = comparison_figure(VARIANTS, summaries)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "step time (ms)"
    oom_bars = [p for p in ax.patches if p.get_gid() == "does-not-fit"]
    assert [round(p.get_x() + p.get_width() / 2) for p in oom_bars] == [2, 3]
    for bar, summary in zip(oom_bars, summaries[2:]):
        assert bar.get_hatch() == "///"
        assert to_hex(bar.get_facecolor()) == "#d9d9d9"
        assert bar.get_height() == pytest.approx(summary["step_time_s"] / units.MS)
    # nothing else is drawn at the OOM positions: no coloured breakdown under the hatching
    for patch in ax.patches:
        if patch.get_gid() != "does-not-fit" and round(patch.get_x() + patch.get_width() / 2) in (2, 3):
            assert patch.get_height() == 0.0
    labels = {round(t.get_position()[0]): t.get_text() for t in ax.texts if t.get_gid() == "bar-label"}
    assert labels[2].startswith(OOM_LABEL) and labels[3].startswith(OOM_LABEL)
    assert "peak" in labels[3] and units.fmt_bytes(summaries[3]["memory_capacity_bytes"], precision=3) in labels[3]
    # the fastest bar (index 3) does not fit: the fastest that fits is index 1
    assert [i for i, text in labels.items() if BEST_LABEL in text] == [1]
    assert any(OOM_LABEL in text.get_text() for text in ax.get_legend().get_texts())


def test_comparison_labels_do_not_collide(small):
    fig = comparison_figure(VARIANTS, four_variants(small.summary))
    renderer = drawn(fig)
    ax = fig.axes[0]
    assert_apart(ax.get_xticklabels(), renderer, "variant names")
    assert_apart([t for t in ax.texts if t.get_gid() == "bar-label"], renderer, "bar labels")
    inside = ax.get_window_extent(renderer)
    for text in ax.texts:   # bar labels stay inside the axes, under the title
        box = text.get_window_extent(renderer)
        assert box.y1 <= inside.y1 and box.x0 >= inside.x0 - 1 and box.x1 <= inside.x1 + 1, text.get_text()


def test_breakdown_parts_say_what_they_measure():
    assert breakdown_label("pipeline_bubble") == "waiting on other pipeline stages (bubble)"
    assert breakdown_label("exposed_comm.tp") == "exposed tp communication"
    assert breakdown_label("compute") == "compute"


# --- sweep plots ------------------------------------------------------------------------------

def sweep_records(nic_gbit_per_s=(200, 400, 800), nodes=(8, 16, 32, 64)) -> list[PointRecord]:
    """Points like the llama3-70b network sweep: a NIC bandwidth axis written in Gb/s."""
    records = []
    for i, (n, gbit) in enumerate(itertools.product(nodes, nic_gbit_per_s)):
        days = 6620.0 * (8 / n) * (200 / gbit) ** 0.5
        summary = {"tokens_per_s": 26e3 * n / 8, "step_time_s": 20.0 * 8 / n, "mfu": 0.2, "devices": 8 * n,
                   "peak_memory_bytes": 38e9, "time_to_train": {"days": days, "cost_usd": 25e6 + days * 7e3}}
        scenario = {"cluster": {"nodes": n, "inter_node": {"nic_bandwidth": gbit * units.GB / units.BITS_PER_BYTE}}}
        axes = {"cluster.nodes": n, "cluster.inter_node.nic_bandwidth": f"{gbit} Gb/s"}
        records.append(PointRecord(f"k{i}", i, axes, scenario, summary, None, None, 0.1))
    return records


def test_nic_bandwidth_axis_is_in_gbit_per_s_as_written():
    path = "cluster.inter_node.nic_bandwidth"
    figures = sweep_figures(sweep_records(), ["cluster.nodes", path])
    ax = figures[f"step_time_s-vs-{path}.png"].axes[0]
    assert ax.get_xlabel() == f"{path} (Gb/s)"
    assert sorted({x for line in ax.get_lines() for x in line.get_xdata()}) == [200.0, 400.0, 800.0]


def test_cost_plot_tick_labels_do_not_overlap():
    figures = sweep_figures(sweep_records(), ["cluster.nodes", "cluster.inter_node.nic_bandwidth"])
    fig = figures["cost-vs-time-to-train.png"]
    renderer = drawn(fig)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    visible = [t for t in ax.get_xticklabels(minor=True) + ax.get_xticklabels()
               if t.get_text() and ax.get_window_extent(renderer).x0 - 5 <= t.get_window_extent(renderer).x0
               <= ax.get_window_extent(renderer).x1 + 5]
    assert_apart(visible, renderer, "time-to-train ticks")
    assert_apart(ax.get_yticklabels(), renderer, "cost ticks")
    assert all(t.get_text().startswith("$") for t in ax.get_yticklabels() if t.get_text())


# --- timeline title and the two bubble figures ------------------------------------------------

def test_timeline_title_names_the_top_cause_of_the_critical_path(small, account):
    data = timeline_layout(small, account)
    top = max(account.parts, key=lambda p: p.seconds)
    share = top.seconds / small.summary["step_time_s"]
    words = f"limited by {part_label(top).split(' (')[0]} ({share:.1%} of the critical path)"
    assert data.title.endswith(words)
    fig = timeline_figure(data)
    renderer = drawn(fig)
    [title] = [t for t in fig.texts if t.get_text() == data.title]
    assert fig.bbox.x0 <= title.get_window_extent(renderer).x0 and title.get_window_extent(renderer).x1 <= fig.bbox.x1
    assert "limited by" not in timeline_layout(small, None).title   # no account, no claim


def test_the_two_bubble_figures_each_say_what_they_measure(small, account):
    from hwsim.analysis.report import report_markdown

    page = report_html(small.summary, report_markdown(small, account), timeline_layout(small, account), account)
    path_bubble = account.seconds(Cause.BUBBLE) / small.summary["step_time_s"]
    device_bubble = small.summary["breakdown"]["pipeline_bubble"] / small.summary["step_time_s"]
    assert "pipeline bubble on the critical path: " in page and f"({path_bubble:.1%})" in page
    assert "waiting on other pipeline stages (bubble): " in page and f"({device_bubble:.1%})" in page
    assert f"Device {small.summary['breakdown_device']} (the busiest): what it was doing" in page
