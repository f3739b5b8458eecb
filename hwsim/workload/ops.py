"""Transformer ops: FLOPs, HBM bytes, activation bytes and collectives of one layer on one device.

Pure functions; no SimPy and no timing (the compiler asks `hwsim.hardware.kernels` for times
from the shapes given here). Everything is per device for one micro-batch (`Shard`), tokens
T = micro_batch·seq_len/cp.

Conventions, stated once:
- A GEMM (m, n, k) costs 2·m·n·k FLOP. Its backward is dX = dY·Wᵀ, shape (m, k, n), and
  dW = Xᵀ·dY, shape (k, n, m); each as many FLOPs as the forward.
- Attention follows flash-attention's benchmark (Dao-AILab/flash-attention,
  benchmarks/benchmark_flash_attention.py, `flops()`): forward 4·b·a·s_q·s_kv·d FLOP, halved
  when causal (the masked half is skipped); backward 2.5× forward: five s×s matmuls against
  the forward's two, one of which recomputes QKᵀ. That recomputed 0.5× is `recompute_flop`:
  hardware FLOPs (HFU) count it, model FLOPs (MFU) do not, so attention's model FLOPs are
  3× forward, 12·s·a·d per token and layer (6·s·a·d causal), as PaLM (Chowdhery et al.
  2022, App. B) counts them.
- Memory-bound kernels (norms, activations, residuals, rotary, routing, loss, optimizer)
  carry bytes and no FLOPs: their vector FLOPs are not tensor-core FLOPs, MFU conventions count
  matmuls only, and their time is bytes-bound. Their backward moves ~2× the forward bytes.
- Collective sizes follow nccl-tests (NVIDIA/nccl-tests, doc/PERFORMANCE.md): all-reduce the
  buffer; all-gather and reduce-scatter the full (gathered) tensor; all-to-all the whole send
  buffer of a rank; send-recv the bytes sent.
- Tensor parallelism is Megatron-LM's (Shoeybi et al. 2019, §3, the f/g operators): without
  sequence parallelism an all-reduce after each row-parallel GEMM in the forward and after
  each column-parallel GEMM's dX in the backward. With it (Korthikanti et al. 2022, §4.2.2):
  all-gather before, reduce-scatter after, and in the backward an all-gather of dY, the
  re-gather of the saved sharded input for dW (overlapped with dX) and a reduce-scatter of dX
  (overlapped with dW).
- `saved_bytes` of forward ops follow Korthikanti et al. 2022 ("Reducing Activation
  Recomputation in Large Transformer Models", §4.1 and Table 2): see
  `layer_activation_bytes` and the per-op comments.

Over 400 lines on purpose: each block's forward and backward sit side by side, so that their
shapes, collectives and saved tensors can be read (and reviewed) against each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from hwsim.config.schema import Dtype, MlpKind, ModelConfig, Recompute
from hwsim.errors import ConfigError
from hwsim.workload import moe as M
from hwsim.workload import shard as S
from hwsim.workload.memory import FP32_BYTES, optimizer_state_bytes_per_param  # fp32: logsumexp, loss softmax, main grads
from hwsim.workload.shard import (Shard, active_param_count, is_moe_layer, layer_matmul_params,
                                  layer_param_count, param_count)

__all__ = [
    "OpKind", "Phase", "Collective", "Group", "Op", "FwdBwd",
    "layer_forward_ops", "layer_backward_ops", "embedding_ops", "head_ops", "optimizer_ops",
    "layer_activation_bytes", "op_sac_activation_bytes", "head_activation_bytes", "head_transient_bytes", "embedding_activation_bytes",
    "param_count", "active_param_count", "layer_param_count", "is_moe_layer", "model_flop_per_step",
    "ATTN_BWD_FLOP_RATIO", "ATTN_BWD_RECOMPUTE_RATIO", "FP32_BYTES", "MASK_BYTES",
]

MASK_BYTES = 1            # a dropout mask element (Korthikanti et al. 2022, §4.1: "sbh for the dropout mask")
ATTN_BWD_FLOP_RATIO = 2.5       # flash-attention benchmark: bwd = 2.5 × fwd (5 matmuls vs 2)
ATTN_BWD_RECOMPUTE_RATIO = 0.5  # of which the recomputation of QKᵀ (1 of the 5 matmuls)
# Attention without flash (teaching only), HBM bytes per s×s score element, fp16 with dropout:
# write S 2, read 2, write P 2, mask 1, write dropout(P) 2, read it for P·V 2.
NON_FLASH_SCORE_BYTES = 11


class OpKind(StrEnum):
    GEMM = "gemm"
    ATTENTION = "attention"
    MEMORY = "memory"
    COMM = "comm"


class Phase(StrEnum):
    FWD = "fwd"
    BWD_INPUT = "bwd_input"
    BWD_WEIGHT = "bwd_weight"
    OPTIMIZER = "optimizer"


class Collective(StrEnum):
    ALL_REDUCE = "all-reduce"
    ALL_GATHER = "all-gather"
    REDUCE_SCATTER = "reduce-scatter"
    ALL_TO_ALL = "all-to-all"
    ALL_TO_ALL_FUSED = "all-to-all-fused"   # DeepEP / HybridEP kernels (the flex dispatcher)
    SEND_RECV = "send-recv"


class Group(StrEnum):
    TP = "tp"
    CP = "cp"
    EP = "ep"
    ETP = "etp"      # expert tensor parallel (MoE parallel folding)
    TPEP = "tpep"    # the etp·ep ranks sharing an expert-data-parallel index (all-gather dispatcher)


@dataclass(frozen=True, slots=True)
class Op:
    """One kernel or collective of one device. `recompute_flop`: the part of `flop` that redoes
    forward work (flash-attention's backward recomputes QKᵀ); `model_flop` excludes it.
    `overlap_with`: for a collective, the name of an op of the same tuple it may run
    concurrently with (no data dependence between them)."""

    name: str
    kind: OpKind
    phase: Phase
    flop: float = 0.0
    bytes_moved: float = 0.0
    gemm: tuple[int, int, int] | None = None
    gemm_batch: int = 1
    attention: tuple[int, int, int, int, int, bool] | None = None
    comm: tuple[str, str, float] | None = None
    saved_bytes: float = 0.0
    recompute_flop: float = 0.0
    overlap_with: str = ""

    @property
    def model_flop(self) -> float:
        return self.flop - self.recompute_flop


class FwdBwd(NamedTuple):
    forward: tuple[Op, ...]
    backward: tuple[Op, ...]


@dataclass(frozen=True, slots=True)
class _Ctx:
    model: ModelConfig
    shard: Shard
    dims: S.LocalDims
    fam: S.Family
    db: int          # activation bytes per element
    in_b: int        # GEMM operand bytes (1 with fp8)
    t: int           # tokens on this device (replicated over tp)
    ts: int          # tokens of norms/residuals (split over tp with sequence parallelism)
    window: int = 0  # sliding-window attention span of this layer (0: full attention)

    @property
    def tp_comm(self) -> bool:
        return self.shard.tp > 1

    @property
    def sp(self) -> bool:
        return self.shard.sequence_parallel and self.shard.tp > 1

    @property
    def act_bytes(self) -> float:
        """One hidden-sized activation of all local tokens, T·h·db (the size of tp collectives)."""
        return float(self.t * self.model.hidden * self.db)


def _ctx(model: ModelConfig, shard: Shard, windowed: bool = False) -> _Ctx:
    # a window only where it is shorter than the sequence and the sequence is not split over cp
    window = (model.sliding_window.window if windowed and model.sliding_window is not None
              and model.sliding_window.window < shard.seq_len and shard.cp == 1 else 0)
    return _Ctx(model, shard, S.local_dims(model, shard.tp, shard.ep, shard.etp), S.family(model), shard.dtype_bytes,
                1 if shard.fp8 else shard.dtype_bytes, shard.tokens, shard.sp_tokens, window)


def _gemm(c: _Ctx, name: str, m_exact: float, n: int, k: int, batch: int = 1, saved: float = 0.0,
          phase: Phase = Phase.FWD) -> Op:
    """A GEMM; `m_exact` may be fractional (tokens per expert): FLOPs use it, the shape its ceiling."""
    m = math.ceil(m_exact)
    flop = 2.0 * m_exact * n * k * batch
    bytes_moved = float(batch * ((m * k + k * n) * c.in_b + m * n * c.db))
    return Op(name, OpKind.GEMM, phase, flop=flop, bytes_moved=bytes_moved, gemm=(m, n, k), gemm_batch=batch,
              saved_bytes=saved)


def _grads(c: _Ctx, op: Op) -> tuple[Op, Op]:
    """dX = dY·Wᵀ (m, k, n) and dW = Xᵀ·dY (k, n, m) of a forward GEMM."""
    m, n, k = op.gemm
    b = op.gemm_batch
    dx = Op(op.name + ".dx", OpKind.GEMM, Phase.BWD_INPUT, flop=op.flop, gemm=(m, k, n), gemm_batch=b,
            bytes_moved=float(b * ((m * n + n * k) * c.in_b + m * k * c.db)))
    dw = Op(op.name + ".dw", OpKind.GEMM, Phase.BWD_WEIGHT, flop=op.flop, gemm=(k, n, m), gemm_batch=b,
            bytes_moved=float(b * ((k * m + m * n) * c.in_b + k * n * c.db)))
    return dx, dw


def _mem(name: str, bytes_moved: float, saved: float = 0.0, phase: Phase = Phase.FWD) -> Op:
    return Op(name, OpKind.MEMORY, phase, bytes_moved=float(bytes_moved), saved_bytes=float(saved))


def _mem_bwd(op: Op) -> Op:
    return _mem(op.name + ".bwd", 2 * op.bytes_moved, phase=Phase.BWD_INPUT)


def _comm(name: str, coll: Collective, group: Group, size: float, phase: Phase = Phase.FWD,
          overlap: str = "") -> Op:
    return Op(name, OpKind.COMM, phase, comm=(coll.value, group.value, float(size)), overlap_with=overlap)


def _norm(c: _Ctx, name: str) -> Op:
    """LayerNorm/RMSNorm over the local tokens: read and write T·h; keeps its input."""
    x = c.ts * c.model.hidden * c.db
    return _mem(name, 2 * x, saved=x)


def _residual(c: _Ctx, name: str) -> Op:
    """Bias + dropout + residual add: read two, write one; keeps the 1-byte dropout mask."""
    x = c.ts * c.model.hidden
    mask = x * MASK_BYTES if c.fam.dropout else 0
    return _mem(name, 3 * x * c.db + mask, saved=mask)


def _tp_entry_fwd(c: _Ctx, name: str) -> list[Op]:
    return [_comm(name, Collective.ALL_GATHER, Group.TP, c.act_bytes)] if c.sp else []


def _tp_exit_fwd(c: _Ctx, name: str) -> list[Op]:
    if not c.tp_comm:
        return []
    coll = Collective.REDUCE_SCATTER if c.sp else Collective.ALL_REDUCE
    return [_comm(name, coll, Group.TP, c.act_bytes)]


def _tp_exit_bwd(c: _Ctx, name: str) -> list[Op]:
    """g's backward: identity without SP; with SP the reduce-scatter becomes an all-gather of dY."""
    return [_comm(name + ".bwd", Collective.ALL_GATHER, Group.TP, c.act_bytes, Phase.BWD_INPUT)] if c.sp else []


def _column_bwd(c: _Ctx, gemm: Op, entry: str) -> list[Op]:
    """Backward of the GEMM that opens a tensor-parallel region, with f's backward collective."""
    dx, dw = _grads(c, gemm)
    if not c.tp_comm:
        return [dx, dw]
    if c.sp:
        return [_comm(entry + ".regather", Collective.ALL_GATHER, Group.TP, c.act_bytes, Phase.BWD_INPUT, dx.name),
                dx, _comm(entry + ".bwd", Collective.REDUCE_SCATTER, Group.TP, c.act_bytes, Phase.BWD_INPUT, dw.name),
                dw]
    return [dx, _comm(gemm.name + ".dx_ar", Collective.ALL_REDUCE, Group.TP, c.act_bytes, Phase.BWD_INPUT, dw.name),
            dw]


# --- attention block --------------------------------------------------------------------------

def _attention_shape(c: _Ctx) -> tuple[int, int, int, int, int, bool]:
    """(b, heads, s_q, s_kv, d, causal). A sliding window of w is a kernel over s_q queries and w
    keys each (FlashAttention's local attention skips the blocks outside the window)."""
    sh = c.shard
    if c.window:
        return (sh.micro_batch, c.dims.heads, sh.local_seq_len, c.window, c.dims.head_dim, False)
    return (sh.micro_batch, c.dims.heads, sh.local_seq_len, sh.seq_len, c.dims.head_dim, c.model.causal)


def _attention_flop(c: _Ctx) -> float:
    b, a, sq, skv, d, causal = _attention_shape(c)
    if c.window:   # query i sees min(i, w) keys: s·w − w(w−1)/2 scores per head
        w = c.window
        return 4.0 * b * a * d * (sq * w - w * (w - 1) / 2)
    return 4.0 * b * a * sq * skv * d * (0.5 if causal else 1.0)


def _kv_len(c: _Ctx) -> int:
    """Keys and values the kernel reads: the whole sequence (a window still reads every key once)."""
    b, a, sq, skv, d, causal = _attention_shape(c)
    return sq if c.window else skv


def _kv_block_bytes(c: _Ctx) -> float:
    """The local K and V block of this cp rank."""
    return float(2 * c.t * c.dims.kv_heads * c.dims.head_dim * c.db)


def _attention_internal_saved(c: _Ctx, flash: bool) -> float:
    """What the attention core keeps beyond Q, K, V: flash keeps the fp32 logsumexp per query
    row; without flash the s×s scores as Korthikanti §4.1 counts them: softmax output (db),
    and with attention dropout its mask (1 B) and output (db): 5·a·s²·b for fp16 GPT."""
    b, a, sq, skv, _, _ = _attention_shape(c)
    if flash:
        return float(b * a * sq * FP32_BYTES)
    per_score = c.db + (MASK_BYTES + c.db if c.fam.dropout else 0)
    return float(b * a * sq * skv * per_score)


def _attention_fwd(c: _Ctx, flash: bool) -> Op:
    b, a, sq, skv, d, _ = _attention_shape(c)
    q = b * a * sq * d
    kv = 2 * b * c.dims.kv_heads * _kv_len(c) * d
    stats = b * a * sq * FP32_BYTES
    bytes_moved = (2 * q + kv) * c.db + stats                   # read Q, K, V; write O and logsumexp
    if not flash:
        bytes_moved += b * a * sq * skv * NON_FLASH_SCORE_BYTES
    qkv_saved = c.t * (c.dims.heads + 2 * c.dims.kv_heads) * d * c.db
    return Op("attn", OpKind.ATTENTION, Phase.FWD, flop=_attention_flop(c), bytes_moved=float(bytes_moved),
              attention=_attention_shape(c), saved_bytes=float(qkv_saved + _attention_internal_saved(c, flash)))


def _attention_bwd(c: _Ctx, fwd: Op, flash: bool) -> Op:
    b, a, sq, skv, d, _ = _attention_shape(c)
    q = b * a * sq * d
    kv = 2 * b * c.dims.kv_heads * _kv_len(c) * d
    bytes_moved = (4 * q + 2 * kv) * c.db + 2 * b * a * sq * FP32_BYTES  # read Q,K,V,O,dO,lse; write dQ,dK,dV
    if not flash:   # the scores, twice the forward's traffic
        bytes_moved += 2 * b * a * sq * skv * NON_FLASH_SCORE_BYTES
    return Op("attn.bwd", OpKind.ATTENTION, Phase.BWD_INPUT, flop=ATTN_BWD_FLOP_RATIO * fwd.flop,
              recompute_flop=ATTN_BWD_RECOMPUTE_RATIO * fwd.flop, bytes_moved=float(bytes_moved),
              attention=fwd.attention)


def _qkv_elementwise(c: _Ctx) -> Op:
    """GPT family: the QKV bias add; Llama family: rotary embedding on Q and K."""
    d = c.dims.head_dim
    if c.fam.bias:
        return _mem("qkv_bias", 2 * c.t * (c.dims.heads + 2 * c.dims.kv_heads) * d * c.db)
    return _mem("rotary", 2 * c.t * (c.dims.heads + c.dims.kv_heads) * d * c.db)


def _attention_block_fwd(c: _Ctx, flash: bool) -> list[Op]:
    h, d, a, kv = c.model.hidden, c.dims.head_dim, c.dims.heads, c.dims.kv_heads
    ops = [_norm(c, "attn_norm"), *_tp_entry_fwd(c, "attn_ag"),
           # keeps its input: the full replicated one without SP, the sharded one with SP (re-gathered in bwd)
           _gemm(c, "qkv", c.t, (a + 2 * kv) * d, h, saved=c.ts * h * c.db),
           _qkv_elementwise(c)]
    if c.shard.cp > 1:   # ring attention: cp−1 steps pass the local KV block around the cp ring
        ops.append(_comm("cp_kv_ring", Collective.SEND_RECV, Group.CP, (c.shard.cp - 1) * _kv_block_bytes(c),
                         overlap="attn"))
    ops += [_attention_fwd(c, flash),
            _gemm(c, "attn_proj", c.t, h, a * d, saved=c.t * a * d * c.db),   # keeps the attention output
            *_tp_exit_fwd(c, "attn_tp"), _residual(c, "attn_resid")]
    return ops


def _mla_block_fwd(c: _Ctx, flash: bool) -> list[Op]:
    """Multi-head latent attention (shard.py's docstring): the down projections of the query and of
    the key-value latent (+ the shared RoPE key) on the whole hidden, their RMSNorms, the up
    projections per head, rotary on the RoPE parts, the attention core with d_qk = nope + rope
    and d_v, the output projection."""
    m, h, a = c.model.mla, c.model.hidden, c.dims.heads
    qk, v = m.qk_nope_head_dim + m.qk_rope_head_dim, m.v_head_dim
    kv_down = m.kv_lora_rank + m.qk_rope_head_dim
    ops = [_norm(c, "attn_norm"), *_tp_entry_fwd(c, "attn_ag")]
    if m.q_lora_rank:
        ops += [_gemm(c, "q_down", c.t, m.q_lora_rank, h, saved=c.ts * h * c.db),
                _mem("q_norm", 2 * c.t * m.q_lora_rank * c.db, saved=c.t * m.q_lora_rank * c.db),
                _gemm(c, "q_up", c.t, a * qk, m.q_lora_rank, saved=c.t * m.q_lora_rank * c.db)]
    else:
        ops.append(_gemm(c, "q_down", c.t, a * qk, h, saved=c.ts * h * c.db))
    ops += [_gemm(c, "kv_down", c.t, kv_down, h),                    # same input as q_down: kept once
            _mem("kv_norm", 2 * c.t * m.kv_lora_rank * c.db, saved=c.t * m.kv_lora_rank * c.db),
            _gemm(c, "kv_up", c.t, a * (m.qk_nope_head_dim + v), m.kv_lora_rank, saved=c.t * m.kv_lora_rank * c.db),
            _mem("rotary", 2 * c.t * (a + 1) * m.qk_rope_head_dim * c.db)]
    if c.shard.cp > 1:
        ops.append(_comm("cp_kv_ring", Collective.SEND_RECV, Group.CP, (c.shard.cp - 1) * _kv_block_bytes(c),
                         overlap="attn"))
    attn = _attention_fwd(c, flash)
    # what the core keeps: Q (a·qk), K (a·qk), V (a·v) per token, and its statistics
    attn = Op(attn.name, attn.kind, attn.phase, flop=attn.flop, bytes_moved=attn.bytes_moved, attention=attn.attention,
              saved_bytes=float(c.t * a * (2 * qk + v) * c.db + _attention_internal_saved(c, flash)))
    ops += [attn, _gemm(c, "attn_proj", c.t, h, a * v, saved=c.t * a * v * c.db),
            *_tp_exit_fwd(c, "attn_tp"), _residual(c, "attn_resid")]
    return ops


def _mla_block_bwd(c: _Ctx, fwd: list[Op], flash: bool) -> list[Op]:
    by = {o.name: o for o in fwd}
    ops = [_mem_bwd(by["attn_resid"]), *_tp_exit_bwd(c, "attn_tp"), *_grads(c, by["attn_proj"])]
    if c.shard.cp > 1:
        ops.append(_comm("cp_kv_ring.bwd", Collective.SEND_RECV, Group.CP,
                         2 * (c.shard.cp - 1) * _kv_block_bytes(c), Phase.BWD_INPUT, "attn.bwd"))
    ops += [_attention_bwd(c, by["attn"], flash), _mem_bwd(by["rotary"]), *_grads(c, by["kv_up"]),
            _mem_bwd(by["kv_norm"])]
    if "q_up" in by:
        ops += [*_grads(c, by["q_up"]), _mem_bwd(by["q_norm"])]
    # the two down projections read the same (gathered) input: one tp reduction of their dX
    ops += [*_grads(c, by["q_down"]), *_column_bwd(c, by["kv_down"], "attn_ag"), _mem_bwd(by["attn_norm"])]
    return ops


def _attention_block_bwd(c: _Ctx, fwd: list[Op], flash: bool) -> list[Op]:
    by = {o.name: o for o in fwd}
    ops = [_mem_bwd(by["attn_resid"]), *_tp_exit_bwd(c, "attn_tp"), *_grads(c, by["attn_proj"])]
    if c.shard.cp > 1:   # K,V blocks go round again, and their gradients come back
        ops.append(_comm("cp_kv_ring.bwd", Collective.SEND_RECV, Group.CP,
                         2 * (c.shard.cp - 1) * _kv_block_bytes(c), Phase.BWD_INPUT, "attn.bwd"))
    elementwise = by["qkv_bias"] if "qkv_bias" in by else by["rotary"]
    ops += [_attention_bwd(c, by["attn"], flash), _mem_bwd(elementwise), *_column_bwd(c, by["qkv"], "attn_ag"),
            _mem_bwd(by["attn_norm"])]
    return ops


# --- MLP and MoE blocks -----------------------------------------------------------------------

def _mlp_ops(c: _Ctx, prefix: str, tokens: float, ffn: int, batch: int = 1, keep_input: float = 0.0) -> list[Op]:
    """Up (gelu) or fused gate+up (swiglu), the activation, down; `tokens` per GEMM batch entry.
    Keeps: the up input (`keep_input`), the activation input (gelu: T·f; swiglu: gate and up,
    2·T·f) and the down input (T·f)."""
    h, n_tok = c.model.hidden, tokens * batch
    swiglu = c.model.mlp == MlpKind.SWIGLU
    up = _gemm(c, f"{prefix}_gate_up" if swiglu else f"{prefix}_up", tokens, (2 if swiglu else 1) * ffn, h,
               batch, saved=keep_input)
    act_in = (2 if swiglu else 1) * n_tok * ffn * c.db
    act = _mem(f"{prefix}_act", act_in + n_tok * ffn * c.db, saved=act_in)
    down = _gemm(c, f"{prefix}_down", tokens, h, ffn, batch, saved=n_tok * ffn * c.db)
    return [up, act, down]


def _mlp_ops_bwd(c: _Ctx, fwd: list[Op], first_is_column: bool, entry: str) -> list[Op]:
    up, act, down = fwd
    first = _column_bwd(c, up, entry) if first_is_column else list(_grads(c, up))
    return [*_grads(c, down), _mem_bwd(act), *first]


def _mlp_block_fwd(c: _Ctx) -> list[Op]:
    return [_norm(c, "mlp_norm"), *_tp_entry_fwd(c, "mlp_ag"),
            *_mlp_ops(c, "mlp", c.t, c.dims.ffn, keep_input=c.ts * c.model.hidden * c.db),
            *_tp_exit_fwd(c, "mlp_tp"), _residual(c, "mlp_resid")]


def _mlp_block_bwd(c: _Ctx, fwd: list[Op]) -> list[Op]:
    by = {o.name: o for o in fwd}
    core = [o for o in fwd if o.name.startswith("mlp_") and o.kind != OpKind.COMM
            and o.name not in ("mlp_norm", "mlp_resid")]
    return [_mem_bwd(by["mlp_resid"]), *_tp_exit_bwd(c, "mlp_tp"), *_mlp_ops_bwd(c, core, True, "mlp_ag"),
            _mem_bwd(by["mlp_norm"])]


def _moe_tokens(c: _Ctx) -> M.RankTokens:
    """Token counts of this rank's MoE layer (hwsim.workload.moe). Each tp rank routes its 1/tp of
    the tokens: Megatron-Core runs MoE layers with sequence parallelism when tp > 1 (MoELayer
    refuses tp without it in training), so the dispatcher starts from the sequence-parallel shard."""
    moe, sh = c.model.moe, c.shard
    return M.rank_tokens(c.t / sh.tp, moe.experts, moe.top_k, sh.ep, sh.etp, sh.dispatcher,
                         moe.imbalance, moe.capacity_factor)


def _moe_block_fwd(c: _Ctx) -> list[Op]:
    """Router (GEMM, softmax/sigmoid and top-k in fp32, keeps the probabilities), the dispatcher's
    permute and collectives (hwsim.workload.moe), the local experts as one grouped GEMM per
    matrix, the combine, the shared experts (a tensor-parallel MLP of shared·moe_ffn), and the
    weighted un-permute."""
    h, d, moe, sh = c.model.hidden, c.dims, c.model.moe, c.shard
    rt = _moe_tokens(c)
    row = h * c.db
    local = d.experts
    disp = M.MoeDispatcher(sh.dispatcher)
    ops = [_norm(c, "mlp_norm"),
           _gemm(c, "router", rt.routed, moe.experts, h, saved=rt.routed * row),      # keeps the normed input
           _mem("router_topk", rt.routed * moe.experts * (c.db + FP32_BYTES) + 2 * rt.routed * moe.top_k * FP32_BYTES,
                saved=rt.routed * moe.experts * FP32_BYTES)]
    # the busiest rank's buffer sets the all-to-all's pace; NCCL's (alltoall dispatcher) or the
    # fused kernels' (flex: DeepEP / HybridEP write into the peers' memory)
    a2a = max(rt.sent, rt.received if disp == M.MoeDispatcher.ALLTOALL else rt.sent * moe.imbalance) * row
    a2a_op = Collective.ALL_TO_ALL_FUSED if disp == M.MoeDispatcher.FLEX else Collective.ALL_TO_ALL
    if disp == M.MoeDispatcher.ALLGATHER:
        group = sh.ep * sh.etp
        if group > 1:
            ops.append(_comm("moe_dispatch", Collective.ALL_GATHER, Group.TPEP, rt.routed * group * row))
        ops.append(_mem("moe_permute", rt.routed * group * row + rt.expert_rows * row))
    else:
        if disp == M.MoeDispatcher.ALLTOALL:
            ops.append(_mem("moe_permute", rt.routed * row + rt.sent * row))
        if sh.ep > 1:
            ops.append(_comm("moe_dispatch", a2a_op, Group.EP, a2a))
        if sh.etp > 1:
            ops.append(_comm("moe_etp_ag", Collective.ALL_GATHER, Group.ETP, rt.expert_rows * row))
        if disp == M.MoeDispatcher.FLEX:   # the received rows into expert order (fused TE permute)
            ops.append(_mem("moe_permute", (rt.sent * moe.imbalance + rt.expert_rows) * row))
        elif local > 1:                    # sort_chunks_by_idxs: the received chunks by local expert
            ops.append(_mem("moe_sort", 2 * rt.expert_rows * row))
    ops += _mlp_ops(c, "expert", rt.per_expert, d.moe_ffn, batch=local, keep_input=rt.expert_rows * row)
    if disp == M.MoeDispatcher.ALLGATHER:
        ops.append(_mem("moe_unpermute", rt.expert_rows * row + rt.routed * sh.ep * sh.etp * row,
                        saved=rt.expert_rows * row))
        if sh.ep * sh.etp > 1:
            ops.append(_comm("moe_combine", Collective.REDUCE_SCATTER, Group.TPEP, rt.routed * sh.ep * sh.etp * row))
    else:
        if disp == M.MoeDispatcher.ALLTOALL and local > 1:
            ops.append(_mem("moe_unsort", 2 * rt.expert_rows * row))
        if sh.etp > 1:
            ops.append(_comm("moe_etp_rs", Collective.REDUCE_SCATTER, Group.ETP, rt.expert_rows * row))
        if disp == M.MoeDispatcher.FLEX:   # back to the received order; the combine kernel sums with the weights
            ops.append(_mem("moe_unpermute", (rt.received + rt.sent * moe.imbalance) * row + rt.routed * row,
                            saved=rt.received * row))
        if sh.ep > 1:
            ops.append(_comm("moe_combine", a2a_op, Group.EP, a2a))
        if disp == M.MoeDispatcher.ALLTOALL:
            # weighted sum of each token's top_k expert outputs; keeps them for the gate's gradient
            ops.append(_mem("moe_unpermute", rt.sent * row + rt.routed * row, saved=rt.received * row))
    if moe.shared_experts:   # a tensor-parallel MLP beside the routed experts (Megatron SharedExpertMLP)
        ops += [*_tp_entry_fwd(c, "shared_ag"),
                *_mlp_ops(c, "shared", c.t, moe.shared_experts * (S._moe_ffn(c.model) // sh.tp),
                          keep_input=c.ts * h * c.db if c.sp else 0.0),
                *_tp_exit_fwd(c, "shared_tp"), _mem("moe_shared_add", 3 * rt.routed * row)]
    if c.tp_comm and not c.sp:   # rebuild the tp-replicated activation from the ranks' shares
        ops.append(_comm("mlp_tp", Collective.ALL_GATHER, Group.TP, c.act_bytes))
    ops.append(_residual(c, "mlp_resid"))
    return ops


def _moe_block_bwd(c: _Ctx, fwd: list[Op]) -> list[Op]:
    """The forward reversed: each collective's adjoint (all-to-all <-> all-to-all, all-gather <->
    reduce-scatter), each memory-bound kernel at twice its bytes, each GEMM's two gradients."""
    by = {o.name: o for o in fwd}
    bw = Phase.BWD_INPUT
    adjoint = {Collective.ALL_GATHER: Collective.REDUCE_SCATTER, Collective.REDUCE_SCATTER: Collective.ALL_GATHER,
               Collective.ALL_TO_ALL: Collective.ALL_TO_ALL, Collective.ALL_TO_ALL_FUSED: Collective.ALL_TO_ALL_FUSED}

    def comm_bwd(name: str) -> list[Op]:
        if name not in by:
            return []
        coll, group, size = by[name].comm
        return [_comm(name + ".bwd", adjoint[Collective(coll)], Group(group), size, bw)]

    def mem_bwd(name: str) -> list[Op]:
        return [_mem_bwd(by[name])] if name in by else []

    ops = [_mem_bwd(by["mlp_resid"])]
    if "moe_shared_add" in by:
        ops += [_mem_bwd(by["moe_shared_add"]), *_tp_exit_bwd(c, "shared_tp"),
                *_mlp_ops_bwd(c, [o for o in fwd if o.name.startswith("shared_") and o.kind == OpKind.GEMM
                                  or o.name == "shared_act"], True, "shared_ag")]
    ops += [*mem_bwd("moe_unpermute"), *comm_bwd("moe_combine"), *comm_bwd("moe_etp_rs"), *mem_bwd("moe_unsort"),
            *_mlp_ops_bwd(c, [o for o in fwd if o.name.startswith("expert_")], False, ""),
            *mem_bwd("moe_sort"), *comm_bwd("moe_etp_ag")]
    if M.MoeDispatcher(c.shard.dispatcher) == M.MoeDispatcher.ALLGATHER:
        ops += [*mem_bwd("moe_permute"), *comm_bwd("moe_dispatch")]
    else:
        ops += [*comm_bwd("moe_dispatch"), *mem_bwd("moe_permute")]
    ops += [_mem_bwd(by["router_topk"]), *_grads(c, by["router"]), _mem_bwd(by["mlp_norm"])]
    return ops


# --- layers, embedding, head, optimizer --------------------------------------------------------

def _layer_fwd_blocks(c: _Ctx, moe_layer: bool, flash: bool) -> tuple[list[Op], list[Op]]:
    if moe_layer and c.model.moe is None:
        raise ConfigError("moe_layer=True for a model without `moe`: pass moe_layer=False")
    attn = _mla_block_fwd(c, flash) if c.model.mla is not None else _attention_block_fwd(c, flash)
    ffn = _moe_block_fwd(c) if moe_layer else _mlp_block_fwd(c)
    return attn, ffn


def layer_forward_ops(model: ModelConfig, shard: Shard, moe_layer: bool, flash: bool = True,
                      windowed: bool = False) -> tuple[Op, ...]:
    """The forward of one decoder (or encoder) layer on one device, in execution order.
    `flash=False` is for teaching and the Korthikanti test: attention that keeps its s×s scores.
    `windowed`: a sliding-window layer of the model (shard.is_windowed_layer)."""
    c = _ctx(model, shard, windowed)
    attn, ffn = _layer_fwd_blocks(c, moe_layer, flash)
    return (*attn, *ffn)


def layer_backward_ops(model: ModelConfig, shard: Shard, moe_layer: bool, flash: bool = True,
                       windowed: bool = False) -> tuple[Op, ...]:
    """The backward of one layer, in execution order (the forward reversed)."""
    c = _ctx(model, shard, windowed)
    attn, ffn = _layer_fwd_blocks(c, moe_layer, flash)
    ffn_bwd = _moe_block_bwd(c, ffn) if moe_layer else _mlp_block_bwd(c, ffn)
    attn_bwd = _mla_block_bwd(c, attn, flash) if model.mla is not None else _attention_block_bwd(c, attn, flash)
    return (*ffn_bwd, *attn_bwd)


def embedding_ops(model: ModelConfig, shard: Shard) -> FwdBwd:
    """Vocab-parallel lookup (each tp rank its rows, masked; summed by all-reduce, or
    reduce-scatter with SP), then (GPT family) + positions and dropout. Backward: scatter-add of
    dY into the local rows (a weight gradient)."""
    c = _ctx(model, shard)
    x = c.t * model.hidden * c.db
    fwd = [_mem("embed", 2 * x), *_tp_exit_fwd(c, "embed_tp")]
    bwd: list[Op] = []
    if c.fam.dropout:
        xs = c.ts * model.hidden
        drop = _mem("embed_pos_dropout", 3 * xs * c.db + xs * MASK_BYTES, saved=xs * MASK_BYTES)
        fwd.append(drop)
        bwd.append(_mem_bwd(drop))
    bwd += [*_tp_exit_bwd(c, "embed_tp"),
            _mem("embed.dw", x + 2 * c.t * model.hidden * FP32_BYTES, phase=Phase.BWD_WEIGHT)]
    return FwdBwd(tuple(fwd), tuple(bwd))


def head_ops(model: ModelConfig, shard: Shard, loss: str = "fused-vocab-parallel") -> FwdBwd:
    """Final norm, logits over vocab/tp, and the loss.

    `fused-vocab-parallel` (Megatron-LM, megatron/core/tensor_parallel/cross_entropy.py):
    all-reduces of the row max, the target logit and the sum of exponentials over tp; reads the
    16-bit logits once and keeps the fp32 softmax, which the backward turns into the gradient in
    place. `fp32-upcast` (PyTorch `F.cross_entropy(logits.float(), ...)`, as torchtitan and
    llm-foundry call it): a cast to an fp32 copy (read 2, write 4 bytes per logit), log_softmax
    over it (read 4, write 4; its fp32 output is kept for the backward), and in the backward the
    nll_loss gradient written dense in fp32 (4), log_softmax's backward (read 4 + 4, write 4) and
    the cast back to 16 bits (read 4, write 2)."""
    c = _ctx(model, shard)
    v = c.dims.vocab
    norm = _norm(c, "final_norm")
    logits = _gemm(c, "logits", c.t, v, model.hidden, saved=c.ts * model.hidden * c.db)
    ce_stats = c.t * FP32_BYTES
    ar = (lambda name: [_comm(name, Collective.ALL_REDUCE, Group.TP, ce_stats)] if c.tp_comm else [])
    fwd = [norm, *_tp_entry_fwd(c, "head_ag"), logits]
    if loss == "fp32-upcast":
        fwd += [_mem("logits_fp32_cast", c.t * v * (c.db + FP32_BYTES)), *ar("ce_max_ar"), *ar("ce_target_ar"),
                _mem("log_softmax", c.t * v * 2 * FP32_BYTES, saved=c.t * v * FP32_BYTES), *ar("ce_sum_ar")]
        bwd = [_mem("nll_loss.bwd", c.t * v * FP32_BYTES, phase=Phase.BWD_INPUT),
               _mem("log_softmax.bwd", c.t * v * 3 * FP32_BYTES, phase=Phase.BWD_INPUT),
               _mem("logits_fp32_cast.bwd", c.t * v * (FP32_BYTES + c.db), phase=Phase.BWD_INPUT)]
    else:
        fwd += [_mem("ce_max", c.t * v * c.db), *ar("ce_max_ar"), *ar("ce_target_ar"),
                _mem("cross_entropy", c.t * v * (c.db + FP32_BYTES), saved=c.t * v * FP32_BYTES), *ar("ce_sum_ar")]
        bwd = [_mem("cross_entropy.bwd", c.t * v * (FP32_BYTES + c.db), phase=Phase.BWD_INPUT)]
    bwd += [*_column_bwd(c, logits, "head_ag"), _mem_bwd(norm)]
    return FwdBwd(tuple(fwd), tuple(bwd))


def optimizer_ops(n_params_local: float, precision: Dtype = Dtype.BF16, grad_bytes: int = FP32_BYTES,
                  optimizer: str = "adam") -> tuple[Op, ...]:
    """The optimizer step over the local parameters, one memory-bound kernel.

    Adam, mixed precision, bytes per parameter: fp32 master weight, momentum and variance each
    read and written (3·2·4 = 24), the gradient read (`grad_bytes`: 4 for Megatron's fp32 main
    grads), the 16-bit weight written (2): 30. fp32 training: weight, momentum, variance read and
    written (24) + gradient read (4) = 28. SGD with momentum has one state instead of two.
    """
    state = optimizer_state_bytes_per_param(precision, optimizer)   # fp32 tensors beside the weights
    if precision in (Dtype.FP32, Dtype.TF32):
        per_param = 2 * (state + FP32_BYTES) + grad_bytes      # weights are the master copy: r/w
    else:
        per_param = 2 * state + grad_bytes + 2                 # master and states r/w, grad read, 16-bit weight write
    key = optimizer.lower()
    return (_mem(f"{key}_step", n_params_local * per_param, phase=Phase.OPTIMIZER),)


def model_flop_per_step(model: ModelConfig, global_batch: int) -> float:
    """MODEL FLOPs of one training step (forward + backward, no recompute), whole cluster:
    6·(active GEMM weights of the layers + the logits matrix)·tokens + attention, 12·s·a·d per
    token and layer (6·s·a·d causal: the ops count the masked half as skipped). Equal to the sum
    of `Op.model_flop` over all ops of all devices (tests/unit/test_ops.py)."""
    tokens = global_batch * model.seq_len
    s, w = model.seq_len, (model.sliding_window.window if model.sliding_window else 0)
    matmul = sum(layer_matmul_params(model, is_moe_layer(model, i), active=True) for i in range(model.layers))
    matmul += model.vocab * model.hidden
    full = 12 * s * model.heads * S.head_dim(model) * (0.5 if model.causal else 1.0)
    # a window of w: query i sees min(i, w) keys, s·w − w(w−1)/2 per sequence (12·a·d FLOP each)
    windowed = 12 * model.heads * S.head_dim(model) * (s * w - w * (w - 1) / 2) / s if 0 < w < s else full
    attn = sum(windowed if S.is_windowed_layer(model, i) else full for i in range(model.layers))
    if model.mtp_layers:   # each MTP module: the 2h -> h projection, one layer, the shared logits
        mtp = (2 * model.hidden * model.hidden + layer_matmul_params(model, model.moe is not None, active=True)
               + model.vocab * model.hidden)
        matmul += model.mtp_layers * mtp
        attn += model.mtp_layers * full
    return float(6 * matmul * tokens + attn * tokens)


# --- activation memory --------------------------------------------------------------------------

def layer_activation_bytes(model: ModelConfig, shard: Shard, recompute: Recompute, moe_layer: bool = False,
                           flash: bool = True, windowed: bool = False) -> float:
    """Activation bytes one layer keeps for its backward (one micro-batch, one device).

    Korthikanti et al. 2022, Table 2, per layer with b·s → T tokens (fp16, GPT: ffn = 4h, MHA,
    gelu, dropout): NONE sbh(34 + 5as/h); tp: sbh(10 + 24/t + 5as/(ht)); tp+sp: sbh/t(34 + 5as/h).
    The 34 = norms' inputs 4 + QKV input 2 + Q,K,V 6 + attention output 2 + two dropout masks 2
    + MLP input 2 + gelu input 8 + down input 8; the 5as/h = softmax 2 + mask 1 + dropout output 2
    per score. Our attention is flash-style (`flash=True`): no s² terms, + the fp32 logsumexp
    (4·b·a·s/t). SELECTIVE recomputes the attention core: drops those internal terms (the paper's
    selective figure exactly). FULL keeps only the layer input, 2sbh (/t with SP).
    Generalised per op: GQA keeps K, V of kv_heads; swiglu keeps gate and up (2·T·f) and the
    down input (T·f); ffn ≠ 4h scales those; MoE keeps the router input and probabilities, the
    permuted tokens (T·top_k·h), the experts' activations, and their outputs for the gate
    gradient; the Llama family has no dropout masks.
    """
    c = _ctx(model, shard, windowed)
    if recompute == Recompute.FULL:
        return float(c.ts * model.hidden * c.db)
    attn, ffn = _layer_fwd_blocks(c, moe_layer, flash)
    kept = sum(o.saved_bytes for o in (*attn, *ffn))
    if recompute == Recompute.SELECTIVE:
        kept -= _attention_internal_saved(c, flash)
    return float(kept)


def op_sac_activation_bytes(model: ModelConfig, shard: Shard, moe_layer: bool = False) -> float:
    """Activation bytes one layer keeps under torchtitan's per-op selective checkpointing (one
    micro-batch, one device): the block's input and the outputs of the ops it saves — the odd
    matmuls of q, k, v, o, w1, w3, w2 (q, v, w1, w2), and flash attention's output and fp32
    logsumexp; everything else is recomputed from them (torchtitan 0.1.0 llama3/infra/
    parallelize.py _save_list, _custom_policy). A MoE layer's experts are not matmuls of that
    list (grouped GEMMs): its activations are the dense formula's."""
    c = _ctx(model, shard)
    if moe_layer:
        return layer_activation_bytes(model, shard, Recompute.SELECTIVE, moe_layer=True)
    d, a, kv = c.dims.head_dim, c.dims.heads, c.dims.kv_heads
    # q (1st matmul), v (3rd), attention output, w1 / fc1 (5th); SwiGLU's w2 is the 7th (saved),
    # GELU's fc2 the 6th (recomputed); and the block's input
    per_token = (a * d + kv * d + a * d + c.dims.ffn) * c.t
    rows = 2 if model.mlp == MlpKind.SWIGLU else 1
    return float(per_token * c.db + rows * c.ts * model.hidden * c.db + c.t * a * FP32_BYTES)   # + logsumexp


def head_activation_bytes(model: ModelConfig, shard: Shard, loss: str = "fused-vocab-parallel") -> float:
    """What the final norm, logits and loss keep: the norm input, the logits input and the fp32
    softmax (or log-softmax) over the local vocabulary (often the largest single activation)."""
    return float(sum(o.saved_bytes for o in head_ops(model, shard, loss).forward))


def head_transient_bytes(model: ModelConfig, shard: Shard, loss: str = "fused-vocab-parallel") -> float:
    """What the loss holds beside its kept tensors while it runs.

    fused-vocab-parallel: the 16-bit logits, written by the logits GEMM and read by the loss,
    which keeps only its fp32 softmax (forward); and the 16-bit logits gradient the GEMM's
    backward reads, after the loss has turned its softmax into the fp32 gradient in place
    (backward). Megatron-LM megatron/core/tensor_parallel/cross_entropy.py: the forward casts
    the logits to fp32 and exponentiates and normalises them in place, saving that buffer; the
    backward writes the gradient into it; autograd hands the GEMM a gradient in the logits' own
    dtype.
    fp32-upcast: besides the 16-bit logits, the fp32 copy log_softmax reads (forward); in the
    backward the fp32 nll gradient and log_softmax's fp32 input gradient before the cast back."""
    c = _ctx(model, shard)
    if loss == "fp32-upcast":
        return float(c.t * c.dims.vocab * (c.db + 2 * FP32_BYTES))
    return float(c.t * c.dims.vocab * c.db)


def embedding_activation_bytes(model: ModelConfig, shard: Shard) -> float:
    """The embedding dropout mask (GPT family); token ids are negligible."""
    return float(sum(o.saved_bytes for o in embedding_ops(model, shard).forward))
