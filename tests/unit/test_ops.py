"""Transformer ops: FLOPs against closed forms, shapes, collectives, parameter counts."""

from __future__ import annotations

from collections import Counter

import pytest

from hwsim.config.schema import Dtype, ModelConfig, MoeConfig
from hwsim.errors import ConfigError, PlanError
from hwsim.workload import ops as O
from hwsim.workload.shard import Shard

GPT = ModelConfig(layers=4, hidden=256, heads=8, ffn_hidden=1024, vocab=1024, seq_len=128)
LLAMA = ModelConfig(layers=3, hidden=256, heads=8, kv_heads=4, ffn_hidden=688, mlp="swiglu", vocab=2048,
                    seq_len=128, causal=False)
MOE = ModelConfig(layers=3, hidden=128, heads=4, kv_heads=2, ffn_hidden=512, mlp="swiglu", vocab=512, seq_len=64,
                  moe=MoeConfig(experts=8, top_k=2, moe_ffn_hidden=256, shared_experts=1, dense_layers=1))
GPT3 = ModelConfig(name="gpt3-175b", layers=96, hidden=12288, heads=96, ffn_hidden=49152, mlp="gelu", vocab=51200,
                   seq_len=2048)


def _sum(ops, kinds=(O.OpKind.GEMM, O.OpKind.ATTENTION), attr="flop"):
    return sum(getattr(o, attr) for o in ops if o.kind in kinds)


def _comms(ops):
    return Counter((o.comm[0], o.comm[1]) for o in ops if o.kind == O.OpKind.COMM)


