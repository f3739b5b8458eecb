"""Activation memory (Korthikanti et al. 2022) and static memory (ZeRO, pipeline stages)."""

from __future__ import annotations

import pytest

from hwsim.config.schema import Dtype, ModelConfig, MoeConfig, Recompute
from hwsim.engine.task import MemKind
from hwsim.errors import ConfigError, PlanError
from hwsim.workload import ops as O
from hwsim.workload.memory import stage_layers, stage_params, static_memory_bytes
from hwsim.workload.shard import Shard

# The paper's GPT case: ffn = 4h, multi-head attention, gelu, dropout, fp16 activations.
B, S, H, A = 2, 2048, 1024, 16
GPT = ModelConfig(layers=8, hidden=H, heads=A, ffn_hidden=4 * H, vocab=4096, seq_len=S)
SBH = S * B * H
SCORES = 5 * A * S * S * B            # the 5as/h term times sbh
LLAMA = ModelConfig(layers=6, hidden=512, heads=8, kv_heads=2, ffn_hidden=1376, mlp="swiglu", vocab=4096, seq_len=256)
MOE = ModelConfig(layers=5, hidden=128, heads=4, ffn_hidden=512, mlp="gelu", vocab=512, seq_len=64,
                  moe=MoeConfig(experts=8, top_k=2, moe_ffn_hidden=256, dense_layers=1))


def _act(model, sh, mode, flash=True, moe=False):
    return O.layer_activation_bytes(model, sh, mode, moe_layer=moe, flash=flash)


@pytest.mark.parametrize("t", [1, 2, 4, 8])
def test_korthikanti_table2_tensor_parallel(t):
    sh = Shard(B, S, tp=t)
    # sbh(10 + 24/t + 5as/(ht)); selective recompute drops the 5as/(ht)
    assert _act(GPT, sh, Recompute.NONE, flash=False) == 10 * SBH + 24 * SBH // t + SCORES // t
    assert _act(GPT, sh, Recompute.SELECTIVE, flash=False) == 10 * SBH + 24 * SBH // t
    assert _act(GPT, sh, Recompute.SELECTIVE) == 10 * SBH + 24 * SBH // t
    # flash keeps no s² scores, only the fp32 logsumexp per query row and head
    assert _act(GPT, sh, Recompute.NONE) == 10 * SBH + 24 * SBH // t + 4 * B * A * S // t
    assert _act(GPT, sh, Recompute.FULL) == 2 * SBH


@pytest.mark.parametrize("t", [1, 2, 4, 8])
def test_korthikanti_table2_sequence_parallel(t):
    sh = Shard(B, S, tp=t, sequence_parallel=True)
    # sbh/t (34 + 5as/h)
    assert _act(GPT, sh, Recompute.NONE, flash=False) == (34 * SBH + SCORES) // t
    assert _act(GPT, sh, Recompute.SELECTIVE, flash=False) == 34 * SBH // t
    assert _act(GPT, sh, Recompute.NONE) == (34 * SBH + 4 * B * A * S) // t
    assert _act(GPT, sh, Recompute.FULL) == 2 * SBH // t


def test_no_parallelism_is_34_plus_5as_over_h():
    assert _act(GPT, Shard(B, S), Recompute.NONE, flash=False) == SBH * 34 + SCORES


def test_context_parallel_splits_activations():
    for mode in Recompute:
        whole = _act(LLAMA, Shard(2, 256, tp=2), mode)
        assert _act(LLAMA, Shard(2, 256, tp=2, cp=4), mode) * 4 == whole


def test_llama_family_generalisation():
    """swiglu, GQA, ffn ≠ 4h, no dropout, rotary: each saved tensor counted by name."""
    b, s, h, t = 2, 256, 512, 2
    d, a, kv, f = 64, 8 // t, 2 // t, 1376 // t
    T = b * s
    expected = (2 * T * h * 2            # the two norms' inputs (replicated over tp)
                + 2 * T * h * 2          # QKV input and MLP input (replicated)
                + T * (a + 2 * kv) * d * 2   # Q, K, V of the local heads
                + T * a * d * 2          # attention output (input of the projection)
                + 2 * T * f * 2          # gate and up outputs (inputs of silu·mul)
                + T * f * 2)             # input of the down projection; no dropout masks
    sh = Shard(b, s, tp=t)
    assert _act(LLAMA, sh, Recompute.SELECTIVE) == expected
    assert _act(LLAMA, sh, Recompute.NONE) == expected + 4 * b * a * s
    assert _act(LLAMA, sh, Recompute.NONE, flash=False) == expected + b * a * s * s * 2   # softmax only


