"""The kernel-time model (hwsim/hardware/kernels.py) and its efficiency profiles."""

from __future__ import annotations

import math
import numbers

import pytest
import yaml

from hwsim.config.schema import AcceleratorConfig, Dtype
from hwsim.errors import ConfigError
from hwsim.hardware.kernels import (
    FLASH_BWD_FLOP_RATIO, PROFILE_DIR, KernelModel, attention_fwd_flop, available_profiles,
    interpolate_log, load_profile, profile_name_for, tile_utilization,
)
from hwsim.units import GiB, TB, TFLOP

EXPECTED_PROFILES = ("ampere", "blackwell", "cdna3", "hopper", "tpu", "volta")


def _accelerator(name: str, profile: str, peak: dict[str, str], bandwidth: str, sm_count: int) -> AcceleratorConfig:
    return AcceleratorConfig(name=name, peak=peak, hbm="80 GB", hbm_bandwidth=bandwidth,
                             sm_count=sm_count, kernel_profile=profile)


H100 = _accelerator("h100-test", "hopper", {"fp32": "67 TFLOPS", "tf32": "494.7 TFLOPS", "fp16": "989.4 TFLOPS",
                                            "bf16": "989.4 TFLOPS", "fp8": "1978.9 TFLOPS"}, "3.35 TB/s", 132)
A100 = _accelerator("a100-test", "ampere", {"fp32": "19.5 TFLOPS", "tf32": "156 TFLOPS", "fp16": "312 TFLOPS",
                                            "bf16": "312 TFLOPS"}, "2.039 TB/s", 108)
V100 = _accelerator("v100-test", "volta", {"fp32": "15.7 TFLOPS", "fp16": "125 TFLOPS"}, "900 GB/s", 80)


@pytest.fixture(scope="module")
def h100() -> KernelModel:
    return KernelModel(H100)


@pytest.fixture(scope="module")
def a100() -> KernelModel:
    return KernelModel(A100)


def _gemm_flop_per_s(model: KernelModel, m: int, n: int, k: int, dtype: Dtype = Dtype.BF16) -> float:
    return 2.0 * m * n * k / model.gemm_time_s(m, n, k, dtype)


# --- public anchors ----------------------------------------------------------------------

def test_h100_bf16_8192_cubed_reaches_about_800_tflops_in_bursts_and_730_sustained(h100):
    sustained = load_profile("hopper").gemm.sustained[Dtype.BF16].value
    achieved = _gemm_flop_per_s(h100, 8192, 8192, 8192)
    # a short 8192^3 run: 797.5 TFLOPS (torch-performance-test-data #79); MAMF 794.5
    assert achieved / sustained == pytest.approx(800 * TFLOP, rel=0.05)
    # all eight GPUs of a node for 60 s: ~730 TFLOPS (huggingface/gpu-fryer README)
    assert achieved == pytest.approx(730 * TFLOP, rel=0.03)


def test_sustained_clock_slows_tensor_core_kernels_only(h100, monkeypatch):
    import hwsim.hardware.kernels as K
    hopper = load_profile("hopper")
    without = hopper.model_copy(update={
        "gemm": hopper.gemm.model_copy(update={"sustained": {}}),
        "attention": hopper.attention.model_copy(update={"sustained": None})})
    monkeypatch.setattr(K, "load_profile", lambda name: without)
    burst = KernelModel(H100)
    f = hopper.gemm.sustained[Dtype.BF16].value
    big = (8192, 8192, 8192)
    gemm_ratio = ((burst.gemm_time_s(*big, Dtype.BF16) - burst.launch_overhead_s)
                  / (h100.gemm_time_s(*big, Dtype.BF16) - h100.launch_overhead_s))
    assert gemm_ratio == pytest.approx(f, rel=1e-9)
    # fp8 GEMMs were calibrated at steady state: unchanged
    assert burst.gemm_time_s(*big, Dtype.FP8) == pytest.approx(h100.gemm_time_s(*big, Dtype.FP8), rel=1e-12)
    args = (4, 16, 8192, 8192, 128, False, Dtype.BF16, False)
    attn_ratio = ((burst.attention_time_s(*args) - burst.launch_overhead_s)
                  / (h100.attention_time_s(*args) - h100.launch_overhead_s))
    assert attn_ratio == pytest.approx(hopper.attention.sustained.value, rel=1e-9)
    assert burst.memory_time_s(1e9) == h100.memory_time_s(1e9)


