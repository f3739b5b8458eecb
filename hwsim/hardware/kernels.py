"""Kernel-time model: how long one kernel takes on one accelerator.

A kernel's time is a roofline with efficiency plus a fixed launch cost:

    time_s = max(flop / (peak_flop_per_s · eff_c(shape)), bytes / (hbm_bytes_per_s · eff_m))
             + launch_overhead_s

The efficiencies are data, one profile per architecture in `hwsim/presets/efficiency/*.yaml`,
every number with its public source beside it. This module only knows their shape:

GEMM (`gemm_time_s`): eff_c = max_efficiency[dtype] · best over the profile's output tiles and
split-k factors s of (tile efficiency · tile quantization · wave quantization · k_curve(k / s)).
  * tile quantization: partial output tiles still cost a whole tile, m·n / (tiles·tile_m·tile_n);
  * wave quantization: tiles run in waves of `sm_count`, tiles / (waves · sm_count);
  * k_curve: a short reduction (small k) cannot amortise a tile's prologue and epilogue; a
    saturating curve of data points, interpolated linearly in log k;
  * split-k: cutting k into s slices multiplies the tiles by s (fills the waves of a small m·n)
    at the price of a shorter k per tile and fp32 partials written and read once more.
  (NVIDIA, "Matrix Multiplication Background User's Guide", §2.3 and §3.) The bytes term reads
  A and B and writes C once, A and B at the dtype's size and C at 16 bits or more (fp8 GEMMs
  write bf16): it decides skinny GEMMs.

Attention (`attention_time_s`, fused flash-style): FLOPs are counted as FlashAttention's own
benchmarks count them (Dao-AILab/flash-attention, benchmarks/benchmark_flash_attention.py,
`flops()`): forward 4·b·h·s_q·s_kv·d, halved when causal; backward 2.5× forward. The achieved
fraction of peak is the profile's efficiency at long sequences for the pass and head_dim
(interpolated in log head_dim), times a sequence-length curve (one for causal, one not).

Sustained clocks: most kernel benchmarks are short bursts at the boost clock; a training run
keeps every GPU of a node at its power limit for hours and the SM clock settles lower. Tensor-
core kernels (GEMMs, attention) are multiplied by the profile's `sustained` fraction (per GEMM
dtype, and one for attention; 1 where the calibration data were already steady-state), after
the burst ceiling. HBM-bound kernels are not: the memory clock does not follow the SM clock.

Memory-bound kernels (`memory_time_s`): bytes / (hbm_bytes_per_s · memory_efficiency).

Dtype fallbacks (peak and efficiency alike): bf16 → fp16 when a device has no bf16 rate,
fp8 → the bf16 rate when it has no fp8 rate (Ampere, Volta), tf32 → fp32. An fp8 GEMM on a
device without fp8 is therefore priced exactly as a bf16 one, bytes included.
"""

from __future__ import annotations

import difflib
import functools
import math
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from hwsim import units
from hwsim.config.schema import AcceleratorConfig, Dtype
from hwsim.errors import ConfigError
from hwsim.hardware.power import tensor_throughput_frac

__all__ = [
    "PROFILE_DIR", "DTYPE_BYTES", "KernelProfile", "KernelModel", "load_profile",
    "available_profiles", "profile_name_for", "interpolate_log", "tile_utilization",
    "attention_fwd_flop", "FLASH_BWD_FLOP_RATIO", "GROUPED_GEMM_STREAMS",
]

PROFILE_DIR = Path(__file__).resolve().parent.parent / "presets" / "efficiency"

DTYPE_BYTES: dict[Dtype, int] = {Dtype.FP32: 4, Dtype.TF32: 4, Dtype.FP16: 2, Dtype.BF16: 2, Dtype.FP8: 1}

FLASH_BWD_FLOP_RATIO = 2.5  # backward = 2.5 × forward FLOPs (flash-attention benchmark convention)