def test_gpt_layer_forward_flops_closed_form():
    b, s, h = 2, GPT.seq_len, GPT.hidden
    fwd = O.layer_forward_ops(GPT, Shard(b, s), False)
    assert _sum(fwd, (O.OpKind.GEMM,)) == 24 * b * s * h * h           # QKV 6 + proj 2 + up 8 + down 8
    assert _sum(fwd, (O.OpKind.ATTENTION,)) == 4 * b * s * s * h / 2    # causal: half of 4·b·s²·h
    assert all(o.flop == 0 for o in fwd if o.kind == O.OpKind.MEMORY)
    attn = next(o for o in fwd if o.kind == O.OpKind.ATTENTION)
    assert attn.attention == (b, GPT.heads, s, s, h // GPT.heads, True)


def test_backward_gemm_shapes_and_flops():
    sh = Shard(2, LLAMA.seq_len)
    fwd = {o.name: o for o in O.layer_forward_ops(LLAMA, sh, False)}
    bwd = {o.name: o for o in O.layer_backward_ops(LLAMA, sh, False)}
    gemms = [o for o in fwd.values() if o.kind == O.OpKind.GEMM]
    assert {g.name for g in gemms} == {"qkv", "attn_proj", "mlp_gate_up", "mlp_down"}
    for g in gemms:
        m, n, k = g.gemm
        dx, dw = bwd[g.name + ".dx"], bwd[g.name + ".dw"]
        assert dx.gemm == (m, k, n) and dx.phase == O.Phase.BWD_INPUT
        assert dw.gemm == (k, n, m) and dw.phase == O.Phase.BWD_WEIGHT
        assert dx.flop == dw.flop == g.flop == 2 * m * n * k
    attn_f, attn_b = fwd["attn"], bwd["attn.bwd"]
    assert attn_b.flop == 2.5 * attn_f.flop and attn_b.model_flop == 2 * attn_f.flop
    assert attn_f.flop == 4 * 2 * 8 * 128 * 128 * 32                   # non-causal: not halved
    mem_f = [o for o in fwd.values() if o.kind == O.OpKind.MEMORY]
    for o in mem_f:
        assert bwd[o.name + ".bwd"].bytes_moved == 2 * o.bytes_moved


def test_gqa_and_swiglu_shapes():
    sh = Shard(1, LLAMA.seq_len, tp=2)
    fwd = {o.name: o for o in O.layer_forward_ops(LLAMA, sh, False)}
    d = LLAMA.hidden // LLAMA.heads
    assert fwd["qkv"].gemm == (128, (4 + 2 * 2) * d, 256)                # 8/2 query heads, 4/2 kv heads
    assert fwd["mlp_gate_up"].gemm == (128, 2 * 344, 256)
    assert fwd["mlp_down"].gemm == (128, 256, 344)
    assert "rotary" in fwd and "qkv_bias" not in fwd


@pytest.mark.parametrize("model", [GPT, LLAMA])
@pytest.mark.parametrize("tp,cp,sp", [(2, 1, False), (4, 1, True), (1, 2, False), (2, 4, True)])
def test_parallelism_divides_the_flops(model, tp, cp, sp):
    base_f = _sum(O.layer_forward_ops(model, Shard(2, model.seq_len), False))
    base_b = _sum(O.layer_backward_ops(model, Shard(2, model.seq_len), False))
    sh = Shard(2, model.seq_len, tp=tp, cp=cp, sequence_parallel=sp)
    assert _sum(O.layer_forward_ops(model, sh, False)) * tp * cp == base_f
    assert _sum(O.layer_backward_ops(model, sh, False)) * tp * cp == base_b


def test_tensor_parallel_collectives_without_and_with_sequence_parallel():
    b, s, h, t = 2, GPT.seq_len, GPT.hidden, 4
    size = b * s * h * 2
    plain = Shard(b, s, tp=t)
    fwd, bwd = O.layer_forward_ops(GPT, plain, False), O.layer_backward_ops(GPT, plain, False)
    assert _comms(fwd) == {("all-reduce", "tp"): 2} and _comms(bwd) == {("all-reduce", "tp"): 2}
    assert all(o.comm[2] == size for o in (*fwd, *bwd) if o.comm)
    sp = Shard(b, s, tp=t, sequence_parallel=True)
    fwd, bwd = O.layer_forward_ops(GPT, sp, False), O.layer_backward_ops(GPT, sp, False)
    assert _comms(fwd) == {("all-gather", "tp"): 2, ("reduce-scatter", "tp"): 2}
    # backward: all-gather of dY (mirror of the reduce-scatter), re-gather of the saved input,
    # reduce-scatter of dX (mirror of the all-gather) - Korthikanti et al. 2022, §4.2.2
    assert _comms(bwd) == {("all-gather", "tp"): 4, ("reduce-scatter", "tp"): 2}
    assert all(o.comm[2] == size for o in (*fwd, *bwd) if o.comm)
    assert _comms(O.layer_forward_ops(GPT, Shard(b, s), False)) == {}


def test_context_parallel_ring_exchange():
    b, s, cp, tp = 2, LLAMA.seq_len, 4, 2
    sh = Shard(b, s, tp=tp, cp=cp)
    fwd = O.layer_forward_ops(LLAMA, sh, False)
    names = [o.name for o in fwd]
    ring = fwd[names.index("cp_kv_ring")]
    kv_block = 2 * b * (s // cp) * (4 // tp) * 32 * 2                  # K and V of the local block, bf16
    assert ring.comm == ("send-recv", "cp", (cp - 1) * kv_block)
    assert ring.overlap_with == "attn" and names.index("cp_kv_ring") < names.index("attn")
    attn = fwd[names.index("attn")]
    assert attn.attention == (b, 8 // tp, s // cp, s, 32, False)
    bwd = {o.name: o for o in O.layer_backward_ops(LLAMA, sh, False)}
    assert bwd["cp_kv_ring.bwd"].comm[2] == 2 * (cp - 1) * kv_block and bwd["cp_kv_ring.bwd"].overlap_with == "attn.bwd"


def test_moe_layer_dispatch_and_experts():
    b, s, ep = 2, MOE.seq_len, 4
    sh = Shard(b, s, ep=ep)
    fwd = {o.name: o for o in O.layer_forward_ops(MOE, sh, True)}
    bwd = O.layer_backward_ops(MOE, sh, True)
    t = b * s
    a2a = t * 2 * MOE.hidden * 2                                         # T·top_k·h bf16 per rank
    assert _comms(fwd.values()) == {("all-to-all", "ep"): 2} and _comms(bwd) == {("all-to-all", "ep"): 2}
    assert all(o.comm[2] == a2a for o in (*fwd.values(), *bwd) if o.comm)
    up = fwd["expert_gate_up"]
    assert up.gemm_batch == 8 // ep and up.gemm == (t * 2 * ep // 8, 2 * 256, MOE.hidden)
    assert fwd["router"].gemm == (t, 8, MOE.hidden)
    assert [n for n in fwd if n.startswith("shared_")] == ["shared_gate_up", "shared_act", "shared_down"]
    # each device processes T·top_k token copies whatever ep is: expert FLOPs do not depend on ep
    one = {o.name: o for o in O.layer_forward_ops(MOE, Shard(b, s), True)}
    assert up.flop == one["expert_gate_up"].flop == 2 * t * 2 * 512 * MOE.hidden
    assert _comms(O.layer_forward_ops(MOE, Shard(b, s), True)) == {}


@pytest.mark.parametrize("model,moe,sh", [
    (GPT, False, Shard(2, 128, tp=4, sequence_parallel=True)), (GPT, False, Shard(1, 128, tp=2, cp=2)),
    (MOE, True, Shard(2, 64, tp=2, ep=2, sequence_parallel=True)), (MOE, True, Shard(2, 64, tp=2, cp=2, ep=4)),
    (LLAMA, False, Shard(1, 128, tp=2))])
def test_op_names_unique_and_overlaps_resolve(model, moe, sh):
    for ops in (O.layer_forward_ops(model, sh, moe), O.layer_backward_ops(model, sh, moe),
                *O.embedding_ops(model, sh), *O.head_ops(model, sh)):
        names = [o.name for o in ops]
        assert len(names) == len(set(names))
        for o in ops:
            assert (o.kind == O.OpKind.COMM) == (o.comm is not None)
            assert not o.overlap_with or o.overlap_with in names
            assert o.bytes_moved >= 0 and o.flop >= 0
        assert all(o.phase == O.Phase.FWD for o in ops) or all(o.phase != O.Phase.FWD for o in ops)


def _step_model_flop(model, global_batch, sh, dp):
    """Σ Op.model_flop over every op of every device of one step (tp·cp·dp devices, one stage)."""
    n_micro = global_batch // (sh.micro_batch * dp)
    per_mb = sum(o.model_flop for i in range(model.layers)
                 for o in (*O.layer_forward_ops(model, sh, O.is_moe_layer(model, i)),
                           *O.layer_backward_ops(model, sh, O.is_moe_layer(model, i))))
    per_mb += sum(o.model_flop for part in (*O.embedding_ops(model, sh), *O.head_ops(model, sh)) for o in part)
    return per_mb * n_micro * sh.tp * sh.cp * dp


@pytest.mark.parametrize("model,sh,dp", [
    (GPT, Shard(2, 128), 1), (GPT, Shard(2, 128, tp=2, cp=2, sequence_parallel=True), 2),
    (LLAMA, Shard(1, 128, tp=4, cp=2), 1), (MOE, Shard(2, 64), 1), (MOE, Shard(2, 64, cp=2, ep=2), 2)])
def test_model_flop_per_step_is_the_op_sum_exactly(model, sh, dp):
    assert _step_model_flop(model, 8, sh, dp) == O.model_flop_per_step(model, 8)


def test_model_flop_closed_form_for_gpt():
    l, h, s, v = GPT.layers, GPT.hidden, GPT.seq_len, GPT.vocab
    tokens = 8 * s
    expected = 6 * (12 * l * h * h + v * h) * tokens + l * 12 * s * h * tokens / 2
    assert O.model_flop_per_step(GPT, 8) == expected


def test_gpt3_175b_six_n_rule():
    """6·params·tokens is within 1% of the model FLOPs at seq 2048 (Kaplan et al. 2020, §2.1)."""
    assert O.param_count(GPT3) == pytest.approx(175e9, rel=0.005)
    tokens = 1536 * 2048
    ratio = O.model_flop_per_step(GPT3, 1536) / (6 * O.param_count(GPT3) * tokens)
    assert abs(ratio - 1) < 0.01


def test_param_counts_closed_forms():
    l, h, v, s = GPT3.layers, GPT3.hidden, GPT3.vocab, GPT3.seq_len
    # GPT family: 12h² + 13h per layer (Narayanan et al. SC'21 eq. before §5.1), untied head, positions
    assert O.param_count(GPT3) == l * (12 * h * h + 13 * h) + 2 * v * h + s * h + 2 * h
    tied = GPT3.model_copy(update={"tied_embeddings": True})
    assert O.param_count(GPT3) - O.param_count(tied) == v * h
    # Llama family: no biases, RMSNorm, GQA, swiglu
    hl, d = LLAMA.hidden, 32
    per_layer = hl * (8 + 8) * d + 8 * d * hl + 3 * hl * 688 + 2 * hl
    assert O.param_count(LLAMA) == LLAMA.layers * per_layer + 2 * LLAMA.vocab * hl + hl
    assert O.active_param_count(LLAMA) == O.param_count(LLAMA)


def test_mixtral_total_and_active_params():
    """Mixtral 8x7B: 46.7B total, 12.9B active (Jiang et al. 2024, "Mixtral of Experts", §2; HF model card)."""
    mx = ModelConfig(layers=32, hidden=4096, heads=32, kv_heads=8, ffn_hidden=14336, mlp="swiglu", vocab=32000,
                     seq_len=4096, moe=MoeConfig(experts=8, top_k=2))
    assert O.param_count(mx) == pytest.approx(46.7e9, rel=0.002)
    assert O.active_param_count(mx) == pytest.approx(12.9e9, rel=0.002)


def test_layer_param_count_sharding():
    h, t = GPT.hidden, 4
    assert O.layer_param_count(GPT, False) == 12 * h * h + 13 * h
    # matrices and column-parallel biases (QKV 3h, up 4h) split; norms 4h and row biases 2h replicated
    assert O.layer_param_count(GPT, False, tp=t) == (12 * h * h + 7 * h) / t + 6 * h
    whole = O.layer_param_count(MOE, True)
    experts = 8 * 3 * 128 * 256
    assert O.layer_param_count(MOE, True, ep=4) == whole - experts + experts / 4


def test_head_and_embedding_ops():
    b, s, h, v, t = 2, GPT.seq_len, GPT.hidden, GPT.vocab, 4
    sh = Shard(b, s, tp=t)
    head = O.head_ops(GPT, sh)
    logits = next(o for o in head.forward if o.name == "logits")
    assert logits.gemm == (b * s, v // t, h)
    assert _comms(head.forward) == {("all-reduce", "tp"): 3}                   # max, target logit, sum exp
    assert _sum([*head.forward, *head.backward], (O.OpKind.GEMM,)) == 6 * b * s * v * h / t
    assert _comms(O.head_ops(GPT, Shard(b, s)).forward) == {}
    assert O.head_activation_bytes(GPT, sh) == b * s * h * 2 * 2 + b * s * (v // t) * 4
    emb = O.embedding_ops(GPT, sh)
    assert _comms(emb.forward) == {("all-reduce", "tp"): 1} and _comms(emb.backward) == {}
    emb_sp = O.embedding_ops(GPT, Shard(b, s, tp=t, sequence_parallel=True))
    assert _comms(emb_sp.forward) == {("reduce-scatter", "tp"): 1}
    assert _comms(emb_sp.backward) == {("all-gather", "tp"): 1}
    assert O.embedding_activation_bytes(GPT, sh) == b * s * h                  # 1-byte dropout mask
    assert O.embedding_activation_bytes(LLAMA, Shard(b, s)) == 0               # Llama: no dropout
    assert all(o.phase == O.Phase.BWD_WEIGHT for o in emb.backward if o.name == "embed.dw")


def test_fp8_gemms_move_fewer_bytes_same_flops():
    a = {o.name: o for o in O.layer_forward_ops(GPT, Shard(2, 128), False)}
    f = {o.name: o for o in O.layer_forward_ops(GPT, Shard(2, 128, fp8=True), False)}
    m, n, k = a["qkv"].gemm
    assert f["qkv"].flop == a["qkv"].flop
    assert a["qkv"].bytes_moved - f["qkv"].bytes_moved == m * k + k * n          # operands 1 byte instead of 2


def test_optimizer_ops_bytes():
    (adam,) = O.optimizer_ops(1000.0)
    assert adam.bytes_moved == 1000 * 30 and adam.phase == O.Phase.OPTIMIZER and adam.flop == 0
    assert O.optimizer_ops(1000.0, Dtype.FP32)[0].bytes_moved == 1000 * 28
    assert O.optimizer_ops(10.0, Dtype.BF16, grad_bytes=2)[0].bytes_moved == 10 * 28
    with pytest.raises(ConfigError, match="optimizer"):
        O.optimizer_ops(1.0, optimizer="lion")


def test_impossible_splits_are_plan_errors():
    with pytest.raises(PlanError, match="heads"):
        O.layer_forward_ops(GPT, Shard(1, 128, tp=3), False)
    with pytest.raises(PlanError, match="kv_heads"):
        O.layer_forward_ops(LLAMA, Shard(1, 128, tp=8), False)
    with pytest.raises(PlanError, match="experts"):
        O.layer_forward_ops(MOE, Shard(1, 64, ep=3), True)
    with pytest.raises(PlanError, match="cp"):
        Shard(1, 100, cp=3)
    with pytest.raises(PlanError, match="sequence parallelism"):
        Shard(1, 6, tp=4, sequence_parallel=True)
    with pytest.raises(ConfigError, match="moe"):
        O.layer_forward_ops(GPT, Shard(1, 128), True)