def test_a100_bf16_large_gemm_in_published_range(a100):
    # Azure ND A100 v4: 253.7-256.5 TFLOPS at 8192^3-16384^3; MAMF 271.2
    assert 250 * TFLOP <= _gemm_flop_per_s(a100, 8192, 8192, 8192) <= 290 * TFLOP


@pytest.mark.parametrize("m,n,k,tflops", [(8192, 8192, 8192, 253.7), (16384, 16384, 16384, 256.5),
                                           (6144, 12288, 12288, 250.8)])
def test_a100_reproduces_its_steady_state_calibration_points(a100, m, n, k, tflops):
    # Azure ND A100 v4 cuBLASLt FP16 after 10,000 warm-up iterations (the ampere profile's fit)
    assert _gemm_flop_per_s(a100, m, n, k, Dtype.FP16) == pytest.approx(tflops * TFLOP, rel=0.02)


@pytest.mark.parametrize("m,n,k,tflops", [(16384, 16384, 16384, 1377.3), (32768, 32768, 32768, 1382.2),
                                           (6144, 12288, 12288, 1351.4)])
def test_h100_fp8_reproduces_its_steady_state_calibration_points(h100, m, n, k, tflops):
    # Azure ND H100 v5 cuBLASLt FP8 after 10,000 warm-up iterations (the hopper profile's fit)
    assert _gemm_flop_per_s(h100, m, n, k, Dtype.FP8) == pytest.approx(tflops * TFLOP, rel=0.03)


def test_v100_fp16_large_gemm_in_published_range():
    achieved = _gemm_flop_per_s(KernelModel(V100), 8192, 8192, 8192, Dtype.FP16)
    assert 83 * TFLOP <= achieved <= 115 * TFLOP  # Markidis 2018 (83) .. the brief's 100-115


def test_h100_large_copy_reaches_about_3_tb_per_s(h100):
    copied_bytes = 8 * GiB
    bytes_moved = 2 * copied_bytes  # a copy reads and writes each byte
    achieved = bytes_moved / h100.memory_time_s(bytes_moved)
    assert 2.85 * TB <= achieved <= 3.1 * TB
    assert achieved < H100.hbm_bandwidth


def test_memory_time_is_the_closed_form(h100):
    profile = load_profile("hopper")
    expected = 1e9 / (H100.hbm_bandwidth * profile.memory_efficiency.value) + profile.launch_overhead.value
    assert h100.memory_time_s(1e9) == pytest.approx(expected, rel=1e-12)
    assert h100.memory_time_s(0) == h100.launch_overhead_s


# --- shape effects -----------------------------------------------------------------------

def test_tiny_gemm_is_far_below_peak_and_launch_bound(h100):
    time_s = h100.gemm_time_s(64, 64, 64, Dtype.BF16)
    assert 2 * 64**3 / time_s < 0.02 * h100.peak_flop_per_s(Dtype.BF16)
    assert h100.launch_overhead_s > 0.5 * time_s


def test_square_gemm_efficiency_rises_with_size(h100):
    sizes = [128, 256, 512, 1024, 2048, 4096, 8192, 16384]
    rates = [_gemm_flop_per_s(h100, s, s, s) for s in sizes]
    for smaller, larger in zip(rates, rates[1:]):
        assert larger >= 0.97 * smaller  # monotone up to wave-quantization wiggles
    assert rates[-1] > 20 * rates[0]


def test_tile_utilization_closed_forms():
    assert tile_utilization(128 * 12, 256 * 11, 1, 128, 256, 132) == 1.0
    assert tile_utilization(128 * 7, 256 * 19, 1, 128, 256, 132) == pytest.approx(133 / 264)
    # a half-filled tile: tile quantization alone
    assert tile_utilization(64, 256, 1, 128, 256, 1) == pytest.approx(0.5)
    # batch multiplies the tiles
    assert tile_utilization(128, 256, 132, 128, 256, 132) == 1.0


def test_wave_quantization_makes_one_extra_tile_slower_per_flop(h100):
    k = 4096
    full = (128 * 12, 256 * 11)   # 132 output tiles of 128x256: one full wave
    extra = (128 * 7, 256 * 19)   # 133 tiles: a second, almost empty wave
    per_flop_full = h100.gemm_time_s(*full, k, Dtype.BF16) / (2.0 * full[0] * full[1] * k)
    per_flop_extra = h100.gemm_time_s(*extra, k, Dtype.BF16) / (2.0 * extra[0] * extra[1] * k)
    assert per_flop_extra > 1.1 * per_flop_full


