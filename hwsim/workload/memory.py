"""Static memory per device: weights, gradients and optimizer state, with ZeRO sharding; and
the parameters each pipeline stage holds.

ZeRO (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter
Models", §3 and Fig. 1): mixed-precision Adam keeps 2Ψ bytes of fp16/bf16 weights, 2Ψ of
gradients and KΨ of optimizer state, K = 12 (fp32 master weights, momentum, variance, 4 bytes
each). Stage 1 shards the KΨ over the N = dp replicas, stage 2 also the gradients, stage 3
also the weights. fp32 training keeps 4Ψ weights, 4Ψ gradients and 8Ψ (momentum, variance).
fp8 training keeps bf16 weights (the fp8 copies are transient), so it counts as mixed precision.

Activation memory per layer is `hwsim.workload.ops.layer_activation_bytes` (it sums the ops'
saved tensors).
"""

from __future__ import annotations

from hwsim.config.schema import Dtype, MlpKind, ModelConfig
from hwsim.engine.task import MemKind
from hwsim.errors import ConfigError, PlanError
from hwsim.workload.schedules import chunk_layers
from hwsim.workload.shard import (embedding_param_count, head_param_count, is_moe_layer, layer_param_count,
                                  layer_param_split, local_dims, mtp_param_count)

__all__ = ["static_memory_bytes", "stage_layers", "stage_params", "stage_param_split", "moe_static_memory_bytes",
           "optimizer_state_bytes_per_param", "FP32_BYTES"]

_FULL_PRECISION = (Dtype.FP32, Dtype.TF32)
HALF_BYTES = 2   # fp16/bf16 weights and gradients (ZeRO §3: "2Ψ + 2Ψ")
FP32_BYTES = 4   # fp32 master weights, Adam moments, main grads, softmax statistics
# fp32 optimizer tensors per parameter, beside the weights: Adam momentum + variance, SGD momentum
_OPTIMIZER_STATES = {"adam": 2, "adamw": 2, "sgd": 1}


def optimizer_state_bytes_per_param(precision: Dtype, optimizer: str = "adam") -> int:
    """K of ZeRO §3: mixed precision Adam 12 (fp32 master 4 + momentum 4 + variance 4);
    fp32 Adam 8 (the weights are the master copy); SGD with momentum one state fewer."""
    key = optimizer.lower()
    if key not in _OPTIMIZER_STATES:
        raise ConfigError(f"training.optimizer: unknown optimizer {optimizer!r}; "
                          f"known: {', '.join(_OPTIMIZER_STATES)}")
    states = _OPTIMIZER_STATES[key] * FP32_BYTES
    return states if precision in _FULL_PRECISION else states + FP32_BYTES


def static_memory_bytes(n_params_local: float, zero_stage: int, dp: int, precision: Dtype,
                        optimizer: str = "adam") -> dict[MemKind, float]:
    """Weights, gradients and optimizer state of one device holding `n_params_local`
    parameters (after tp/pp/ep sharding), with ZeRO stage `zero_stage` over `dp` replicas."""
    if zero_stage not in (0, 1, 2, 3):
        raise ConfigError(f"parallel.zero_stage must be 0, 1, 2 or 3, got {zero_stage}")
    if dp < 1:
        raise PlanError(f"dp must be >= 1, got {dp}")
    if n_params_local < 0:
        raise PlanError(f"a device cannot hold {n_params_local} parameters")
    word = FP32_BYTES if precision in _FULL_PRECISION else HALF_BYTES
    k = optimizer_state_bytes_per_param(precision, optimizer)
    return {
        MemKind.WEIGHTS: word * n_params_local / (dp if zero_stage >= 3 else 1),
        MemKind.GRADIENTS: word * n_params_local / (dp if zero_stage >= 2 else 1),
        MemKind.OPTIMIZER: k * n_params_local / (dp if zero_stage >= 1 else 1),
    }


def moe_static_memory_bytes(n_dense_local: float, n_expert_local: float, zero_stage: int, grad_shards: int,
                            expert_grad_shards: int, precision: Dtype, optimizer: str = "adam") -> dict[MemKind, float]:
    """`static_memory_bytes` of a device holding dense parameters (sharded by ZeRO over the
    dp·cp `grad_shards`) and routed-expert parameters (sharded over the expert-data-parallel
    group, Megatron-Core's expert distributed optimizer)."""
    dense = static_memory_bytes(n_dense_local, zero_stage, grad_shards, precision, optimizer)
    expert = static_memory_bytes(n_expert_local, zero_stage, expert_grad_shards, precision, optimizer)
    return {k: dense[k] + expert[k] for k in dense}


