"""A wheel built from the source tree carries what a non-editable `pip install` needs beyond the
code: the example scenarios (from the top-level scenarios/, by setup.py's build step), the
public validation sets and the presets."""

import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version

import pytest

from tests.conftest import REPO


def _setuptools_new_enough() -> bool:
    try:
        return int(version("setuptools").split(".")[0]) >= 77   # pyproject's build requirement
    except Exception:
        return False


def test_wheel_contains_scenarios_and_validation_files(tmp_path):
    src = tmp_path / "src"   # a copy, so the build leaves no build/ or egg-info in the checkout
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO / "hwsim", src / "hwsim", ignore=ignore)
    shutil.copytree(REPO / "scenarios", src / "scenarios", ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy2(REPO / name, src / name)
    # the installed setuptools when it can build this project (fast, offline); else pip's isolated build
    isolation = ["--no-build-isolation"] if _setuptools_new_enough() else []
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation,
                          "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    if res.returncode and "No matching distribution found for setuptools" in res.stdout + res.stderr:
        pytest.skip("no setuptools>=77 to build with (offline, and the installed one is older)")
    assert res.returncode == 0, res.stdout + res.stderr
    (wheel,) = (tmp_path / "dist").glob("hwsim-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    scenarios = {f"hwsim/data/scenarios/{p.relative_to(REPO / 'scenarios').as_posix()}"
                 for p in (REPO / "scenarios").rglob("*.yaml")}
    assert scenarios and scenarios <= names, sorted(scenarios - names)
    for name in ("published_runs.yaml", "vtrain_single.yaml", "README.md"):
        assert f"hwsim/data/validation/{name}" in names
    assert "hwsim/presets/models/gpt3-175b.yaml" in names
    with zipfile.ZipFile(wheel) as zf:   # byte for byte what the checkout has
        for p in (REPO / "scenarios").rglob("*.yaml"):
            assert zf.read(f"hwsim/data/scenarios/{p.relative_to(REPO / 'scenarios').as_posix()}") == p.read_bytes()
