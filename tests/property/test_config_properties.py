"""Property tests of the config loader: valid inputs round-trip, invalid inputs only ever
raise ConfigError (never another exception)."""

import copy
import tempfile
from pathlib import Path

import yaml
from hypothesis import given, settings, strategies as st

from hwsim.config.loader import apply_overrides, read_yaml, scenario_from_mapping
from hwsim.config.schema import ScenarioConfig
from hwsim.errors import ConfigError
from tests.conftest import SMALL

rates = st.sampled_from(["100 Gb/s", "200 Gb/s", "400 Gb/s", "25 GB/s", 5e10])
sizes = st.sampled_from(["40 GB", "80 GiB", "96 GiB", 141e9])


@st.composite
def scenarios(draw):
    d = copy.deepcopy(SMALL)
    d["cluster"]["nodes"] = draw(st.integers(1, 64))
    d["cluster"]["devices_per_node"] = draw(st.sampled_from([1, 2, 4, 8]))
    d["cluster"]["inter_node"]["nic_bandwidth"] = draw(rates)
    d["cluster"]["inter_node"]["oversubscription"] = draw(st.floats(1.0, 4.0))
    d["cluster"]["accelerator"]["hbm"] = draw(sizes)
    d["model"]["layers"] = draw(st.integers(1, 128))
    d["model"]["mlp"] = draw(st.sampled_from(["gelu", "swiglu"]))
    d["parallel"] = {"tp": draw(st.sampled_from([1, 2, 4, 8])), "pp": draw(st.integers(1, 8)),
                     "recompute": draw(st.sampled_from(["none", "selective", "full"])),
                     "zero_stage": draw(st.integers(0, 3)),
                     "schedule": draw(st.sampled_from(["gpipe", "1f1b", "interleaved", "zero-bubble"]))}
    d["training"]["precision"] = draw(st.sampled_from(["fp32", "bf16", "fp16", "fp8"]))
    if draw(st.booleans()):
        d["software"] = {"framework": draw(st.sampled_from(["megatron-core", "torchtitan", "custom", "nemo"])),
                         "version": draw(st.sampled_from(["2024-12", "25.11", "0.8.0", 2020, 25.02])),
                         "compile": draw(st.booleans()),
                         "fp8_recipe": draw(st.sampled_from(["delayed", "tensorwise", "rowwise", "current", "mxfp8",
                                                             "blockwise"]))}
    if draw(st.booleans()):
        d["cluster"]["accelerator"]["power_limit"] = draw(st.sampled_from(["300 W", "500 W", 650.0]))
    return d


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_valid_scenarios_round_trip(d):
    sc = scenario_from_mapping(d)
    again = ScenarioConfig.model_validate(sc.model_dump())
    assert again == sc
    assert sc.cluster.n_devices == d["cluster"]["nodes"] * d["cluster"]["devices_per_node"]


junk = st.one_of(st.text(max_size=8), st.integers(-5, 5), st.floats(allow_nan=True), st.none(),
                 st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
paths = st.sampled_from([("cluster", "nodes"), ("cluster", "intra_node", "bandwidth"), ("model", "hidden"),
                         ("parallel", "tp"), ("training", "precision"), ("cluster", "accelerator", "hbm"),
                         ("model", "mlp"), ("cluster", "inter_node", "kind"), ("training", "global_batch"),
                         ("parallel", "nonsense_key"), ("cluster", "accelerator", "peak", "bf16"),
                         ("software", "framework"), ("software", "version"), ("software", "compile"),
                         ("software", "fp8_recipe"), ("software", "bogus"), ("cluster", "accelerator", "power_limit")])


@settings(max_examples=150, deadline=None)
@given(paths, junk)
def test_any_bad_value_is_a_config_error_or_valid(path, value):
    d = copy.deepcopy(SMALL)
    node = d
    for p in path[:-1]:
        node = node.setdefault(p, {})   # a block the base lacks (software) is created
    node[path[-1]] = value
    try:
        scenario_from_mapping(d)
    except ConfigError as exc:
        assert str(exc)                     # a message, never another exception type


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9999), st.integers(0, 9), st.booleans())
def test_scientific_notation_counts_load_as_integers(mantissa, exponent, via_set):
    """`global_batch: 1.536e12` is the integer it names (YAML 1.2 and JSON read it as a number;
    PyYAML's YAML 1.1 would read a string), in a file and in --set."""
    text = f"{mantissa}e{exponent}"
    if via_set:
        d = apply_overrides(copy.deepcopy(SMALL), [f"training.global_batch={text}"])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "s.yaml"
            path.write_text(yaml.safe_dump(SMALL).replace("global_batch: 32", f"global_batch: {text}"))
            d = read_yaml(path)
    assert d["training"]["global_batch"] == mantissa * 10**exponent
    assert scenario_from_mapping(d).training.global_batch == mantissa * 10**exponent


bounded = st.sampled_from([(("cluster", "intra_node", "bandwidth"), "0 GB/s"),
                           (("cluster", "inter_node", "nic_bandwidth"), 0),
                           (("cluster", "accelerator", "hbm_bandwidth"), "0 TB/s"),
                           (("cluster", "accelerator", "host_bandwidth"), 0.0),
                           (("cluster", "accelerator", "hbm"), "0 GiB"),
                           (("cluster", "accelerator", "peak", "fp32"), "0 TFLOPS"),
                           (("model", "layers"), 4097), (("model", "layers"), 10**9),
                           (("model", "mtp_layers"), 10**6)])


@settings(max_examples=30, deadline=None)
@given(bounded)
def test_zero_rates_and_absurd_sizes_are_config_errors_naming_the_field(case):
    path, value = case
    d = copy.deepcopy(SMALL)
    node = d
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    try:
        scenario_from_mapping(d)
    except ConfigError as exc:
        assert ".".join(path) + ":" in str(exc)
    else:
        raise AssertionError(f"{'.'.join(path)}={value!r} was accepted")