def test_split_k_fills_the_machine_for_small_outputs_with_long_k(h100):
    # 256x256 output = 2 tiles of 128x256 on 132 SMs; without split-k eff <= max * 2/132
    eff = h100.gemm_compute_efficiency(256, 256, 65536, Dtype.BF16)
    max_eff = load_profile("hopper").gemm.max_efficiency[Dtype.BF16].value
    assert eff > 3 * max_eff * 2 / 132


def test_skinny_gemm_is_memory_bound(h100):
    # a matrix-vector product: 2 FLOP per weight byte pair, far below the ridge point
    m, n, k = 1, 16384, 16384
    time_s = h100.gemm_time_s(m, n, k, Dtype.BF16)
    weight_bytes = n * k * 2
    assert time_s >= weight_bytes / H100.hbm_bandwidth
    assert 2.0 * m * n * k / time_s < 0.01 * h100.peak_flop_per_s(Dtype.BF16)


def test_batch_is_at_least_one_and_at_most_batch_times_one(h100):
    one = h100.gemm_time_s(2048, 2048, 2048, Dtype.BF16)
    four = h100.gemm_time_s(2048, 2048, 2048, Dtype.BF16, batch=4)
    assert one < four <= 4 * one


def test_non_positive_dimensions_are_rejected(h100):
    with pytest.raises(ValueError):
        h100.gemm_time_s(0, 128, 128, Dtype.BF16)
    with pytest.raises(ValueError):
        h100.memory_time_s(-1.0)
    with pytest.raises(ValueError):
        h100.attention_time_s(1, 1, 0, 128, 64, False, Dtype.BF16, False)


# --- dtypes ------------------------------------------------------------------------------

def test_fp8_is_faster_than_bf16_on_hopper(h100):
    for m, n, k in [(8192, 8192, 8192), (4096, 14336, 4096), (16384, 4096, 1024)]:
        assert h100.gemm_time_s(m, n, k, Dtype.FP8) < 0.75 * h100.gemm_time_s(m, n, k, Dtype.BF16)


def test_fp8_runs_exactly_as_bf16_on_ampere(a100):
    assert a100.peak_flop_per_s(Dtype.FP8) == a100.peak_flop_per_s(Dtype.BF16)
    for m, n, k in [(8192, 8192, 8192), (1, 4096, 4096), (333, 777, 555), (802816, 192, 768)]:
        assert a100.gemm_time_s(m, n, k, Dtype.FP8) == a100.gemm_time_s(m, n, k, Dtype.BF16)
    assert (a100.attention_time_s(2, 16, 4096, 4096, 128, True, Dtype.FP8, True)
            == a100.attention_time_s(2, 16, 4096, 4096, 128, True, Dtype.BF16, True))


def test_peak_fallbacks():
    v100 = KernelModel(V100)
    assert v100.peak_flop_per_s(Dtype.BF16) == V100.peak.fp16
    assert v100.peak_flop_per_s(Dtype.FP8) == V100.peak.fp16
    assert v100.peak_flop_per_s(Dtype.TF32) == V100.peak.fp32
    assert v100.dtype_bytes(Dtype.FP8) == 2
    h100 = KernelModel(H100)
    assert h100.peak_flop_per_s(Dtype.FP8) == H100.peak.fp8
    assert h100.dtype_bytes(Dtype.FP8) == 1


def test_a_rate_the_device_lacks_is_a_config_error_when_used():
    no_fp32 = KernelModel(H100.model_copy(update={"peak": H100.peak.model_copy(update={"fp32": 0.0, "tf32": None})}))
    assert no_fp32.gemm_time_s(1024, 1024, 1024, Dtype.BF16) > 0  # the others still work
    with pytest.raises(ConfigError, match="fp32"):
        no_fp32.gemm_time_s(1024, 1024, 1024, Dtype.TF32)


# --- attention ---------------------------------------------------------------------------

def test_attention_flop_convention():
    assert attention_fwd_flop(2, 16, 4096, 4096, 128, causal=False) == 4.0 * 2 * 16 * 4096 * 4096 * 128
    assert attention_fwd_flop(2, 16, 4096, 4096, 128, causal=True) == 2.0 * 2 * 16 * 4096 * 4096 * 128
    assert FLASH_BWD_FLOP_RATIO == 2.5