def stage_layers(n_layers: int, pp: int, stage: int, virtual_stages: int = 1) -> tuple[int, ...]:
    """The layers (0-based) that pipeline stage `stage` holds, over all its model chunks.

    The split is `hwsim.workload.schedules.chunk_layers`, the one the compiler runs, so memory
    and time agree: as even as possible, the first and last virtual stages taking the fewer
    layers when they do not divide (they also hold the embedding and the loss)."""
    if not 0 <= stage < pp:
        raise PlanError(f"pipeline stage {stage} does not exist with pp={pp}")
    try:
        chunks = chunk_layers(n_layers, pp, virtual_stages)
    except ValueError as err:
        raise PlanError(f"{err}: lower pp or virtual_stages") from err
    return tuple(i for chunk in chunks[stage] for i in chunk)


def stage_param_split(model: ModelConfig, pp: int, stage: int, virtual_stages: int = 1, tp: int = 1,
                      ep: int = 1, etp: int | None = None) -> tuple[float, float]:
    """(dense, routed-expert) parameters held by one device of pipeline stage `stage` (see
    `stage_params`); the MTP modules sit on the last stage."""
    total = stage_params(model, pp, stage, virtual_stages, tp, ep, etp)
    layers = stage_layers(model.layers, pp, stage, virtual_stages)
    n_moe = sum(1 for i in layers if is_moe_layer(model, i))
    expert = n_moe * layer_param_split(model, True, tp, ep, etp)[1] if n_moe else 0.0
    if stage == pp - 1 and model.mtp_layers and model.moe is not None:
        expert += model.mtp_layers * layer_param_split(model, True, tp, ep, etp)[1]
    return total - expert, expert


def stage_params(model: ModelConfig, pp: int, stage: int, virtual_stages: int = 1, tp: int = 1,
                 ep: int = 1, etp: int | None = None) -> float:
    """Parameters held by one device of pipeline stage `stage`: its layers (tp shards the
    matrices, norms are replicated; ep shards the experts), the embedding on the first stage,
    the final norm and the head on the last. With tied embeddings and pp > 1 the last stage
    keeps its own copy of the embedding matrix for the head, as Megatron-LM does (the two
    copies' gradients are all-reduced)."""
    layers = stage_layers(model.layers, pp, stage, virtual_stages)
    n_moe = sum(1 for i in layers if is_moe_layer(model, i))
    total = n_moe * layer_param_count(model, True, tp, ep, etp=etp) if n_moe else 0.0
    if len(layers) > n_moe:
        total += (len(layers) - n_moe) * layer_param_count(model, False, tp, ep, etp=etp)
    if stage == 0:
        total += embedding_param_count(model, tp)
    if stage == pp - 1:
        total += head_param_count(model, tp) + mtp_param_count(model, tp, ep, etp)
        if model.tied_embeddings and pp > 1:
            total += local_dims(model, tp, ep).vocab * model.hidden
    return float(total)


def stage_param_tensors(model: ModelConfig, pp: int, stage: int, virtual_stages: int = 1) -> int:
    """Parameter tensors (not elements) one device of `stage` holds: what a per-tensor optimizer
    loop iterates over. A GELU (GPT-style) layer has weights and biases of QKV, projection, two
    MLP matrices and two LayerNorms (12); a SwiGLU (Llama-style) layer has q, k, v, o, three MLP
    matrices and two RMSNorm weights (9); a MoE layer adds its experts' matrices and a router."""
    per_dense = 12 if model.mlp == MlpKind.GELU else 9
    mlp_mats = 2 if model.mlp == MlpKind.GELU else 3
    total = 0
    for i in stage_layers(model.layers, pp, stage, virtual_stages):
        total += per_dense
        if is_moe_layer(model, i):
            total += 1 + (model.moe.experts + model.moe.shared_experts - 1) * mlp_mats
    if stage == 0:
        total += 2 if model.mlp == MlpKind.GELU else 1          # token (and position) embeddings
    if stage == pp - 1:
        total += (2 if model.mlp == MlpKind.GELU else 1) + (0 if model.tied_embeddings else 1)
    return total
