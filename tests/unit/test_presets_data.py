"""The preset data files (hwsim/presets/{accelerators,models,nodes}/*.yaml).

Every file validates against the schema, names itself after its file, and gives a source for every
number it states. The numbers are then checked against closed forms: dense-peak ratios, chips that
share a die, and parameter counts against the published model sizes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import hwsim
from hwsim import units
from hwsim.config.schema import AcceleratorConfig, InterNodeConfig, IntraNodeConfig, MlpKind, ModelConfig

PRESETS = Path(hwsim.__file__).parent / "presets"
ACCELERATOR_FILES = sorted((PRESETS / "accelerators").glob("*.yaml"))
MODEL_FILES = sorted((PRESETS / "models").glob("*.yaml"))
NODE_FILES = sorted((PRESETS / "nodes").glob("*.yaml"))

REQUIRED_ACCELERATORS = {"v100-sxm-32gb", "a100-sxm-40gb", "a100-sxm-80gb", "h100-sxm", "h200", "b200",
                         "gb200", "gb300", "mi300x", "tpu-v4", "tpu-v5p"}
REQUIRED_MODELS = (
    {f"gpt3-{s}" for s in ("125m", "350m", "760m", "1.3b", "2.7b", "6.7b", "13b", "175b")}
    | {f"megatron-gpt-{s}" for s in ("1.7b", "3.6b", "7.5b", "18b", "39b", "76b", "145b", "310b", "530b", "1t")}
    | {"llama2-7b", "llama2-13b", "llama2-70b", "llama3-8b", "llama3-70b", "llama3-405b",
       "bert-base", "bert-large", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "mixtral-8x7b"}
)
KERNEL_PROFILES = {"volta", "ampere", "hopper", "blackwell", "cdna3", "tpu"}
# Google publishes no TDP for TPU v5p; its preset keeps the schema default (0 W) and says so.
NO_PUBLISHED_TDP = {"tpu-v5p"}
MILLION, BILLION = 10**6, 10**9  # parameter counts are quoted in millions and billions
# Keys that are labels, not quantities: they need no source.
UNSOURCED_KEYS = {"name", "description", "kernel_profile", "sources"}


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _leaves(mapping: dict, prefix: str = "") -> dict[str, object]:
    """Dotted path -> value for every non-null leaf outside UNSOURCED_KEYS."""
    out: dict[str, object] = {}
    for key, value in mapping.items():
        if not prefix and key in UNSOURCED_KEYS:
            continue
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_leaves(value, path + "."))
        elif value is not None:
            out[path] = value
    return out


def _assert_sources_complete(raw: dict) -> None:
    sources = raw.get("sources") or {}
    leaves = _leaves(raw)
    missing = [p for p in leaves if not str(sources.get(p, "")).strip()]
    assert not missing, f"{raw['name']}: no source for {missing}"
    stale = [p for p in sources if p not in leaves]
    assert not stale, f"{raw['name']}: sources for fields the file does not set: {stale}"


def _stem(path: Path) -> str:
    return path.name.removesuffix(".yaml")


def _accelerator(name: str) -> AcceleratorConfig:
    return AcceleratorConfig(**_load(PRESETS / "accelerators" / f"{name}.yaml"))


def _model(name: str) -> ModelConfig:
    return ModelConfig(**_load(PRESETS / "models" / f"{name}.yaml"))


# --------------------------------------------------------------------------------------------------
# Accelerators
# --------------------------------------------------------------------------------------------------

def test_required_accelerators_present() -> None:
    assert REQUIRED_ACCELERATORS <= {_stem(p) for p in ACCELERATOR_FILES}


@pytest.mark.parametrize("path", ACCELERATOR_FILES, ids=_stem)
def test_accelerator_file_is_valid_and_sourced(path: Path) -> None:
    raw = _load(path)
    acc = AcceleratorConfig(**raw)
    assert acc.name == _stem(path)
    assert acc.kernel_profile in KERNEL_PROFILES
    _assert_sources_complete(raw)


@pytest.mark.parametrize("path", ACCELERATOR_FILES, ids=_stem)
def test_accelerator_numbers_are_sane(path: Path) -> None:
    acc = AcceleratorConfig(**_load(path))
    peak = acc.peak
    assert acc.hbm > 0 and acc.hbm_bandwidth > 0 and acc.host_bandwidth > 0
    assert acc.price_per_hour > 0
    assert (acc.tdp > 0) != (acc.name in NO_PUBLISHED_TDP)
    assert peak.fp16 >= peak.fp32
    if peak.bf16 is not None:
        assert peak.bf16 >= peak.fp32
    if peak.tf32 is not None:
        assert peak.fp32 <= peak.tf32 <= (peak.bf16 or peak.fp16)
    if peak.fp8 is not None:
        assert peak.bf16 is not None and peak.fp8 >= peak.bf16
    # Dense tensor rates for one GPU today sit between 10 TFLOPS and 10 PFLOPS; a value outside
    # means a unit slip (e.g. "TFLOPS" for "PFLOPS") or a sparse number halved twice.
    for rate in (peak.fp16, peak.bf16, peak.fp8):
        if rate is not None:
            assert 10 * units.TFLOP <= rate <= 10 * units.PFLOP


@pytest.mark.parametrize("name", ["h100-sxm", "h100-pcie", "h200", "b200", "gb200", "gb300", "mi300x",
                                  "mi325x", "l40s"])
def test_dense_fp8_is_twice_bf16(name: str) -> None:
    """A sparse figure copied by mistake would break the 2x dense ratio between fp8 and bf16."""
    peak = _accelerator(name).peak
    assert peak.fp8 == pytest.approx(2 * peak.bf16, rel=0.02)
    assert peak.tf32 == pytest.approx(peak.bf16 / 2, rel=0.03)


@pytest.mark.parametrize("a, b", [("h100-sxm", "h200"), ("a100-sxm-40gb", "a100-sxm-80gb"),
                                  ("mi300x", "mi325x")])
def test_same_die_same_compute(a: str, b: str) -> None:
    x, y = _accelerator(a), _accelerator(b)
    assert x.peak == y.peak
    assert x.sm_count == y.sm_count and x.l2_cache == y.l2_cache
    assert y.hbm > x.hbm and y.hbm_bandwidth > x.hbm_bandwidth


def test_units_are_read_as_written() -> None:
    """Decimal GB in NVIDIA/AMD datasheets, binary GiB in the TPU documentation."""
    assert _accelerator("h100-sxm").hbm == 80 * units.GB
    assert _accelerator("h200").hbm == 141 * units.GB
    assert _accelerator("tpu-v4").hbm == 32 * units.GiB
    assert _accelerator("tpu-v5p").hbm == 95 * units.GiB
    assert _accelerator("h100-sxm").hbm_bandwidth == pytest.approx(3.35 * units.TB)
    assert _accelerator("h100-sxm").peak.bf16 == pytest.approx(989.4 * units.TFLOP)
    assert _accelerator("gb200").host_bandwidth == 450 * units.GB
    assert _accelerator("a100-sxm-80gb").host_bandwidth == 32 * units.GB
    assert _accelerator("v100-sxm-32gb").peak.bf16 is None


def test_tpu_fp32_is_six_bf16_passes() -> None:
    for name in ("tpu-v4", "tpu-v5p"):
        peak = _accelerator(name).peak
        assert peak.fp32 == pytest.approx(peak.bf16 / 6, rel=1e-3)


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------

def n_params(m: ModelConfig, active: bool = False) -> float:
    """Weights of a transformer, without biases, norms and learned positions (each < 1%).

    attention: q and o are hidden x (heads*head_dim); k and v are hidden x (kv_heads*head_dim).
    MLP: 2 matrices (gelu) or 3 (swiglu) of hidden x ffn; MoE layers have `experts` of them
    (`top_k` when counting active weights) plus shared experts and a router.
    """
    head_dim = m.head_dim or m.hidden // m.heads
    q_width = m.heads * head_dim
    kv_width = (m.kv_heads or m.heads) * head_dim
    attention = 2 * m.hidden * q_width + 2 * m.hidden * kv_width
    n_mats = 3 if m.mlp == MlpKind.SWIGLU else 2
    dense_mlp = n_mats * m.hidden * m.ffn_hidden
    layers = m.layers * (attention + dense_mlp)
    if m.moe is not None:
        moe = m.moe
        expert = n_mats * m.hidden * (moe.moe_ffn_hidden or m.ffn_hidden)
        routed = moe.top_k if active else moe.experts
        moe_layer = attention + (routed + moe.shared_experts) * expert + m.hidden * moe.experts
        n_moe = m.layers - moe.dense_layers
        layers = moe.dense_layers * (attention + dense_mlp) + n_moe * moe_layer
    embeddings = m.vocab * m.hidden * (1 if m.tied_embeddings else 2)
    return layers + embeddings


def test_required_models_present() -> None:
    assert REQUIRED_MODELS <= {_stem(p) for p in MODEL_FILES}


@pytest.mark.parametrize("path", MODEL_FILES, ids=_stem)
def test_model_file_is_valid_and_sourced(path: Path) -> None:
    raw = _load(path)
    model = ModelConfig(**raw)
    assert model.name == _stem(path)
    _assert_sources_complete(raw)
    assert model.head_dim is not None or model.hidden % model.heads == 0
    kv_heads = model.kv_heads or model.heads
    assert model.heads % kv_heads == 0
    assert model.ffn_hidden >= model.hidden
    if model.moe is not None:
        assert model.moe.top_k <= model.moe.experts
        assert model.moe.dense_layers < model.layers


# Published sizes: (preset, parameters, where the number is published).
PUBLISHED_SIZES = [
    ("gpt3-125m", 125 * MILLION, "Brown et al. 2020, Table 2.1"),
    ("gpt3-1.3b", 1.3 * BILLION, "Brown et al. 2020, Table 2.1"),
    ("gpt3-13b", 13 * BILLION, "Brown et al. 2020, Table 2.1"),
    ("gpt3-175b", 175 * BILLION, "Brown et al. 2020, Table 2.1"),
    ("gpt2", 124 * MILLION, "openai-community/gpt2 model card (124M)"),
    ("gpt2-xl", 1.558 * BILLION, "Radford et al. 2019, Table 2 (1542M) / HF count 1.558B"),
    ("bert-base", 110 * MILLION, "Devlin et al. 2019 §3 (110M)"),
    ("bert-large", 335 * MILLION, "HF count of bert-large-uncased, 335M (Devlin et al. round it to 340M)"),
    ("llama2-7b", 6.74 * BILLION, "meta-llama/Llama-2-7b-hf model card (6.74B)"),
    ("llama2-70b", 70 * BILLION, "Touvron et al. 2023, Table 1 (70B)"),
    ("llama3-8b", 8.03 * BILLION, "meta-llama/Llama-3.1-8B (8.03B)"),
    ("llama3-70b", 70.6 * BILLION, "meta-llama/Llama-3.1-70B (70.6B)"),
    ("llama3-405b", 405 * BILLION, "Llama Team 2024, Table 3 (405B)"),
    ("mixtral-8x7b", 46.7 * BILLION, "Jiang et al. 2024 §2.1 (47B total; 46.7B in the model card)"),
    ("mpt-7b", 6.7 * BILLION, "mosaicml/mpt-7b model card (6.7B)"),
    ("mpt-30b", 30 * BILLION, "mosaicml/mpt-30b model card (30B)"),
    ("deepseek-v3", 685 * BILLION, "deepseek-ai/DeepSeek-V3 model card: 671B main model + 14B MTP module"),
    ("qwen3-30b-a3b", 30.5 * BILLION, "Qwen/Qwen3-30B-A3B model card (30.5B)"),
    ("qwen3-235b-a22b", 235 * BILLION, "Qwen/Qwen3-235B-A22B model card (235B)"),
    ("gpt-oss-120b", 116.83 * BILLION, "arXiv:2508.10925 Table 1 (116.83B total)"),
    ("mixtral-8x22b", 141 * BILLION, "mistralai/Mixtral-8x22B-v0.1 model card (141B)"),
]


@pytest.mark.parametrize("name, published, where", PUBLISHED_SIZES, ids=[p[0] for p in PUBLISHED_SIZES])
def test_parameter_count_matches_published(name: str, published: float, where: str) -> None:
    assert n_params(_model(name)) == pytest.approx(published, rel=0.03), where


def test_mixtral_active_parameters() -> None:
    """Jiang et al. 2024 §2.1: 13B active parameters per token (12.9B in the model card)."""
    assert n_params(_model("mixtral-8x7b"), active=True) == pytest.approx(12.9 * BILLION, rel=0.03)


# Narayanan et al. SC'21, Table 1, "Number of parameters (billion)", printed to 0.1B.
MEGATRON_TABLE1 = {"1.7b": 1.7, "3.6b": 3.6, "7.5b": 7.5, "18b": 18.4, "39b": 39.1, "76b": 76.1,
                   "145b": 145.6, "310b": 310.1, "530b": 529.6, "1t": 1008.0}


@pytest.mark.parametrize("size, billions", MEGATRON_TABLE1.items(), ids=list(MEGATRON_TABLE1))
def test_megatron_presets_reproduce_table1(size: str, billions: float) -> None:
    """The paper's own count, P = 12 l h^2 (1 + 13/(12h) + (V + s)/(12 l h)), from the preset's fields."""
    m = _model(f"megatron-gpt-{size}")
    l, h = m.layers, m.hidden
    count = 12 * l * h**2 * (1 + 13 / (12 * h) + (m.vocab + m.seq_len) / (12 * l * h))
    assert abs(count - billions * BILLION) <= (0.05 + 0.005 * billions) * BILLION


# --------------------------------------------------------------------------------------------------
# Nodes
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", NODE_FILES, ids=_stem)
def test_node_file_is_valid_and_sourced(path: Path) -> None:
    raw = _load(path)
    assert raw["name"] == _stem(path)
    assert set(raw) - {"nvlink_domain"} == {"name", "description", "devices_per_node", "intra_node", "inter_node",
                                            "sources"}
    assert raw.get("nvlink_domain", raw["devices_per_node"]) % raw["devices_per_node"] == 0
    assert isinstance(raw["devices_per_node"], int) and raw["devices_per_node"] > 0
    IntraNodeConfig(**raw["intra_node"])
    InterNodeConfig(**raw["inter_node"])
    _assert_sources_complete(raw)


@pytest.mark.parametrize("node, per_direction_gb_per_s, nic_gbit", [
    ("dgx-v100", 150, 100), ("dgx-a100", 300, 200), ("dgx-h100", 450, 400), ("dgx-b200", 900, 400),
])
def test_node_bandwidths(node: str, per_direction_gb_per_s: int, nic_gbit: int) -> None:
    raw = _load(PRESETS / "nodes" / f"{node}.yaml")
    assert IntraNodeConfig(**raw["intra_node"]).bandwidth == per_direction_gb_per_s * units.GB
    nic = InterNodeConfig(**raw["inter_node"]).nic_bandwidth
    assert nic == nic_gbit * units.GB / units.BITS_PER_BYTE