def test_attention_time_is_the_closed_form_at_8k(h100):
    profile = load_profile("hopper").attention
    burst_eff = profile.forward[128].value * interpolate_log(profile.seq_curve.points, 8192)
    flop = attention_fwd_flop(4, 16, 8192, 8192, 128, causal=False)
    expected = flop / (H100.peak.bf16 * burst_eff * profile.sustained.value) + h100.launch_overhead_s
    assert h100.attention_time_s(4, 16, 8192, 8192, 128, False, Dtype.BF16, False) == pytest.approx(expected, rel=1e-12)
    # the FlashAttention-2 measurement the profile comes from (a short run): 370 TFLOPS forward (PR #1791)
    assert flop / (expected - h100.launch_overhead_s) / profile.sustained.value == pytest.approx(370 * TFLOP, rel=0.03)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_attention_backward_is_slower_than_forward(h100, causal, head_dim):
    fwd = h100.attention_time_s(2, 32, 4096, 4096, head_dim, causal, Dtype.BF16, backward=False)
    bwd = h100.attention_time_s(2, 32, 4096, 4096, head_dim, causal, Dtype.BF16, backward=True)
    assert bwd > 2.0 * fwd


def test_causal_attention_is_faster_but_less_efficient(h100):
    full = h100.attention_time_s(1, 32, 8192, 8192, 128, False, Dtype.BF16, False)
    causal = h100.attention_time_s(1, 32, 8192, 8192, 128, True, Dtype.BF16, False)
    assert 0.5 * full < causal < full


def test_attention_efficiency_rises_with_sequence_length(h100):
    effs = [h100.attention_efficiency(s, 128, causal, False) for causal in (False, True)
            for s in (512, 2048, 8192)]
    assert effs[0] < effs[1] < effs[2] and effs[3] < effs[4] < effs[5]


# --- profiles ----------------------------------------------------------------------------

def test_the_six_profiles_ship_and_load():
    assert available_profiles() == EXPECTED_PROFILES
    for name in EXPECTED_PROFILES:
        assert load_profile(name).name == name


