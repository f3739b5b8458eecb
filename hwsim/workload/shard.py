"""How a transformer splits across devices: the shard one device computes, the per-device
dimensions of a layer, and the parameter counts (whole model and per device).

A `Shard` is what one device computes for one micro-batch of one layer. Tensor parallelism
(tp) splits heads, the MLP hidden size and the vocabulary (Megatron-LM column/row-parallel
linears; Shoeybi et al. 2019, §3); context parallelism (cp) splits the sequence; expert
parallelism (ep) splits the experts. Matrices are sharded, norms and the biases of
row-parallel linears are replicated.

The schema distinguishes two families by `mlp`, and the family fixes the small conventions
the schema has no field for (documented in `Family`):

- gelu: GPT-2/3, BERT (Radford et al. 2019; Brown et al. 2020 §2.1 "the same model and
  architecture as GPT-2"; Devlin et al. 2018): biases on every linear, LayerNorm (γ and β),
  learned absolute position embeddings (seq_len × hidden), dropout (p = 0.1).
- swiglu: Llama, Mistral, Mixtral (Touvron et al. 2023, "LLaMA", §2.2: pre-normalisation with
  RMSNorm, SwiGLU, rotary embeddings; no biases: HF LlamaConfig attention_bias=False,
  mlp_bias=False): RMSNorm (γ only), rotary positions (no parameters), no dropout.

Parameter counts: an MoE layer's experts are split over ep and each expert's matrices over etp
(Megatron-Core's expert_tensor_parallel_size, tp unless set: MoE parallel folding); the router
is replicated; shared experts are tensor-parallel like the dense MLP.

Multi-head latent attention (DeepSeek-V2 §2.1, arXiv:2405.04434; V3 config.json): the query is
h -> q_lora_rank -> heads·(qk_nope + qk_rope), the key-value h -> kv_lora_rank + qk_rope (the
shared RoPE key) -> heads·(qk_nope + v); the output heads·v -> h. Megatron-Core's
MLASelfAttention (megatron/core/transformer/multi_latent_attention.py) keeps the two down
projections whole on every tp rank and splits the up projections and the output by heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hwsim.config.schema import MlpKind, ModelConfig
from hwsim.errors import ConfigError, PlanError

__all__ = [
    "Shard", "Family", "LocalDims", "family", "head_dim", "local_dims",
    "layer_param_count", "layer_matmul_params", "embedding_param_count", "head_param_count",
    "is_moe_layer", "param_count", "active_param_count", "layer_param_split", "mtp_param_count",
    "is_windowed_layer",
]


@dataclass(frozen=True, slots=True)
class Shard:
    """What one device computes for one micro-batch of one layer."""

    micro_batch: int
    seq_len: int                 # full sequence length of the model
    tp: int = 1
    cp: int = 1
    ep: int = 1
    sequence_parallel: bool = False
    dtype_bytes: int = 2         # activations/weights in the compute dtype (fp8 GEMMs keep bf16 activations: 2)
    fp8: bool = False            # GEMMs run in fp8 (the compiler picks the rate)
    etp: int = 1                 # expert tensor parallel (an expert's matrices split over etp ranks)
    dispatcher: str = "alltoall"  # MoE token dispatcher (hwsim.workload.moe)

    def __post_init__(self) -> None:
        for name in ("micro_batch", "seq_len", "tp", "cp", "ep", "etp", "dtype_bytes"):
            if getattr(self, name) < 1:
                raise PlanError(f"Shard.{name} must be >= 1, got {getattr(self, name)}")
        if self.seq_len % self.cp:
            raise PlanError(f"seq_len {self.seq_len} is not divisible by cp={self.cp}: ring attention "
                            f"gives each cp rank an equal block of the sequence; pick cp dividing seq_len")
        if self.sequence_parallel and self.tokens % self.tp:
            raise PlanError(f"sequence parallelism splits the {self.tokens} local tokens over tp={self.tp}, "
                            f"which does not divide them; change micro_batch, seq_len or tp")

    @property
    def local_seq_len(self) -> int:
        """Positions of the sequence on this cp rank."""
        return self.seq_len // self.cp

    @property
    def tokens(self) -> int:
        """Tokens entering the GEMMs of this device (b·s/cp; replicated over tp)."""
        return self.micro_batch * self.local_seq_len

    @property
    def sp_tokens(self) -> int:
        """Tokens of the norms, dropouts and residuals: split over tp with sequence parallelism."""
        return self.tokens // self.tp if self.sequence_parallel else self.tokens


@dataclass(frozen=True, slots=True)
class Family:
    """Conventions the schema has no field for, fixed by the model family (module docstring)."""

    bias: bool                     # biases on the linears (not on the router)
    norm_params_per_hidden: int    # LayerNorm 2 (γ, β), RMSNorm 1 (γ)
    learned_positions: bool        # absolute position embedding table (seq_len × hidden)
    dropout: bool                  # dropout after attention, MLP and embedding (1-byte masks kept)


_GPT = Family(bias=True, norm_params_per_hidden=2, learned_positions=True, dropout=True)
_LLAMA = Family(bias=False, norm_params_per_hidden=1, learned_positions=False, dropout=False)


def family(model: ModelConfig) -> Family:
    return _GPT if model.mlp == MlpKind.GELU else _LLAMA


def head_dim(model: ModelConfig) -> int:
    """The attention head dimension; with MLA the mean of the query/key and value dimensions,
    (qk_nope + qk_rope + v)/2, which gives the attention core its FLOPs (2·s·(d_qk + d_v) per
    query and head)."""
    if model.mla is not None:
        m = model.mla
        return (m.qk_nope_head_dim + m.qk_rope_head_dim + m.v_head_dim) // 2
    if model.head_dim is not None:
        return model.head_dim
    if model.hidden % model.heads:
        raise ConfigError(f"model.head_dim: hidden {model.hidden} is not divisible by heads {model.heads}; "
                          f"set model.head_dim explicitly")
    return model.hidden // model.heads


def _kv_heads(model: ModelConfig) -> int:
    return model.kv_heads if model.kv_heads is not None else model.heads


def _moe_ffn(model: ModelConfig) -> int:
    if model.moe is None:
        return model.ffn_hidden
    return model.moe.moe_ffn_hidden or model.ffn_hidden


@dataclass(frozen=True, slots=True)
class LocalDims:
    """The dimensions of a layer on one device."""

    hidden: int
    heads: int          # query heads on this device
    kv_heads: int       # key/value heads on this device
    head_dim: int
    ffn: int            # dense MLP hidden on this device
    moe_ffn: int        # one expert's hidden on this device
    vocab: int          # vocabulary rows on this device (padded to a multiple of tp, as Megatron pads)
    experts: int        # experts on this device
    top_k: int


def local_dims(model: ModelConfig, tp: int = 1, ep: int = 1, etp: int | None = None) -> LocalDims:
    """Per-device dimensions; raises PlanError for a split Megatron-LM cannot do. `etp`: the
    experts' tensor parallelism (default tp)."""
    etp = tp if etp is None else etp
    kv = _kv_heads(model)
    if model.heads % kv:
        raise ConfigError(f"model.kv_heads: heads {model.heads} must be a multiple of kv_heads {kv}")
    checks = [("heads", model.heads), ("kv_heads", kv), ("ffn_hidden", model.ffn_hidden)]
    if model.moe is not None and model.moe.shared_experts:
        checks.append(("moe_ffn_hidden", _moe_ffn(model)))   # shared experts split over tp
    if model.moe is not None and _moe_ffn(model) % etp:
        raise PlanError(f"etp={etp} does not divide model moe_ffn_hidden={_moe_ffn(model)}: expert tensor "
                        f"parallelism splits it evenly; pick etp among its divisors")
    for name, value in checks:
        if value % tp:
            raise PlanError(f"tp={tp} does not divide model {name}={value}: tensor parallelism splits it "
                            f"evenly (Megatron-LM); pick tp among the divisors of {value}")
    experts, top_k = 0, 0
    if model.moe is not None:
        experts, top_k = model.moe.experts, model.moe.top_k
        if experts % ep:
            raise PlanError(f"ep={ep} does not divide the {experts} experts; pick ep dividing {experts}")
        if top_k > experts:
            raise ConfigError(f"model.moe.top_k {top_k} exceeds the {experts} experts")
    return LocalDims(hidden=model.hidden, heads=model.heads // tp, kv_heads=kv // tp, head_dim=head_dim(model),
                     ffn=model.ffn_hidden // tp, moe_ffn=_moe_ffn(model) // etp, vocab=math.ceil(model.vocab / tp),
                     experts=experts // ep if experts else 0, top_k=top_k)


def is_windowed_layer(model: ModelConfig, layer: int) -> bool:
    """Layer `layer` (0-based) attends within a sliding window: all but one layer in every
    `sliding_window.every`, the full-attention one last (gpt-oss config.json layer_types:
    sliding, full, sliding, full, ...)."""
    sw = model.sliding_window
    return sw is not None and (layer + 1) % sw.every != 0


def is_moe_layer(model: ModelConfig, layer: int) -> bool:
    """Layer `layer` (0-based) has experts: MoE models keep `moe.dense_layers` leading dense layers."""
    return model.moe is not None and layer >= model.moe.dense_layers


def _mlp_matmul(model: ModelConfig, ffn: int) -> int:
    """Weights of one MLP (or one expert) of hidden `ffn`: gelu 2 matrices, swiglu 3."""
    return (3 if model.mlp == MlpKind.SWIGLU else 2) * model.hidden * ffn


def _attn_matmul(model: ModelConfig) -> int:
    if model.mla is not None:
        return sum(_mla_matrices(model, 1))
    d = head_dim(model)
    return model.hidden * (model.heads + 2 * _kv_heads(model)) * d + model.heads * d * model.hidden


def _mla_matrices(model: ModelConfig, tp: int) -> tuple[int, int]:
    """(replicated, tp-split) MLA weights on one of tp ranks: the down projections whole, the up
    projections and the output split by heads."""
    m, h, a = model.mla, model.hidden, model.heads // tp
    qk = m.qk_nope_head_dim + m.qk_rope_head_dim
    down = h * (m.kv_lora_rank + m.qk_rope_head_dim)
    up = m.kv_lora_rank * a * (m.qk_nope_head_dim + m.v_head_dim) + a * m.v_head_dim * h
    if m.q_lora_rank:
        down += h * m.q_lora_rank
        up += m.q_lora_rank * a * qk
    else:
        up += h * a * qk
    return down, up


def _mla_norm_params(model: ModelConfig) -> int:
    """The latent RMSNorms (kv, and q with a q_lora_rank)."""
    return model.mla.kv_lora_rank + (model.mla.q_lora_rank or 0)


def layer_matmul_params(model: ModelConfig, moe_layer: bool, active: bool = False) -> int:
    """GEMM weights of one layer, whole model (the params that cost 6 FLOP per token): attention,
    MLP or (router + experts + shared experts); `active`: only the top_k experts a token uses."""
    total = _attn_matmul(model)
    if moe_layer and model.moe is not None:
        moe, ffn = model.moe, _moe_ffn(model)
        n_experts = moe.top_k if active else moe.experts
        total += model.hidden * moe.experts + (n_experts + moe.shared_experts) * _mlp_matmul(model, ffn)
    else:
        total += _mlp_matmul(model, model.ffn_hidden)
    return total


def layer_param_split(model: ModelConfig, moe_layer: bool, tp: int = 1, ep: int = 1,
                      etp: int | None = None) -> tuple[float, float]:
    """(dense, expert) parameters of one layer on one device: the expert part (routed experts,
    split over ep and etp) is reduced and sharded over the expert-data-parallel group, the rest
    over the data-parallel (dp·cp) group."""
    if not (moe_layer and model.moe is not None):
        return layer_param_count(model, moe_layer, tp, ep, etp=etp), 0.0
    dims = local_dims(model, tp, ep, etp)
    fam = family(model)
    w = (3 if model.mlp == MlpKind.SWIGLU else 2) * model.hidden * dims.moe_ffn
    if fam.bias:
        w += (2 if model.mlp == MlpKind.SWIGLU else 1) * dims.moe_ffn + model.hidden
    expert = float(dims.experts * w)
    return layer_param_count(model, moe_layer, tp, ep, etp=etp) - expert, expert


def layer_param_count(model: ModelConfig, moe_layer: bool, tp: int = 1, ep: int = 1,
                      active: bool = False, etp: int | None = None) -> float:
    """Parameters of one layer held by one device (tp=ep=1: the whole layer).

    Sharded by tp: every matrix, the biases of column-parallel linears (QKV, MLP up).
    Replicated over tp: the two norms, the biases of row-parallel linears (attention output,
    MLP down), the router. Experts: split over ep, each expert's matrices over tp.
    `active` (whole model only, tp = ep = 1): count the top_k experts a token uses.
    """
    if active and (tp > 1 or ep > 1):
        raise ValueError("active parameter counts are for the whole model (tp = ep = 1)")
    dims = local_dims(model, tp, ep, etp)
    fam = family(model)
    d = dims.head_dim
    norms = 2 * fam.norm_params_per_hidden * model.hidden
    if model.mla is not None:
        attn = sum(_mla_matrices(model, tp)) + _mla_norm_params(model)
    else:
        qkv_w = model.hidden * (dims.heads + 2 * dims.kv_heads) * d
        attn = qkv_w + dims.heads * d * model.hidden
        if fam.bias:
            attn += (dims.heads + 2 * dims.kv_heads) * d + model.hidden
    if model.attention_sinks:
        attn += dims.heads   # one learned sink logit per head

    def mlp(ffn_local: int) -> int:
        w = (3 if model.mlp == MlpKind.SWIGLU else 2) * model.hidden * ffn_local
        if fam.bias:  # up bias is column-parallel (sharded), down bias row-parallel (replicated)
            w += (2 if model.mlp == MlpKind.SWIGLU else 1) * ffn_local + model.hidden
        return w

    if moe_layer and model.moe is not None:
        moe = model.moe
        n_experts = moe.top_k if active else dims.experts
        shared_ffn = _moe_ffn(model) // tp   # shared experts are tensor-parallel over tp
        ffn_part = model.hidden * moe.experts + n_experts * mlp(dims.moe_ffn) + moe.shared_experts * mlp(shared_ffn)
    else:
        ffn_part = mlp(dims.ffn)
    return float(norms + attn + ffn_part)


def embedding_param_count(model: ModelConfig, tp: int = 1) -> float:
    """Token embedding (vocab-parallel: rows split over tp) + learned positions (replicated)."""
    dims = local_dims(model, tp)
    positions = model.seq_len * model.hidden if family(model).learned_positions else 0
    return float(dims.vocab * model.hidden + positions)


def head_param_count(model: ModelConfig, tp: int = 1) -> float:
    """Final norm (replicated) + the untied output matrix (vocab-parallel); a tied head adds
    nothing here (its copy on a separate last pipeline stage is counted by stage_params)."""
    dims = local_dims(model, tp)
    head = 0 if model.tied_embeddings else dims.vocab * model.hidden
    return float(family(model).norm_params_per_hidden * model.hidden + head)


def mtp_param_count(model: ModelConfig, tp: int = 1, ep: int = 1, etp: int | None = None,
                    active: bool = False) -> float:
    """Parameters of the multi-token-prediction modules (DeepSeek-V3 §2.2, Megatron-Core
    multi_token_prediction.py): per module two RMSNorms (of the hidden state and of the next
    token's embedding), the projection of their concatenation 2h -> h (tp-split), and one
    transformer layer (an MoE layer when the model has experts); the embedding and the output
    head are shared with the main model."""
    if not model.mtp_layers:
        return 0.0
    moe = model.moe is not None
    kwargs = dict(active=True) if active else dict(tp=tp, ep=ep, etp=etp)
    per = (2 * family(model).norm_params_per_hidden * model.hidden + 2 * model.hidden * model.hidden / tp
           + layer_param_count(model, moe, **kwargs))
    return float(model.mtp_layers * per)


def _count(model: ModelConfig, active: bool) -> float:
    n_moe = sum(1 for i in range(model.layers) if is_moe_layer(model, i))
    layers = (n_moe * layer_param_count(model, True, active=active)
              + (model.layers - n_moe) * layer_param_count(model, False))
    return layers + embedding_param_count(model) + head_param_count(model) + mtp_param_count(model, active=active)


def param_count(model: ModelConfig) -> float:
    """All parameters: embedding (+ learned positions) + layers (all experts) + final norm +
    untied head."""
    return _count(model, active=False)


def active_param_count(model: ModelConfig) -> float:
    """Parameters one token uses: as param_count with top_k experts per MoE layer."""
    return _count(model, active=True)
