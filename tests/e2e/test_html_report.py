"""report.html in a real headless browser (Chromium from the OS packages): `hwsim run --out`
on a small scenario, then the page loaded from file:// — its scripts ran (the DOM they build
is there), nothing went wrong (window.onerror writes into <pre id="errors">, and Chromium's
console log is empty), nothing was fetched, its numbers equal summary.json's, zooming works,
and a screenshot is not blank.

Chromium: $HWSIM_CHROMIUM, or chromium / chromium-browser / google-chrome on PATH. Missing, the
tests skip on a workstation and fail under CI (CI set): `make test` installs it there
(scripts/ensure-chromium.sh).
"""

from __future__ import annotations

import copy
import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from hwsim import units
from hwsim.analysis.html_report import KEY_METRICS
from tests.conftest import SMALL

REPO = Path(__file__).resolve().parents[2]
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _chromium() -> str:
    found = os.environ.get("HWSIM_CHROMIUM") or next(filter(None, map(shutil.which, _CANDIDATES)), None)
    if found:
        return found
    message = ("no Chromium found (tried $HWSIM_CHROMIUM and " + ", ".join(_CANDIDATES) + "); "
               "install it with scripts/ensure-chromium.sh (make test does, as root with apt-get)")
    if _in_ci():
        pytest.fail(f"CI is set and {message}")
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    return _chromium()


@pytest.fixture(scope="module")
def run_out(tmp_path_factory):
    """`hwsim run SMALL.yaml --out OUT` (a plan over two stages, so both bubble figures exist)."""
    tmp = tmp_path_factory.mktemp("html")
    scenario = tmp / "small.yaml"
    scenario.write_text(yaml.safe_dump(copy.deepcopy(SMALL)))
    out = tmp / "out"
    res = subprocess.run([sys.executable, "-m", "hwsim.cli", "run", str(scenario), "--out", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "report.html" in res.stdout
    return out


def _chrome(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def _console(stderr: str) -> list[str]:
    """The page's console messages (Chromium logs them as 'INFO:CONSOLE(line)] "message"')."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def dom(browser, run_out, tmp_path_factory):
    res = _chrome(browser, tmp_path_factory.mktemp("profile"), "--dump-dom", (run_out / "report.html").as_uri())
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout, res.stderr


def test_page_renders_after_its_scripts_ran(dom):
    page, _ = dom
    assert 'data-ready="true"' in page                          # the last script ran to its end
    assert len(re.findall(r'<text [^>]*class="tick"', page)) >= 3   # the time axis it draws
    assert re.search(r'id="timeline-svg"[^>]*data-zoom="1.00"', page)
    assert len(re.findall(r'<path class="run"', page)) >= 5      # the Gantt rows
    assert 'id="critical-path"' in page and 'id="memory-png"' in page
    assert 'id="critical-path-bar"' in page and 'id="device-bar"' in page
    assert "What moves it" in page or "<ol>" in page             # the advice in words, from report.md


def test_no_errors_and_nothing_fetched(dom, run_out):
    page, stderr = dom
    errors = re.search(r'<pre id="errors"[^>]*>(.*?)</pre>', page, re.S)
    assert errors is not None and errors.group(1) == "", errors and html.unescape(errors.group(1))
    assert _console(stderr) == []       # no console output at all: no errors, no CSP refusals
    source = (run_out / "report.html").read_text()
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', source)
    assert "default-src 'none'" in source   # the page may not fetch anything


def test_numbers_equal_summary_json(dom, run_out):
    page, _ = dom
    summary = json.loads((run_out / "summary.json").read_text())
    for key, _label, fmt in KEY_METRICS:
        match = re.search(rf'data-metric="{key}" data-value="([^"]+)">.*?<span class="value">([^<]+)</span>', page)
        assert match is not None, key
        assert float(match.group(1)) == summary[key], key
        assert html.unescape(match.group(2)) == fmt(summary[key]), key
    assert html.unescape(re.search(r'<span class="value">([^<]+)', page).group(1)) == \
        units.fmt_time(summary["step_time_s"])


def test_zoom_from_the_address(browser, run_out, tmp_path):
    res = _chrome(browser, tmp_path / "profile", "--dump-dom", (run_out / "report.html").as_uri() + "#zoom=8")
    assert res.returncode == 0
    svg = re.search(r'<svg id="timeline-svg"[^>]*>', res.stdout).group(0)
    assert 'data-zoom="8.00"' in svg
    start_s, end_s = map(float, re.search(r'data-window-s="([^"]+)"', svg).group(1).split())
    makespan_s = float(re.search(r'data-makespan-s="([^"]+)"', svg).group(1))
    assert end_s - start_s == pytest.approx(makespan_s / 8, rel=1e-3)
    assert start_s == pytest.approx(makespan_s * (0.5 - 1 / 16), rel=1e-3)   # zoomed on the middle
    assert _console(res.stderr) == []


def test_screenshot_is_not_blank(browser, run_out, tmp_path):
    from PIL import Image

    shot = tmp_path / "page.png"
    res = _chrome(browser, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,1600",
                  (run_out / "report.html").as_uri())
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1600, 1280)
    colours = {tuple(c) for c in pixels[::7, ::7].reshape(-1, 3).tolist()}
    assert len(colours) > 50                                  # text, bars, the timeline's categories
    assert (pixels.min(axis=2) < 128).mean() > 0.01           # a fair share of dark (drawn) pixels