def _numbers_without_source(node, path: str) -> list[str]:
    """Paths of numbers whose enclosing mapping carries no non-empty `source`."""
    missing: list[str] = []
    if isinstance(node, dict):
        has_source = isinstance(node.get("source"), str) and node["source"].strip() != ""
        for key, value in node.items():
            if _holds_numbers(value) and not has_source:
                missing.append(f"{path}.{key}")
            if isinstance(value, (dict, list)):
                missing += _numbers_without_source(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            if isinstance(item, dict):
                missing += _numbers_without_source(item, f"{path}[{i}]")
    return missing


def _holds_numbers(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Number):
        return True
    if isinstance(value, str):  # a quantity with a unit, e.g. "4 us"
        return any(ch.isdigit() for ch in value) and value.split()[0].replace(".", "", 1).isdigit()
    if isinstance(value, list):
        return any(_holds_numbers(v) for v in value)
    return False


@pytest.mark.parametrize("name", EXPECTED_PROFILES)
def test_every_number_in_a_profile_has_a_source(name):
    raw = yaml.safe_load((PROFILE_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    assert _numbers_without_source(raw, name) == []


def test_the_source_check_catches_a_bare_number():
    assert _numbers_without_source({"memory_efficiency": {"value": 0.8}}, "x") == ["x.memory_efficiency.value"]
    assert _numbers_without_source({"launch_overhead": {"value": "4 us"}}, "x") == ["x.launch_overhead.value"]


@pytest.mark.parametrize("name", EXPECTED_PROFILES)
def test_every_profile_gives_sane_times(name):
    acc = _accelerator(f"{name}-test", name, {"fp32": "60 TFLOPS", "fp16": "1000 TFLOPS", "bf16": "1000 TFLOPS"},
                       "3 TB/s", 128)
    model = KernelModel(acc)
    eff = _gemm_flop_per_s(model, 8192, 8192, 8192) / model.peak_flop_per_s(Dtype.BF16)
    assert 0.4 < eff < 0.95
    for backward in (False, True):
        t = model.attention_time_s(1, 16, 4096, 4096, 128, True, Dtype.BF16, backward)
        assert math.isfinite(t) and t > model.launch_overhead_s


def test_no_device_is_claimed_by_two_profiles():
    claimed = [d for name in EXPECTED_PROFILES for d in load_profile(name).devices]
    assert len(claimed) == len(set(claimed))


def test_unknown_profile_is_a_config_error_listing_the_known_ones():
    with pytest.raises(ConfigError) as info:
        load_profile("hoper")
    message = str(info.value)
    assert "'hopper'" in message and all(name in message for name in EXPECTED_PROFILES)
    with pytest.raises(ConfigError):
        KernelModel(H100.model_copy(update={"kernel_profile": "no-such-arch"}))


def test_profile_found_by_device_name_when_not_set():
    assert profile_name_for(H100.model_copy(update={"name": "h100-sxm", "kernel_profile": ""})) == "hopper"
    with pytest.raises(ConfigError, match="kernel_profile"):
        profile_name_for(H100.model_copy(update={"name": "mystery-chip", "kernel_profile": ""}))


def test_interpolate_log_is_linear_in_log_x_and_clamped():
    points = ((1.0, 0.0), (100.0, 1.0))
    assert interpolate_log(points, 10.0) == pytest.approx(0.5)
    assert interpolate_log(points, 0.5) == 0.0
    assert interpolate_log(points, 1e6) == 1.0


def test_no_shape_beats_the_measured_ceiling(h100):
    ceiling = load_profile("hopper").gemm.ceiling[Dtype.BF16].value
    shapes = [(m, n, k) for m in (2048, 8192, 32768) for n in (4096, 14336, 28672) for k in (2048, 8192, 14336)]
    assert max(h100.gemm_compute_efficiency(m, n, k, Dtype.BF16) for m, n, k in shapes) <= ceiling + 1e-12


def test_flash3_attention_on_hopper_reproduces_its_measurement_and_beats_flash2():
    fa3, fa2 = KernelModel(H100, "flash3"), KernelModel(H100)
    sustained = load_profile("hopper").attention_flash3.sustained.value
    flop = attention_fwd_flop(4, 48, 8192, 8192, 128, False)
    fwd = flop / fa3.attention_time_s(4, 48, 8192, 8192, 128, False, Dtype.BF16, backward=False)
    bwd = 2.5 * flop / fa3.attention_time_s(4, 48, 8192, 8192, 128, False, Dtype.BF16, backward=True)
    # FlashAttention-3 on H100, hdim 128, 8k (Dao-AILab/flash-attention PR #1791): 659 fwd, 554 bwd TFLOPS
    assert fwd / sustained == pytest.approx(659 * TFLOP, rel=0.02)
    assert bwd / sustained == pytest.approx(554 * TFLOP, rel=0.02)
    for causal in (False, True):
        for seq in (1024, 4096, 16384):
            assert (fa3.attention_time_s(2, 32, seq, seq, 128, causal, Dtype.BF16, backward=False)
                    < fa2.attention_time_s(2, 32, seq, seq, 128, causal, Dtype.BF16, backward=False))
    assert fa3.gemm_time_s(4096, 4096, 4096, Dtype.BF16) == fa2.gemm_time_s(4096, 4096, 4096, Dtype.BF16)


def test_flash3_where_the_profile_has_no_figures_is_a_config_error_naming_the_field(a100):
    with pytest.raises(ConfigError, match=r"training\.attention: flash3.*hopper.*training\.attention: flash"):
        KernelModel(A100, "flash3")


@pytest.mark.parametrize("device", ["b200", "gb200", "gb300"])
@pytest.mark.parametrize("dtype", [Dtype.BF16, Dtype.FP8])
def test_blackwell_devices_stop_at_their_own_measured_ceiling(device, dtype):
    """Each Blackwell device's burst GEMM rate stops at its own MAMF fraction (blackwell.yaml
    device_ceiling): no shape beats it, and large aligned shapes reach it; the sustained clock
    ratio applies on top."""
    from hwsim.config.presets import PresetKind, load_preset
    acc = AcceleratorConfig.model_validate(load_preset(PresetKind.ACCELERATOR, device, "accelerator"))
    model = KernelModel(acc)
    gemm = load_profile("blackwell").gemm
    ceiling = gemm.device_ceiling[device][dtype].value
    sustained = gemm.sustained[dtype].value
    shapes = [(m, n, k) for m in (2048, 8192, 32768) for n in (4096, 14336, 28672) for k in (2048, 8192, 16384)]
    burst = [model.gemm_compute_efficiency(m, n, k, dtype) / sustained for m, n, k in shapes]
    assert max(burst) == pytest.approx(ceiling)
    assert all(b <= ceiling + 1e-12 for b in burst)
    # GB200 and GB300 have a higher datasheet peak than B200 but reach a lower fraction of it
    if device != "b200":
        assert ceiling < gemm.device_ceiling["b200"][dtype].value