# Transformer Engine's GroupedLinear (the expert GEMMs of Megatron-Core's TEGroupedMLP) calls one
# cuBLASLt GEMM per expert on a pool of compute streams (NVIDIA/TransformerEngine issue #1386, yaox12,
# NVIDIA, 2024-12-31: the multi-stream cuBLASLt calls beat cublasGemmGroupedBatchedEx and CUTLASS
# grouped GEMM on Mixtral 8x7B/8x22B, Qwen2-57B-A14B and DeepSeek-V2 shapes, so TE keeps them); the
# pool holds 4 streams (transformer_engine/common/util/multi_stream.cpp, get_num_compute_streams()).
GROUPED_GEMM_STREAMS = 4

_CACHE_LIMIT = 1 << 16  # shapes per model; a step has a few hundred distinct ones
_MIN_SPLIT_K = 128      # no split-k slice shorter than two 64-deep k-blocks


# --- the profile file, validated once at the boundary -------------------------------------

class _Closed(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Source = Annotated[str, Field(min_length=3, description="where the number comes from")]


class Fraction(_Closed):
    value: float = Field(gt=0, le=1)
    source: Source


class Duration(_Closed):
    value: Annotated[float, BeforeValidator(units.parse_time)]
    source: Source


class Curve(_Closed):
    """A multiplicative factor y(x): points (x, y) with x increasing, interpolated linearly in
    log x and held constant beyond the first and last points."""

    points: tuple[tuple[float, float], ...] = Field(min_length=1)
    source: Source

    @model_validator(mode="after")
    def _check(self) -> "Curve":
        xs = [x for x, _ in self.points]
        if any(x <= 0 for x in xs) or any(b <= a for a, b in zip(xs, xs[1:])):
            raise ValueError(f"curve x values must be positive and strictly increasing, got {xs}")
        if any(not 0 < y <= 1.2 for _, y in self.points):
            raise ValueError("curve factors must lie in (0, 1.2]")
        return self


class Tile(_Closed):
    """An output tile a GEMM library uses, and the efficiency of its main loop relative to the
    profile's best tile (smaller tiles reuse less data per load)."""

    m: PositiveInt
    n: PositiveInt
    efficiency: float = Field(gt=0, le=1)
    source: Source


class SplitK(_Closed):
    """The split-k (or stream-k) factors a library may use to fill the machine when m·n is small."""

    values: tuple[PositiveInt, ...] = Field(min_length=1)
    source: Source


class GemmProfile(_Closed):
    max_efficiency: dict[Dtype, Fraction]
    # the highest fraction of peak any shape reached in a published exhaustive shape sweep: no
    # modelled shape may beat it (optional, per dtype)
    ceiling: dict[Dtype, Fraction] = Field(default_factory=dict)
    # the same, measured on one device of the family (its own fraction of its own peak): where a
    # family's devices differ in clock and power (B200, GB200, GB300), this replaces `ceiling`
    device_ceiling: dict[str, dict[Dtype, Fraction]] = Field(default_factory=dict)
    # the fraction of the calibrated rate a GEMM keeps when every GPU of the node computes for
    # hours at its power limit (optional, per dtype; 1 where the calibration was steady-state)
    sustained: dict[Dtype, Fraction] = Field(default_factory=dict)
    tiles: tuple[Tile, ...] = Field(min_length=1)
    k_curve: Curve
    split_k: SplitK

    @model_validator(mode="after")
    def _needs_16bit(self) -> "GemmProfile":
        if Dtype.BF16 not in self.max_efficiency and Dtype.FP16 not in self.max_efficiency:
            raise ValueError("gemm.max_efficiency needs a bf16 or fp16 entry (the fallback of the others)")
        return self


class AttentionProfile(_Closed):
    kernel: str
    forward: dict[PositiveInt, Fraction] = Field(min_length=1, description="by head_dim; long, non-causal")
    backward: dict[PositiveInt, Fraction] = Field(min_length=1)
    seq_curve: Curve
    causal_seq_curve: Curve
    fp8_relative: Fraction | None = Field(None, description="fp8 attention efficiency relative to bf16")
    sustained: Fraction | None = Field(None, description="as gemm.sustained, for the attention kernel")


class RelativeAttention(_Closed):
    """An attention kernel timed as a fraction of the profile's `attention` (FlashAttention-2
    class) efficiency, per pass, where only relative measurements exist."""

    kernel: str
    forward: Fraction
    backward: Fraction


class KernelProfile(_Closed):
    name: str
    description: str
    devices: tuple[str, ...] = Field((), description="accelerator presets this profile serves by default")
    launch_overhead: Duration
    memory_efficiency: Fraction
    gemm: GemmProfile
    attention: AttentionProfile
    attention_flash3: AttentionProfile | None = Field(
        None, description="training.attention: flash3 (FlashAttention-3 class), where the architecture has it")
    attention_triton: RelativeAttention | None = Field(
        None, description="training.attention: flash-triton (FlashAttention in Triton, 2022-23), relative to attention")
    notes: str = ""


# --- loading -----------------------------------------------------------------------------

def available_profiles() -> tuple[str, ...]:
    """The profile names shipped with hwsim (file stems of presets/efficiency/*.yaml), sorted."""
    return tuple(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))