def test_moe_layer_activations():
    b, s, h, k, e, f = 2, 64, 128, 2, 8, 256
    T = b * s
    dense_attn_part = (2 * T * h * 2      # the two norms' inputs
                       + T * h * 2        # QKV input
                       + T * 3 * h * 2    # Q, K, V
                       + T * h * 2        # attention output
                       + T * h)           # attention dropout mask
    moe_part = (T * h * 2                # router input (the normed tokens)
                + T * e * 4              # fp32 routing probabilities
                + T * k * h * 2          # permuted token copies (expert input)
                + T * k * f * 2 * 2      # gelu input and output of the experts
                + T * k * h * 2          # expert outputs kept for the routing-weight gradient
                + T * h)                 # MLP dropout mask
    assert _act(MOE, Shard(b, s), Recompute.SELECTIVE, moe=True) == dense_attn_part + moe_part


@pytest.mark.parametrize("n", [1, 8, 64])
def test_zero_accounting_mixed_precision(n):
    psi = 1e9
    expected = {0: (2, 2, 12), 1: (2, 2, 12 / n), 2: (2, 2 / n, 12 / n), 3: (2 / n, 2 / n, 12 / n)}
    for stage, (w, g, o) in expected.items():
        for precision in (Dtype.BF16, Dtype.FP16, Dtype.FP8):
            mem = static_memory_bytes(psi, stage, n, precision)
            assert mem == {MemKind.WEIGHTS: w * psi, MemKind.GRADIENTS: g * psi, MemKind.OPTIMIZER: o * psi}


def test_zero_accounting_fp32_and_sgd():
    psi, n = 1e6, 4
    assert static_memory_bytes(psi, 0, n, Dtype.FP32) == {
        MemKind.WEIGHTS: 4 * psi, MemKind.GRADIENTS: 4 * psi, MemKind.OPTIMIZER: 8 * psi}
    assert static_memory_bytes(psi, 3, n, Dtype.TF32)[MemKind.WEIGHTS] == 4 * psi / n
    assert static_memory_bytes(psi, 0, n, Dtype.BF16, "sgd")[MemKind.OPTIMIZER] == 8 * psi
    assert sum(static_memory_bytes(psi, 0, 1, Dtype.BF16).values()) == 16 * psi   # ZeRO Fig. 1: (2+2+K)Ψ
    with pytest.raises(ConfigError, match="zero_stage"):
        static_memory_bytes(psi, 4, n, Dtype.BF16)
    with pytest.raises(ConfigError, match="optimizer"):
        static_memory_bytes(psi, 0, n, Dtype.BF16, "adagrad")


@pytest.mark.parametrize("pp,v", [(1, 1), (2, 1), (4, 1), (3, 1), (2, 2), (2, 3)])
@pytest.mark.parametrize("tied", [False, True])
def test_stage_params_sum_to_the_model(pp, v, tied):
    model = MOE.model_copy(update={"layers": 7 if pp * v <= 7 else 8, "tied_embeddings": tied})
    total = sum(stage_params(model, pp, s, v) for s in range(pp))
    duplicate = model.vocab * model.hidden if tied and pp > 1 else 0
    assert total == O.param_count(model) + duplicate
    layers = [i for s in range(pp) for i in stage_layers(model.layers, pp, s, v)]
    assert sorted(layers) == list(range(model.layers))


def test_stage_params_tensor_parallel_shards_matrices_only():
    t, pp, h, v, L = 4, 2, GPT.hidden, GPT.vocab, GPT.layers
    total = sum(stage_params(GPT, pp, s, tp=t) for s in range(pp))
    matrices = L * (12 * h * h + 7 * h) + 2 * v * h        # layer matrices + column biases, embedding, head
    replicated = L * 6 * h + S * h + 2 * h                 # norms + row biases, positions, final norm
    assert total == matrices / t + replicated
    first = stage_params(GPT, pp, 0, tp=t)
    assert first == len(stage_layers(L, pp, 0)) * ((12 * h * h + 7 * h) / t + 6 * h) + v * h / t + S * h


def test_stage_params_expert_parallel():
    ep = 4
    whole = stage_params(MOE, 1, 0)
    experts_per_layer = 8 * (2 * 128 * 256 + 256 + 128)    # 8 experts: 2 matrices, up and down biases
    n_moe = MOE.layers - 1
    assert stage_params(MOE, 1, 0, ep=ep) == whole - n_moe * experts_per_layer * (1 - 1 / ep)


def test_stage_errors():
    with pytest.raises(PlanError, match="stage"):
        stage_params(GPT, 2, 2)
    with pytest.raises(PlanError, match="virtual stages"):
        stage_params(GPT, 4, 0, virtual_stages=4)
