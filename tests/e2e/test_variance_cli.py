"""`hwsim variance` end to end: p50/p90/p99 of an 8-device step, seeded JSON, the unfolded note;
a cluster too large to unfold is an exit 2 saying why and what to do; `hwsim run` of the same
scenario stays the folded, noiseless step."""

import copy
import json
import subprocess
import sys

import yaml

from tests.conftest import REPO, SMALL
from tests.e2e.test_cli_errors import assert_clean_error


def hwsim(*args):
    return subprocess.run([sys.executable, "-m", "hwsim.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def scenario(tmp_path, variance=None, name="s.yaml", nodes=1):
    d = copy.deepcopy(SMALL)
    d["cluster"]["nodes"] = nodes
    d["parallel"] = {"tp": 2, "pp": 2, "dp": 2 * nodes}
    d["training"]["global_batch"] = 8 * nodes
    if variance is not None:
        d["reliability"] = {"variance": variance}
    p = tmp_path / name
    p.write_text(yaml.safe_dump(d))
    return p


def test_variance_prints_percentiles_of_an_8_device_step(tmp_path):
    path = scenario(tmp_path, {"kernel_cv": 0.05, "stragglers": [{"device": 5, "slowdown": 1.5}], "samples": 10})
    res = hwsim("variance", path)
    assert res.returncode == 0, res.stderr
    for word in ("p50", "p90", "p99", "noiseless step", "slowdown", "device 5", "unfolded"):
        assert word in res.stdout, word
    js = hwsim("variance", path, "--samples", 4, "--seed", 9, "--json")
    assert js.returncode == 0, js.stderr
    s = json.loads(js.stdout)
    assert (s["samples"], s["seed"], s["devices"], s["unfolded"]) == (4, 9, 8, True)
    assert s["p99_s"] >= s["p50_s"] >= s["noiseless_step_s"] and s["slowest_device"] == 5
    again = json.loads(hwsim("variance", path, "--samples", 4, "--seed", 9, "--json").stdout)
    assert again == s


def test_run_ignores_the_block_and_stays_folded(tmp_path):
    noisy = scenario(tmp_path, {"kernel_cv": 0.3, "stragglers": [{"node": 0, "slowdown": 2}]}, name="noisy.yaml")
    plain = scenario(tmp_path, name="plain.yaml")
    a, b = hwsim("run", noisy, "--json"), hwsim("run", plain, "--json")
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    assert json.loads(a.stdout)["step_time_s"] == json.loads(b.stdout)["step_time_s"]


def test_too_large_to_unfold_is_a_clean_exit_2(tmp_path):
    res = hwsim("variance", REPO / "scenarios" / "llama3-405b-16384xh100.yaml", "--samples", 2)
    assert_clean_error(res, "cannot fold", "exact only while they run identically", "cluster.nodes",
                       "hwsim run")


def test_bad_flags_and_fields_are_clean_exit_2(tmp_path):
    path = scenario(tmp_path)
    for args in (("--samples", 0), ("--seed", -1), ("--set", "reliability.variance.kernel_cv=-1")):
        res = hwsim("variance", path, *args)
        assert_clean_error(res)
