"""MoE kernel classes: the grouped expert GEMM as Transformer Engine runs it, and the screen's
memory and step estimate of a MoE plan with multi-token prediction against the simulator."""

import math

import pytest

from hwsim.config.loader import scenario_from_mapping
from hwsim.config.presets import PresetKind, load_preset
from hwsim.config.schema import AcceleratorConfig, Dtype
from hwsim.hardware.kernels import GROUPED_GEMM_STREAMS, KernelModel
from hwsim.simulate import run_step
from hwsim.studies.screen import screen


def _kernels(name: str) -> KernelModel:
    return KernelModel(AcceleratorConfig.model_validate(load_preset(PresetKind.ACCELERATOR, name, "accelerator")))


def test_grouped_gemm_runs_four_experts_at_a_time():
    # TE GroupedLinear: one cuBLASLt GEMM per expert on 4 compute streams (multi_stream.cpp)
    assert GROUPED_GEMM_STREAMS == 4
    km = _kernels("b200")
    m, n, k = 2048, 1536, 2048          # Qwen3-30B-A3B gate/up, 16 local experts (ep 8)
    for groups in (1, 3, 4, 16, 18):
        rounds = [GROUPED_GEMM_STREAMS] * (groups // GROUPED_GEMM_STREAMS) + (
            [groups % GROUPED_GEMM_STREAMS] if groups % GROUPED_GEMM_STREAMS else [])
        expect = sum(km.gemm_time_s(m, n, k, Dtype.FP8, batch=b) for b in rounds)
        assert km.grouped_gemm_time_s(m, n, k, Dtype.FP8, groups) == pytest.approx(expect, rel=1e-12)
    # never faster than one strided batched GEMM of all experts, never slower than experts one by one
    grouped = km.grouped_gemm_time_s(m, n, k, Dtype.FP8, 16)
    assert km.gemm_time_s(m, n, k, Dtype.FP8, batch=16) < grouped < 16 * km.gemm_time_s(m, n, k, Dtype.FP8)
    # a few large experts (gpt-oss-120b on ep 64: 2 experts of 32k rows) lose nothing
    big = km.grouped_gemm_time_s(32768, 5760, 2880, Dtype.BF16, 2)
    assert big == pytest.approx(km.gemm_time_s(32768, 5760, 2880, Dtype.BF16, batch=2), rel=1e-12)
    with pytest.raises(ValueError):
        km.grouped_gemm_time_s(m, n, k, Dtype.FP8, 0)


def _dsv3(pp: int, v: int, ep: int, mtp: int | None):
    model = {"preset": "deepseek-v3", "seq_len": 4096}
    if mtp is not None:
        model["mtp_layers"] = mtp
    return scenario_from_mapping({
        "name": "deepseek-v3 on 256 gb200",
        "cluster": {"accelerator": "gb200", "nodes": 4, "devices_per_node": 64,
                    "intra_node": {"kind": "switch", "bandwidth": "900 GB/s"},
                    "inter_node": {"kind": "fat-tree", "nics_per_node": 64, "nic_bandwidth": "400 Gb/s"}},
        "model": model,
        "parallel": {"tp": 1, "pp": pp, "ep": ep, "zero_stage": 1, "recompute": "none", "virtual_stages": v,
                     "schedule": "interleaved" if v > 1 else "1f1b"},
        "training": {"global_batch": 256, "micro_batch": 1, "precision": "bf16"},
        "software": {"framework": "megatron-bridge", "version": "25.11"}}, (), origin="test")


@pytest.mark.parametrize("pp, v, ep, mtp", [(4, 2, 64, None), (4, 2, 64, 0), (4, 1, 64, None)])
def test_screen_memory_and_step_of_a_moe_plan_with_mtp(pp, v, ep, mtp):
    # DeepSeek-V3 (1 MTP module, preset) on 256 GB200, tp 1, 4096 tokens per rank: the screen holds
    # the MTP layer's activations and its second head per in-flight micro-batch on the last stage,
    # as the compiler does (it used to leave them out: 200.5 vs 217.6 GiB at pp 4, v 2)
    sc = _dsv3(pp, v, ep, mtp)
    fast, slow = screen(sc), run_step(sc).summary
    assert fast["peak_memory_bytes"] == pytest.approx(slow["peak_memory_bytes"], rel=0.02)
    assert fast["step_time_s"] == pytest.approx(slow["step_time_s"], rel=0.05)
    assert math.isfinite(fast["step_time_s"])