@functools.cache
def load_profile(name: str) -> KernelProfile:
    """The kernel-efficiency profile `name` ("hopper", "ampere", ...), validated; cached."""
    known = available_profiles()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=2, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(f"unknown kernel profile {name!r}.{hint} Known profiles: {', '.join(known)}.")
    path = PROFILE_DIR / f"{name}.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    try:
        profile = KernelProfile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"kernel profile {path.name} is malformed: {exc}") from exc
    if profile.name != name:
        raise ConfigError(f"kernel profile {path.name} names itself {profile.name!r}; expected {name!r}")
    return profile


def profile_name_for(accelerator: AcceleratorConfig) -> str:
    """The accelerator's `kernel_profile`, or else the profile whose `devices` list its name."""
    if accelerator.kernel_profile:
        return accelerator.kernel_profile
    wanted = accelerator.name.lower()
    for name in available_profiles():
        if wanted in (d.lower() for d in load_profile(name).devices):
            return name
    raise ConfigError(
        f"accelerator {accelerator.name!r} has no kernel_profile and no profile lists it: set "
        f"kernel_profile to one of {', '.join(available_profiles())}.")


# --- pure maths --------------------------------------------------------------------------

def interpolate_log(points: tuple[tuple[float, float], ...], x: float) -> float:
    """y at x on a piecewise-linear-in-log(x) curve, held constant outside its points."""
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x <= x1:
            t = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + t * (y1 - y0)
    return points[-1][1]


