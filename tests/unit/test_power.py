"""The power-limit model against the capped measurements its data file lists.

hwsim/presets/power/power_clock.yaml keeps measured points (a GEMM rate under a power cap,
relative to the same GPU uncapped) apart from the exponent the model uses. A measured point
with a `range` is a check, not a fit: the model must land inside it."""

import copy
from importlib import resources

import pytest
import yaml

from hwsim.config.loader import scenario_from_mapping
from hwsim.hardware.power import tensor_throughput_frac
from tests.conftest import SMALL


def _measured_points():
    data = yaml.safe_load(resources.files("hwsim").joinpath("presets", "power", "power_clock.yaml").read_text())
    return [(sku, p) for sku, points in data["points"].items() for p in points if "range" in p]


def test_the_data_file_has_a_capped_h100_sxm_measurement():
    assert any(sku == "h100-sxm" and p["power_w"] < 700 for sku, p in _measured_points())


@pytest.mark.parametrize("sku, point", _measured_points(), ids=lambda v: str(v) if isinstance(v, str) else str(v["power_w"]))
def test_the_model_lands_inside_each_measured_capped_range(sku, point):
    d = copy.deepcopy(SMALL)
    d["cluster"]["accelerator"] = {"preset": sku, "power_limit": f"{point['power_w']} W"}
    accelerator = scenario_from_mapping(d).cluster.accelerator
    low, high = point["range"]
    assert low - 0.01 <= tensor_throughput_frac(accelerator) <= high + 0.01, (sku, point["source"][:80])
