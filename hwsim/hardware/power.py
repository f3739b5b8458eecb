"""A board power limit below the TDP slows tensor-core kernels: the SM clock settles where the
GEMM load draws the limit. Data and sources: `hwsim/presets/power/power_clock.yaml`.

    throughput_frac = min(1, power_limit / tdp) ** alpha

applied on top of the sustained rate at the TDP (the kernel profiles' `sustained`), to GEMMs
and attention only: HBM-bound kernels keep their rate (the memory clock does not follow the SM
clock). No limit, or no TDP in the preset: 1.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml

from hwsim.config.schema import AcceleratorConfig
from hwsim.errors import ConfigError

__all__ = ["power_exponent", "tensor_throughput_frac"]


@cache
def power_exponent() -> float:
    path = "presets/power/power_clock.yaml"
    try:
        data = yaml.safe_load(resources.files("hwsim").joinpath("presets", "power", "power_clock.yaml").read_text())
        alpha = float(data["exponent"]["value"])
        if len(str(data["exponent"].get("source", ""))) < 3:
            raise ValueError("exponent.source is missing")
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path} is missing or not valid (a bug in hwsim's data): {exc}") from None
    if not 0.0 < alpha <= 3.0:
        raise ConfigError(f"{path}: exponent.value {alpha} is outside (0, 3] (a bug in hwsim's data)")
    return alpha


def tensor_throughput_frac(accelerator: AcceleratorConfig) -> float:
    """Tensor-core throughput at the accelerator's power limit, relative to at its TDP."""
    limit, tdp = accelerator.power_limit, accelerator.tdp
    if limit is None or tdp <= 0.0:
        return 1.0
    return min(1.0, limit / tdp) ** power_exponent()
