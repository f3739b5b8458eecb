"""The kernel model against A100 timings it was not fitted to (LLMCompass, ISCA 2024 artifact;
bench/data/llmcompass_a100.yaml). The model's GEMMs are fitted to a steady-state (power-limited)
sweep, so they may be slower than these short runs but not faster; HBM-bound kernels big enough
to leave the 40 MB L2 must agree."""

from __future__ import annotations

import statistics

from bench.kernels_vs_measured import measured_vs_model


def _ratios(kernel: str, min_measured_s: float) -> list[float]:
    return [model / measured for _shape, measured, model in measured_vs_model()[kernel] if measured >= min_measured_s]


def test_gemms_are_within_the_burst_to_sustained_gap():
    ratios = _ratios("matmul", 100e-6)
    assert len(ratios) >= 10
    assert 1.0 <= statistics.median(ratios) <= 1.2      # model slower (steady state), by < 20%
    assert all(0.9 <= r <= 1.25 for r in ratios)


def test_large_memory_bound_kernels_agree():
    rows = measured_vs_model()
    big = [model / measured for kernel in ("gelu", "layernorm") for shape, measured, model in rows[kernel]
           if measured >= 100e-6 and not shape.startswith("4096x")]   # rows of 4096 hidden and long vectors
    assert len(big) >= 5
    assert all(abs(r - 1) <= 0.10 for r in big), big