def tile_utilization(m: int, n: int, batch: int, tile_m: int, tile_n: int, n_units: int) -> float:
    """Useful fraction of the machine for an m×n (×batch) output cut into tile_m×tile_n tiles
    that run in waves of n_units: tile quantization × wave quantization."""
    tiles_m, tiles_n = -(-m // tile_m), -(-n // tile_n)
    n_tiles = tiles_m * tiles_n * batch
    waves = -(-n_tiles // n_units)
    return (m * n) / (tiles_m * tile_m * tiles_n * tile_n) * n_tiles / (waves * n_units)


def attention_fwd_flop(batch: int, heads: int, seq_q: int, seq_kv: int, head_dim: int, causal: bool) -> float:
    """Forward FLOPs of attention, flash-attention's convention: 4·b·h·s_q·s_kv·d, ×0.5 causal."""
    flop = 4.0 * batch * heads * seq_q * seq_kv * head_dim
    return flop * 0.5 if causal else flop


# --- the model ---------------------------------------------------------------------------

# Where a dtype's GEMM efficiency comes from when its profile has no entry of its own.
_EFFICIENCY_FALLBACK: dict[Dtype, tuple[Dtype, ...]] = {
    Dtype.FP32: (Dtype.FP32, Dtype.TF32, Dtype.BF16, Dtype.FP16),
    Dtype.TF32: (Dtype.TF32, Dtype.BF16, Dtype.FP16),
    Dtype.FP16: (Dtype.FP16, Dtype.BF16),
    Dtype.BF16: (Dtype.BF16, Dtype.FP16),
    Dtype.FP8: (Dtype.FP8, Dtype.BF16, Dtype.FP16),
}


class KernelModel:
    """Kernel durations for one accelerator. Cheap to call: results are memoised per shape."""

    __slots__ = ("accelerator", "profile", "launch_overhead_s", "_mem_bytes_per_s", "_n_units",
                 "_rate_dtype", "_peak", "_gemm_eff", "_tiles", "_k_points", "_splits", "_attn",
                 "_attn_points", "_gemm_cache", "_attn_cache", "_gemm_ceiling", "_gemm_sustained",
                 "_attn_sustained", "_attn_relative")

    def __init__(self, accelerator: AcceleratorConfig, attention: str = "flash"):
        """`attention`: the fused-attention generation whose figures time attention kernels,
        "flash" (FlashAttention-2 class, every profile) or "flash3" (profiles that have it);
        "unfused" attention is timed as GEMMs and memory-bound kernels, so it uses "flash"."""
        self.accelerator = accelerator
        self.profile = load_profile(profile_name_for(accelerator))
        p = self.profile
        attn = p.attention
        if attention == "flash3":
            if p.attention_flash3 is None:
                raise ConfigError(
                    f"training.attention: flash3 (FlashAttention-3 class kernels) has no measured figures for "
                    f"the {p.name!r} kernel profile of accelerator {accelerator.name!r}; hwsim has them for "
                    f"{', '.join(n for n in available_profiles() if load_profile(n).attention_flash3)}. "
                    f"Use training.attention: flash (FlashAttention-2 class) on this accelerator.")
            attn = p.attention_flash3
        self._attn_relative = (1.0, 1.0)     # (forward, backward) efficiency relative to `attn`
        if attention == "flash-triton":
            if p.attention_triton is None:
                raise ConfigError(
                    f"training.attention: flash-triton has no figures for the {p.name!r} kernel profile of "
                    f"accelerator {accelerator.name!r}; use training.attention: flash on this accelerator.")
            self._attn_relative = (p.attention_triton.forward.value, p.attention_triton.backward.value)
        self.launch_overhead_s: float = p.launch_overhead.value
        self._mem_bytes_per_s = accelerator.hbm_bandwidth * p.memory_efficiency.value
        self._n_units = accelerator.sm_count
        self._rate_dtype = {d: self._resolve_rate_dtype(d) for d in Dtype}
        # 0.0 where the device has no rate at all: an error only if a kernel asks for it
        self._peak = {d: float(getattr(accelerator.peak, self._rate_dtype[d].value) or 0.0) for d in Dtype}
        self._gemm_eff = {d: self._lookup(p.gemm.max_efficiency, self._rate_dtype[d]) for d in Dtype}
        ceilings = {**p.gemm.ceiling, **p.gemm.device_ceiling.get(accelerator.name, {})}
        self._gemm_ceiling = {d: (ceilings[self._rate_dtype[d]].value
                                  if self._rate_dtype[d] in ceilings else 1.0) for d in Dtype}
        power = tensor_throughput_frac(accelerator)   # a power limit below the TDP (hardware.power)
        self._gemm_sustained = {d: power * (p.gemm.sustained[self._rate_dtype[d]].value
                                            if self._rate_dtype[d] in p.gemm.sustained else 1.0) for d in Dtype}
        self._attn_sustained = power * (attn.sustained.value if attn.sustained else 1.0)
        tiles: dict[tuple[int, int], float] = {}
        for t in p.gemm.tiles:
            for shape in ((t.m, t.n), (t.n, t.m)):
                tiles[shape] = max(tiles.get(shape, 0.0), t.efficiency)
        self._tiles = tuple((tm, tn, e) for (tm, tn), e in tiles.items())
        self._k_points = p.gemm.k_curve.points
        self._splits = tuple(sorted(set(p.gemm.split_k.values) | {1}))
        self._attn = attn
        self._attn_points = {  # backward? -> ((head_dim, efficiency), ...) sorted by head_dim
            bwd: tuple(sorted((float(d), f.value) for d, f in table.items()))
            for bwd, table in ((False, attn.forward), (True, attn.backward))}
        self._gemm_cache: dict[tuple[int, int, int, int, Dtype], float] = {}
        self._attn_cache: dict[tuple, float] = {}

    # dtype resolution ------------------------------------------------------------------

    def _resolve_rate_dtype(self, dtype: Dtype) -> Dtype:
        peak = self.accelerator.peak
        if dtype is Dtype.FP8:
            return Dtype.FP8 if peak.fp8 else self._resolve_rate_dtype(Dtype.BF16)
        if dtype is Dtype.BF16:
            return Dtype.BF16 if peak.bf16 else Dtype.FP16
        if dtype is Dtype.TF32:
            return Dtype.TF32 if peak.tf32 else Dtype.FP32
        return dtype

    def _peak_of(self, dtype: Dtype) -> float:
        """Dense peak of `dtype` after fallbacks; ConfigError if the device has no such rate."""
        value = self._peak[dtype]
        if value <= 0.0:
            raise ConfigError(f"accelerator {self.accelerator.name!r} has no peak rate for {dtype.value} "
                              f"(peak.{self._rate_dtype[dtype].value} is missing or zero)")
        return value

    @staticmethod
    def _lookup(table: dict[Dtype, Fraction], dtype: Dtype) -> float:
        for candidate in _EFFICIENCY_FALLBACK[dtype]:
            if candidate in table:
                return table[candidate].value
        raise ConfigError(f"no GEMM efficiency for {dtype.value} nor its fallbacks")  # schema forbids

    def peak_flop_per_s(self, dtype: Dtype) -> float:
        """Dense peak for `dtype`, after the fallbacks in the module docstring."""
        return self._peak_of(dtype)

    def dtype_bytes(self, dtype: Dtype) -> int:
        """Bytes per element as the kernel really stores it (fp8 without fp8 hardware: 2)."""
        return DTYPE_BYTES[self._rate_dtype[dtype]]

    # GEMM ------------------------------------------------------------------------------

    def _gemm_plan(self, m: int, n: int, k: int, dtype: Dtype, batch: int) -> tuple[float, float]:
        """(eff_c, roofline seconds) of the fastest (tile, split-k) pair the profile offers."""
        elem = DTYPE_BYTES[self._rate_dtype[dtype]]
        # A and B at the dtype's size; C at >= 16 bits (fp8 GEMMs write bf16)
        base_bytes = float(batch * ((m * k + k * n) * elem + m * n * max(elem, 2)))
        flop_per_peak = 2.0 * m * n * k * batch / self._peak_of(dtype)
        max_eff = self._gemm_eff[dtype]
        ceiling = self._gemm_ceiling[dtype]
        sustained = self._gemm_sustained[dtype]
        best_s, best_eff = math.inf, 0.0
        for split in self._splits:
            if split > 1 and k // split < _MIN_SPLIT_K:
                break
            # split-k partials are written and read once more in fp32
            n_bytes = base_bytes + (2.0 * batch * split * m * n * DTYPE_BYTES[Dtype.FP32] if split > 1 else 0.0)
            memory_s = n_bytes / self._mem_bytes_per_s
            k_factor = interpolate_log(self._k_points, k / split)
            for tile_m, tile_n, tile_eff in self._tiles:
                eff = sustained * min(ceiling, max_eff * tile_eff * k_factor * tile_utilization(
                    m, n, batch * split, tile_m, tile_n, self._n_units))
                roofline_s = max(flop_per_peak / eff, memory_s)
                if roofline_s < best_s:
                    best_s, best_eff = roofline_s, eff
        return best_eff, best_s

    def gemm_compute_efficiency(self, m: int, n: int, k: int, dtype: Dtype, batch: int = 1) -> float:
        """eff_c(shape): the fraction of dense peak of the plan (tile, split-k) that runs."""
        return self._gemm_plan(m, n, k, dtype, batch)[0]

    def gemm_time_s(self, m: int, n: int, k: int, dtype: Dtype, batch: int = 1) -> float:
        """Duration of C[m,n] = A[m,k]·B[k,n] (batched `batch` times) in `dtype`."""
        key = (m, n, k, batch, dtype)
        cached = self._gemm_cache.get(key)
        if cached is not None:
            return cached
        if m <= 0 or n <= 0 or k <= 0 or batch <= 0:
            raise ValueError(f"GEMM dimensions must be positive, got m={m} n={n} k={k} batch={batch}")
        duration_s = self._gemm_plan(m, n, k, dtype, batch)[1] + self.launch_overhead_s
        if len(self._gemm_cache) >= _CACHE_LIMIT:
            self._gemm_cache.clear()
        self._gemm_cache[key] = duration_s
        return duration_s

    def grouped_gemm_time_s(self, m: int, n: int, k: int, dtype: Dtype, groups: int) -> float:
        """Duration of `groups` GEMMs of one shape (m, n, k) as Transformer Engine's GroupedLinear runs
        a MoE layer's local experts (Megatron-Core TEGroupedMLP): one cuBLASLt GEMM per expert, issued
        round-robin on GROUPED_GEMM_STREAMS streams, so at most that many share the SMs at a time; each
        round is timed as a batch of its GEMMs (they fill the waves together) and pays its launch.
        A strided batched GEMM of `groups` (gemm_time_s with batch=groups) is the lower bound."""
        if groups <= 0:
            raise ValueError(f"groups must be positive, got {groups}")
        full, rest = divmod(groups, GROUPED_GEMM_STREAMS)
        t = full * self.gemm_time_s(m, n, k, dtype, batch=GROUPED_GEMM_STREAMS) if full else 0.0
        return t + (self.gemm_time_s(m, n, k, dtype, batch=rest) if rest else 0.0)

    # memory-bound kernels --------------------------------------------------------------

    def memory_time_s(self, bytes_moved: float) -> float:
        """Duration of a memory-bound kernel (elementwise, norm, softmax, copy) moving
        `bytes_moved` bytes to and from HBM in total (reads plus writes)."""
        if bytes_moved < 0:
            raise ValueError(f"bytes_moved must not be negative, got {bytes_moved}")
        return bytes_moved / self._mem_bytes_per_s + self.launch_overhead_s

    # attention -------------------------------------------------------------------------

    def attention_efficiency(self, seq_kv: int, head_dim: int, causal: bool, backward: bool) -> float:
        """Achieved fraction of peak of the fused attention kernel (FA FLOP convention)."""
        base = interpolate_log(self._attn_points[backward], head_dim)
        curve = self._attn.causal_seq_curve if causal else self._attn.seq_curve
        return (self._attn_sustained * self._attn_relative[backward] * base
                * interpolate_log(curve.points, seq_kv))

    def attention_time_s(self, batch: int, heads: int, seq_q: int, seq_kv: int, head_dim: int,
                         causal: bool, dtype: Dtype, backward: bool) -> float:
        """Duration of one fused (flash-style) attention kernel, forward or backward."""
        key = (batch, heads, seq_q, seq_kv, head_dim, causal, dtype, backward)
        cached = self._attn_cache.get(key)
        if cached is not None:
            return cached
        if min(batch, heads, seq_q, seq_kv, head_dim) <= 0:
            raise ValueError(f"attention dimensions must be positive, got {key[:5]}")
        flop = attention_fwd_flop(batch, heads, seq_q, seq_kv, head_dim, causal)
        if backward:
            flop *= FLASH_BWD_FLOP_RATIO
        eff = self.attention_efficiency(seq_kv, head_dim, causal, backward)
        if self._rate_dtype[dtype] is Dtype.FP8:
            if self._attn.fp8_relative is None:  # no fp8 attention kernel: it runs in bf16
                dtype = Dtype.BF16
            else:
                eff *= self._attn.fp8_relative.value
        rate_dtype = self._rate_dtype[dtype]
        compute_s = flop / (self._peak_of(dtype) * eff)
        # forward reads Q, K, V and writes O; backward reads Q, K, V, O, dO and writes dQ, dK, dV
        q_side, kv_side = (4, 4) if backward else (2, 2)
        n_bytes = float(batch * heads * head_dim * (q_side * seq_q + kv_side * seq_kv) * DTYPE_BYTES[rate_dtype])
        duration_s = max(compute_s, n_bytes / self._mem_bytes_per_s) + self.launch_overhead_s
        if len(self._attn_cache) >= _CACHE_LIMIT:
            self._attn_cache.clear()
        self._attn_cache[key] = duration_s
        return duration_s
