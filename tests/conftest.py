"""Shared fixtures: small inline scenarios that need no preset files."""

import copy
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

H100 = {"name": "h100-test", "peak": {"fp32": "66.9 TFLOPS", "tf32": "494.7 TFLOPS", "bf16": "989.4 TFLOPS",
                                      "fp16": "989.4 TFLOPS", "fp8": "1978.9 TFLOPS"},
        "hbm": "80 GB", "hbm_bandwidth": "3.35 TB/s", "l2_cache": "50 MiB", "sm_count": 132,
        "kernel_profile": "hopper", "tdp": "700 W", "price_per_hour": 2.0}

SMALL = {
    "name": "small",
    "cluster": {"accelerator": H100, "nodes": 2, "devices_per_node": 8,
                "intra_node": {"kind": "switch", "bandwidth": "450 GB/s"},
                "inter_node": {"kind": "fat-tree", "nics_per_node": 8, "nic_bandwidth": "400 Gb/s"}},
    "model": {"layers": 8, "hidden": 1024, "heads": 16, "ffn_hidden": 4096, "mlp": "gelu", "vocab": 32000,
              "seq_len": 1024},
    "parallel": {"tp": 2, "pp": 2, "dp": 4, "schedule": "1f1b"},
    "training": {"global_batch": 32, "micro_batch": 2, "precision": "bf16"},
}


@pytest.fixture
def small_scenario_dict():
    return copy.deepcopy(SMALL)
