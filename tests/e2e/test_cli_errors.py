"""Every class of bad input: exit code 2, the field and the fix in one paragraph, no traceback."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import SMALL

REPO = Path(__file__).resolve().parents[2]


def hwsim(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "hwsim.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def write(tmp_path, data, name="s.yaml"):
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def assert_clean_error(res, *needles):
    assert res.returncode == 2, res.stderr + res.stdout
    assert "Traceback" not in res.stderr + res.stdout
    text = " ".join(res.stderr.split())
    for n in needles:
        assert n in text, (n, res.stderr)


def test_broken_yaml(tmp_path):
    assert_clean_error(hwsim("run", write(tmp_path, "model: [1, 2\n")), "not valid YAML", "line")


def test_unknown_preset(tmp_path):
    d = {**SMALL, "model": "llama3-7b"}
    assert_clean_error(hwsim("run", write(tmp_path, d)), "model", "unknown model preset", "llama3-8b")


def test_tp_does_not_divide_heads(tmp_path):
    d = yaml.safe_load(yaml.safe_dump(SMALL))
    d["model"]["heads"] = 12
    d["parallel"] = {"tp": 8, "pp": 1, "dp": 2}
    assert_clean_error(hwsim("run", write(tmp_path, d)), "parallel.tp", "12 attention heads")


def test_bad_unit(tmp_path):
    d = yaml.safe_load(yaml.safe_dump(SMALL))
    d["cluster"]["intra_node"]["bandwidth"] = "450 Gbps"
    assert_clean_error(hwsim("run", write(tmp_path, d)), "cluster.intra_node.bandwidth", "Gb/s")


def test_unknown_key(tmp_path):
    d = yaml.safe_load(yaml.safe_dump(SMALL))
    d["training"]["globalbatch"] = 3
    assert_clean_error(hwsim("run", write(tmp_path, d)), "training.globalbatch", "global_batch")


def test_bad_set_flag(tmp_path):
    assert_clean_error(hwsim("run", write(tmp_path, SMALL), "--set", "parallel.tp"), "--set", "dotted path")


def test_missing_file(tmp_path):
    assert_clean_error(hwsim("run", tmp_path / "nope.yaml"), "no such file")


def test_bad_collective_op(tmp_path):
    assert_clean_error(hwsim("collective", write(tmp_path, SMALL), "--op", "allreduce"), "--op", "all-reduce")


def test_bad_sizes(tmp_path):
    assert_clean_error(hwsim("collective", write(tmp_path, SMALL), "--sizes", "1MiB:8Gib"), "--sizes", "GiB")


def test_plan_that_does_not_fit(tmp_path):
    d = yaml.safe_load(yaml.safe_dump(SMALL))
    d["cluster"]["accelerator"]["hbm"] = "200 MB"
    res = hwsim("run", write(tmp_path, d), "--out", tmp_path / "o")
    assert_clean_error(res, "does not fit in memory", "recompute")
    summary = yaml.safe_load((tmp_path / "o" / "summary.json").read_text())
    assert summary["fits_in_memory"] is False and summary["peak_memory_bytes"] > 2e8


def test_unknown_presets_kind():
    assert_clean_error(hwsim("presets", "gpus"), "accelerators")


def test_fp8_on_a_device_without_fp8_tensor_cores(tmp_path):
    d = yaml.safe_load(yaml.safe_dump(SMALL))
    d["cluster"]["accelerator"] = "a100-sxm-80gb"
    d["training"]["precision"] = "fp8"
    assert_clean_error(hwsim("run", write(tmp_path, d)), "training.precision", "a100-sxm-80gb", "bf16")


# --- inputs that hurt (issue 15, point 4): each fails at once, naming the field -------------------

def test_huge_global_batch_is_refused_at_once(tmp_path):
    """1.536e12 sequences (YAML 1.2 scientific notation: an integer) would build a task graph of
    hundreds of billions of micro-batches; it is refused before compiling anything."""
    text = yaml.safe_dump(SMALL).replace("global_batch: 32", "global_batch: 1.536e12")
    assert "1.536e12" in text
    res = hwsim("run", write(tmp_path, text), "--out", tmp_path / "o")
    assert_clean_error(res, "training.global_batch", "1,536,000,000,000", "micro_batch")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("path, value", [
    (("cluster", "intra_node", "bandwidth"), "0 GB/s"),
    (("cluster", "inter_node", "nic_bandwidth"), "0 Gb/s"),
    (("cluster", "accelerator", "hbm_bandwidth"), 0),
    (("cluster", "accelerator", "host_bandwidth"), "0 GB/s"),
    (("cluster", "accelerator", "hbm"), "0 GB"),
    (("cluster", "accelerator", "peak", "bf16"), "0 TFLOPS"),
])
def test_zero_rate_or_capacity_names_the_field(tmp_path, path, value):
    d = yaml.safe_load(yaml.safe_dump(SMALL))
    node = d
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    assert_clean_error(hwsim("run", write(tmp_path, d)), ".".join(path), "greater than 0")


def test_absurd_layer_count_names_the_field(tmp_path):
    d = yaml.safe_load(yaml.safe_dump(SMALL))
    d["model"]["layers"] = 10**6
    assert_clean_error(hwsim("run", write(tmp_path, d)), "model.layers", "4096")


@pytest.mark.parametrize("command", ["run", "compare", "sweep", "goodput"])
def test_out_onto_an_existing_file(tmp_path, command):
    scenario = write(tmp_path, {**SMALL, "training": {**SMALL["training"], "tokens": 1e9}})
    target = write(tmp_path, "already here\n", "taken.txt")
    args = {"run": [scenario], "compare": [scenario, scenario], "goodput": [scenario, "--runs", 2],
            "sweep": [write(tmp_path, {"name": "s", "base": SMALL,
                                       "axes": {"parallel.tp": [1, 2]}}, "sweep.yaml"), "--no-plots"]}[command]
    assert_clean_error(hwsim(command, *args, "--out", target), "--out", "is a file, not a directory")
    assert target.read_text() == "already here\n"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc (Linux)")
def test_out_where_nothing_can_be_written(tmp_path):
    res = hwsim("run", write(tmp_path, SMALL), "--out", "/proc/hwsim-out")
    assert_clean_error(res, "--out /proc/hwsim-out", "cannot write there")


def test_out_under_a_file(tmp_path):
    target = write(tmp_path, "x\n", "f.txt")
    assert_clean_error(hwsim("run", write(tmp_path, SMALL), "--out", target / "sub"), "--out", "is a file")


def test_directory_given_as_the_scenario(tmp_path):
    write(tmp_path, SMALL, "mine.yaml")
    assert_clean_error(hwsim("run", tmp_path), "is a directory", "scenario YAML file", "mine.yaml")
