"""Paths and help (issue 15 point 5): --version, -h, the shipped validation sets, the missing-file
and --global-batch messages, preset descriptions, help text re-flowed to the terminal."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_cli_errors import assert_clean_error

REPO = Path(__file__).resolve().parents[2]
COMMANDS = ("run", "compare", "validate", "collective", "presets", "sweep", "plan", "goodput", "variance")


def hwsim(*args, cwd=REPO, columns=None, timeout=120):
    env = dict(os.environ)
    if columns:
        env["COLUMNS"] = str(columns)
    return subprocess.run([sys.executable, "-m", "hwsim.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=env)




def test_version():
    from importlib.metadata import version

    res = hwsim("--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"hwsim {version('hwsim')}"


@pytest.mark.parametrize("command", ("",) + COMMANDS)
def test_dash_h_is_help_on_every_command(command):
    args = [command] if command else []
    short, long = hwsim(*args, "-h", columns=100), hwsim(*args, "--help", columns=100)
    assert short.returncode == 0, short.stderr
    assert short.stdout == long.stdout
    assert "Usage:" in short.stdout and "-h" in short.stdout


def _prose(help_text: str) -> list[list[str]]:
    """The paragraphs of a help screen's description (above the first option box)."""
    head = help_text.split("╭", 1)[0].splitlines()
    paragraphs, current = [], []
    for line in head[1:]:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(current)
            current = []
    return paragraphs + ([current] if current else [])


@pytest.mark.parametrize("command", COMMANDS)
def test_help_paragraphs_are_reflowed_at_80_columns(command):
    """A docstring's own line breaks are not kept: each paragraph fills the 80 columns, so no
    line of a paragraph but its last is a short fragment ('(each with' alone on a line)."""
    res = hwsim(command, "-h", columns=80)
    assert res.returncode == 0, res.stderr
    assert max(len(line) for line in res.stdout.splitlines()) <= 80
    for paragraph in _prose(res.stdout):
        for line, following in zip(paragraph, paragraph[1:]):
            room = 78 - len(line)
            assert room < len(following.split()[0]) + 1, (command, line, following)


def test_validate_builtin_public_subset():
    res = hwsim("validate", "--builtin", "public", "--tag", "megatron-readme-2020", "--workers", "2",
                columns=120, timeout=300)
    assert res.returncode == 0, res.stderr
    assert re.search(r"simulated 12 of 12 records; MAPE \d+\.\d%", res.stdout), res.stdout[-2000:]
    assert "published_runs.yaml" in res.stdout


def test_validate_builtin_vtrain_loads():
    from hwsim.data import builtin_validation_file
    from hwsim.studies.validation import load_records

    records = load_records(builtin_validation_file("vtrain"))
    assert len(records) == 150 and all("vtrain" in r["tags"] for r in records)


def test_validate_unknown_builtin():
    assert_clean_error(hwsim("validate", "--builtin", "private"), "--builtin", "'private'", "public", "vtrain")


def test_validate_missing_file_suggests_a_validation_file(tmp_path):
    res = hwsim("validate", tmp_path / "published_runs.yaml")
    assert_clean_error(res, "no such file", "validation file", "--builtin public")
    assert "scenario" not in res.stderr.replace("scenario, published", "")
    assert_clean_error(hwsim("validate", tmp_path), "is a directory", "--builtin public")
    assert_clean_error(hwsim("validate"), "validation file", "--builtin public")
    assert_clean_error(hwsim("validate", tmp_path / "x.yaml", "--builtin", "public"), "not both")


def test_presets_models_have_descriptions():
    res = hwsim("presets", "models", columns=200)
    assert res.returncode == 0, res.stderr
    rows = [line.strip("│ ").split("│") for line in res.stdout.splitlines() if line.startswith("│")]
    assert len(rows) >= 30
    assert all(len(r) == 2 and r[0].strip() and r[1].strip() for r in rows), rows


def test_plan_without_global_batch_says_it_is_required():
    res = hwsim("plan", "--model", "llama3-8b", "--accelerator", "h100-sxm", "--devices", "16", "--tokens", "1T")
    assert_clean_error(res, "--global-batch required without --from", "--global-batch 512")
    help_text = " ".join(hwsim("plan", "-h", columns=200).stdout.split())
    assert "required without --from" in help_text


def test_a_shipped_scenario_runs_by_name_outside_a_checkout(tmp_path):
    """After `pip install`, the README's scenarios are there by name (or as scenarios/NAME.yaml)."""
    import json

    for name in ("llama3-8b-16xh100-pp", "scenarios/llama3-8b-16xh100-pp.yaml"):
        res = hwsim("run", name, "--json", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["name"] == "llama3-8b-on-16-h100-pp4"
    assert_clean_error(hwsim("run", "no-such-scenario", cwd=tmp_path), "no such file",
                       "gpt3-175b-1024xa100", "hwsim run gpt3-175b-1024xa100")
    assert_clean_error(hwsim("run", "elsewhere/llama3-8b-16xh100-pp.yaml", cwd=tmp_path), "no such file")
    # the other commands that read a README scenario path: plan --from, and a sweep file whose base is
    # a path relative to it
    res = hwsim("plan", "--from", "scenarios/llama3-8b-16xh100-pp.yaml", "--max-simulations", "2", "--top", "1",
                cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    from hwsim.studies.sweep import load_sweep
    import os as _os
    here = _os.getcwd()
    try:
        _os.chdir(tmp_path)
        assert len(load_sweep("scenarios/sweeps/llama3-70b-network.yaml").points) == 12
    finally:
        _os.chdir(here)
