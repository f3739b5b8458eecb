"""hwsim's kernel model against A100 kernels it was not fitted to (LLMCompass's measurements).

The GEMM efficiencies of the ampere profile are fitted to Azure's steady-state cuBLASLt sweep
and the memory efficiency to BabelStream; this compares the model with an independent set of
PyTorch-eager timings on an A100 SXM4 80 GB (bench/data/llmcompass_a100.yaml, ISCA 2024
artifact), after removing the fixed per-call cost of that harness. Prints model / measured per
shape and the median ratio per kernel.

    python bench/kernels_vs_measured.py
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hwsim.config.presets import PresetKind, load_preset  # noqa: E402
from hwsim.config.schema import AcceleratorConfig, Dtype  # noqa: E402
from hwsim.hardware.kernels import KernelModel  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "llmcompass_a100.yaml"
FP16_BYTES = 2


def measured_vs_model(data: dict | None = None) -> dict[str, list[tuple[str, float, float]]]:
    """kernel -> [(shape, measured seconds without the harness overhead, model seconds)]."""
    data = data or yaml.safe_load(DATA.read_text())
    acc = AcceleratorConfig(**load_preset(PresetKind.ACCELERATOR, data["device"], "cluster.accelerator"))
    model = KernelModel(acc)
    out: dict[str, list[tuple[str, float, float]]] = {"matmul": [], "layernorm": [], "gelu": []}
    mm = data["matmul"]
    for m, n, k, ms, _tflops in mm["rows"]:
        out["matmul"].append((f"{m}x{n}x{k}", ms * 1e-3 - mm["harness_overhead_s"],
                              model.gemm_time_s(m, n, k, Dtype.FP16)))
    ln = data["layernorm"]
    for m, n, rate in ln["rows"]:   # read and write each fp16 element once
        out["layernorm"].append((f"{m}x{n}", m * n / (rate * 1e9) - ln["harness_overhead_s"],
                                 model.memory_time_s(2 * FP16_BYTES * m * n)))
    ge = data["gelu"]
    for n, rate in ge["rows"]:
        out["gelu"].append((f"{n}", n / (rate * 1e9) - ge["harness_overhead_s"],
                            model.memory_time_s(2 * FP16_BYTES * n)))
    return out


def main() -> None:
    for kernel, rows in measured_vs_model().items():
        print(f"\n{kernel}: model / measured (measured without the harness's fixed cost)")
        for shape, measured, modelled in rows:
            note = "" if measured > 0 else "  (at or below the harness cost: skipped)"
            ratio = modelled / measured if measured > 0 else float("nan")
            print(f"  {shape:>22}  measured {measured * 1e6:10.1f} us  model {modelled * 1e6:10.1f} us  "
                  f"ratio {ratio:5.2f}{note}")
        big = [mod / mea for _s, mea, mod in rows if mea > 100e-6]
        if big:
            print(f"  median ratio over kernels longer than 100 us: {statistics.median(big):.2f} (n={len(big)})")


if __name__ == "__main__":
    main()
