"""A transformer layer's ops timed on an accelerator: `Work` items (a kernel with its duration,
or a collective with its spec), fusing them, and the serial-time rule both the compiler and the
screening use. Pure: no SimPy, no task graph."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Sequence

from hwsim.config.schema import Dtype, MlpKind, Recompute
from hwsim.hardware.kernels import DTYPE_BYTES, KernelModel
from hwsim.software.eager import unfuse
from hwsim.workload import ops as O
from hwsim.workload.plan import Plan
from hwsim.workload.shard import Shard, is_windowed_layer, layer_param_split



class Granularity(StrEnum):
    OP = "op"        # one task per kernel
    LAYER = "layer"  # consecutive kernels between two collectives fused into one task (same totals)
    STEP = "step"    # one compute task and one collective task per pipeline step (tp/cp/ep
                     # collectives charged at their isolated time); the steps that finish a
                     # chunk's gradients stay at layer level so the dp reduction overlaps as before


@dataclass(frozen=True, slots=True)
class Work:
    """An op with its time on this hardware: a compute kernel or a collective."""

    name: str
    category: str
    duration_s: float = 0.0
    flop: float = 0.0
    bytes_moved: float = 0.0
    comm: tuple[str, str, float] | None = None  # (collective op, axis, size_bytes)
    overlapped: bool = False   # a collective that runs alongside the next compute work (no data dependence)
    host_s: float = 0.0        # host CPU time to dispatch it (hwsim.software.host); 0: the host keeps ahead
    n_kernels: int = 1         # kernels it stands for (a fused work: the sum)
    host_sync_s: float = 0.0   # the host first waits for the GPU work issued so far, then spends this (blocking syncs)


# FP8 recipes whose scale comes from the tensor being cast (dynamic scaling) run an amax
# reduction over it before the cast: one more read of the 16-bit input per element.
# Transformer Engine Float8CurrentScaling (TE >= 2.2 docs, "current scaling": the amax of the
# current tensor is computed before quantization) and torchao's tensorwise / rowwise dynamic
# scaling (torchao/float8/float8_utils.py tensor_to_amax: torch.max(torch.abs(x)), a kernel of its
# own before the cast; rowwise: the max over each row). Delayed scaling takes the scale from the
# amax history and records the new amax inside the cast kernel (TE fp8_cast_transpose_fused);
# MXFP8 and blockwise compute each 32- or 128-element block's scale inside the quantize kernel.
DYNAMIC_FP8_RECIPES = ("current", "tensorwise", "rowwise")

# torchao's float8 training (torchao 0.11.0 torchao/float8/float8_linear.py,
# matmul_with_hp_or_float8_args): the forward saves the high-precision input and weight, and
# every GEMM casts both of its operands itself with hp_tensor_to_float8_dynamic — input and weight
# for the output, grad_output and weight again for grad_input, grad_output and input again for
# grad_weight — each an amax pass (read 2 bytes per element) and a cast (read 2, write 1).
TORCHAO_CAST_BYTES = 5
# torchao's rowwise recipe runs the grad GEMMs without fast accumulation, so it calls the
# tensorwise cuBLAS kernel with unit scales and multiplies the output by the row and column
# scales afterwards (torchao/float8/float8_ops.py addmm_float8_unwrapped: "output *=
# post_inverse_scale"; config.py: only gemm_config_output has use_fast_accum=True): one more
# pass over the 16-bit output, read and written.
TORCHAO_ROWWISE_POSTSCALE_BYTES = 4
# Async TP under torchao's rowwise recipe fuses only the matmul-then-reduce-scatter pairs:
# pytorch/pytorch PR #149247 (2025-03-15) taught torch's micro-pipeline TP pass rowwise scales for
# fused_scaled_matmul_reduce_scatter, and issue #149990 (2025-03-25, still open) reports that the
# all-gather-then-scaled_mm pairs are not fused when rowwise scales are used (found in the traces
# of torchtitan runs), so those all-gathers run exposed as in vanilla TP (layer_work).


def time_ops(ops: Sequence[O.Op], kernels: KernelModel, plan: Plan, category: str,
             fp8_recipe: str = "delayed", fp8_gemms: bool = True, fp8_casts: str = "te") -> list[Work]:
    """Give each op its kernel time on this accelerator (collectives keep their spec).
    `fp8_gemms` False runs these GEMMs in 16 bits under an fp8 plan (a layer the framework
    leaves out of FP8, such as Megatron's output layer). `fp8_casts`: how the framework feeds
    its fp8 GEMMs — "te" (Transformer Engine: the activation cast once per GEMM input, fused with
    its transpose and often with the op before) or "torchao" (each GEMM casts both its operands
    from high precision: TORCHAO_CAST_BYTES)."""
    fp8 = plan.fp8 and fp8_gemms
    amax_bytes = 2 if fp8 and fp8_recipe in DYNAMIC_FP8_RECIPES else 0
    act_dtype = Dtype.BF16 if plan.fp8 else plan.precision
    gemm_dtype = Dtype.FP8 if fp8 else act_dtype
    out = []
    before = ""          # the compute op before this one (collectives skipped): who wrote its input
    for i, op in enumerate(ops):
        producer, before = before, (op.name if op.kind != O.OpKind.COMM else before)
        if op.kind == O.OpKind.COMM:
            # overlaps the op named by overlap_with when it comes next (with a split backward the
            # weight-gradient GEMM it hid behind moves to the W step, and the collective blocks)
            overlapped = bool(op.overlap_with) and i + 1 < len(ops) and ops[i + 1].name == op.overlap_with
            out.append(Work(op.name, category, comm=op.comm, overlapped=overlapped))
            continue
        if op.kind == O.OpKind.GEMM:
            m, n, k = op.gemm
            # a batch of GEMMs is the local experts' (the only batched GEMM op): Transformer Engine's
            # GroupedLinear runs them a few streams at a time (kernels.grouped_gemm_time_s)
            t = (kernels.grouped_gemm_time_s(m, n, k, gemm_dtype, groups=op.gemm_batch) if op.gemm_batch > 1
                 else kernels.gemm_time_s(m, n, k, gemm_dtype))
            if fp8 and fp8_casts == "torchao":
                t += kernels.memory_time_s(TORCHAO_CAST_BYTES * (m * k + k * n) * op.gemm_batch)
                if fp8_recipe == "rowwise" and op.phase != O.Phase.FWD:   # cuBLAS, then the scales by hand
                    t += kernels.memory_time_s(TORCHAO_ROWWISE_POSTSCALE_BYTES * m * n * op.gemm_batch)
            elif fp8 and op.phase != O.Phase.BWD_WEIGHT:
                t += kernels.memory_time_s((_fp8_cast_bytes_per_element(op, producer) + amax_bytes)
                                           * m * k * op.gemm_batch)
        elif op.kind == O.OpKind.ATTENTION and plan.flash:
            b, h, sq, skv, d, causal = op.attention
            steps = plan.cp if skv > sq else 1
            # ring attention (context parallelism: Transformer Engine's AttnFuncWithCPAndKVP2P,
            # torch's _templated_ring_attention) calls the kernel once per ring step on the local
            # queries against one KV block of s/cp, and merges each step's partial output by its
            # logsumexp (read the running and the new output and lse, write the output)
            t = steps * kernels.attention_time_s(b, h, sq, skv // steps, d, causal, act_dtype,
                                                 backward=op.phase != O.Phase.FWD)
            if steps > 1 and op.phase == O.Phase.FWD:
                t += (steps - 1) * kernels.memory_time_s(3 * b * h * sq * (d * DTYPE_BYTES[act_dtype] + 4))
        elif op.kind == O.OpKind.ATTENTION:
            # unfused: QKᵀ and PV as batched GEMMs (backward: four of them), the s×s scores'
            # softmax, mask and dropout as memory-bound kernels (bytes from the op)
            b, h, sq, skv, d, causal = op.attention
            n_gemm = 2 if op.phase == O.Phase.FWD else 4
            t = n_gemm * kernels.gemm_time_s(sq, skv, d, act_dtype, batch=b * h) + kernels.memory_time_s(op.bytes_moved)
        else:
            t = kernels.memory_time_s(op.bytes_moved)
        out.append(Work(op.name, category, duration_s=t, flop=op.flop, bytes_moved=op.bytes_moved))
    return out


def _fp8_cast_bytes_per_element(op: O.Op, producer: str) -> int:
    """HBM bytes per input element Transformer Engine spends to hand an fp8 GEMM its input.

    A standalone cast writes the fp8 copy and its transpose for the weight-gradient GEMM
    (fp8_cast_transpose_fused: read 2, write 1 + 1 = 4 B), in the forward for the attention
    output and in the backward for gradients arriving from a residual branch or attention.
    LayerNormLinear/LayerNormMLP run the norm with an fp8 output (layernorm_fwd_fp8,
    rmsnorm_fwd_fp8) and the MLP activation with an fp8 output (fp8_gelu, gated variants): only
    the transpose is left (fp8_transpose: 2 B). In the backward the activation's gradient is cast
    and transposed inside its own kernel (fp8_cast_transpose_bgrad_dgelu_fused,
    dgated_gelu_cast_transpose): nothing is left."""
    if op.phase == O.Phase.FWD:
        return 2 if producer.endswith("norm") or producer.endswith("_act") else 4
    return 0 if producer.endswith("_act.bwd") else 4


def fuse(works: Sequence[Work], name: str) -> list[Work]:
    """Fuse runs of compute works between collectives into one work (same totals)."""
    out: list[Work] = []
    run: list[Work] = []

    def flush() -> None:
        if run:
            out.append(Work(f"{name}[{run[0].name}..{run[-1].name}]" if len(run) > 1 else run[0].name,
                            run[0].category, duration_s=sum(w.duration_s for w in run),
                            flop=sum(w.flop for w in run), bytes_moved=sum(w.bytes_moved for w in run),
                            host_s=sum(w.host_s for w in run), n_kernels=sum(w.n_kernels for w in run),
                            host_sync_s=sum(w.host_sync_s for w in run)))
            run.clear()

    isolate_next = False
    for w in works:
        if w.comm is None:
            run.append(w)
            if isolate_next:   # the op an overlapped collective hides behind stays a task of its own
                flush()
                isolate_next = False
        else:
            flush()
            out.append(w)
            isolate_next = w.overlapped
    flush()
    return out


def serial_seconds(works: Sequence[Work], comm_seconds) -> tuple[float, float, float]:
    """(compute seconds, exposed collective seconds, FLOPs) of a work list run in order, each
    collective at `comm_seconds(op, axis, size)`; an overlapped collective hides behind the
    next work and only what sticks out of it is exposed."""
    compute = comm = flop = hidden = 0.0
    for w in works:
        if w.comm is None:
            compute += w.duration_s
            flop += w.flop
            comm += max(0.0, hidden - w.duration_s)
            hidden = 0.0
        elif w.overlapped:
            hidden += comm_seconds(*w.comm)
        else:
            comm += comm_seconds(*w.comm)
    return compute, comm + hidden, flop


def _framework_matmuls(model) -> list[tuple[str, float]]:
    """The layer's forward matmuls as a PyTorch model issues them, in order, each as (the hwsim
    GEMM it is part of, its share of that GEMM's columns): q, k, v (hwsim's fused qkv), o, then
    w1, w3, w2 (SwiGLU; torchtitan FeedForward: w2(silu(w1(x)) * w3(x))) or fc1, fc2 (GELU)."""
    a, kv = model.heads, model.kv_heads or model.heads
    qkv = [("qkv", a / (a + 2 * kv)), ("qkv", kv / (a + 2 * kv)), ("qkv", kv / (a + 2 * kv)), ("attn_proj", 1.0)]
    mlp = ([("mlp_gate_up", 0.5), ("mlp_gate_up", 0.5), ("mlp_down", 1.0)] if model.mlp == MlpKind.SWIGLU
           else [("mlp_up", 1.0), ("mlp_down", 1.0)])
    return qkv + mlp


def op_sac_recompute(fwd: Sequence[Work], model) -> list[Work]:
    """What torchtitan's per-op selective activation checkpointing re-runs in the backward:
    every op not in its save list (norms, activations, rotary, residual adds) and every second
    matmul; attention and the other matmuls are saved (torchtitan 0.1.0
    torchtitan/models/llama3/infra/parallelize.py _save_list and _custom_policy: "Saves output
    of all compute ops, except every second mm"). Collectives are not re-run here."""
    share: dict[str, float] = {}
    for i, (name, frac) in enumerate(_framework_matmuls(model), start=1):
        if i % 2 == 0:
            share[name] = share.get(name, 0.0) + frac
    gemm_names = {name for name, _ in _framework_matmuls(model)}
    out = []
    for w in fwd:
        if w.comm is not None or w.name == "attn":
            continue
        if w.name in gemm_names:
            f = share.get(w.name, 0.0)
            if f > 0.0:
                out.append(replace(w, duration_s=w.duration_s * f, flop=w.flop * f, bytes_moved=w.bytes_moved * f))
            continue
        out.append(w)
    return out


def overlap_tp_with_gemms(works: Sequence[Work], gemm_names: set[str], decompose=None,
                          fuse_all_gathers: bool = True) -> list[Work]:
    """Async tensor parallelism (torch's micro-pipelined TP in torchtitan, Transformer Engine's
    tp-comm-overlap in Megatron): with sequence parallelism the all-gather before a
    column-parallel GEMM and the reduce-scatter after a row-parallel GEMM are decomposed with the
    GEMM and run under it (torch/distributed/_symmetric_memory fused_all_gather_matmul and
    fused_matmul_reduce_scatter). A tp collective right before a GEMM hides behind it; one right
    after a GEMM is issued beside it (moved before it), so the step waits for the longer of the two.
    `decompose(work)` gives the GEMM as the decomposed one runs: in tp pieces (the fused ops loop
    over the shards, one matmul per shard). `fuse_all_gathers` False: only the GEMM-then-
    reduce-scatter pairs are fused; the all-gathers run as in vanilla TP (pytorch#149990)."""
    out = list(works)
    dec = decompose or (lambda w: w)
    i = 0
    while i < len(out):
        w = out[i]
        if (w.comm is not None and w.comm[1] == "tp" and not w.overlapped
                and (fuse_all_gathers or w.comm[0] != O.Collective.ALL_GATHER.value)):
            if i + 1 < len(out) and out[i + 1].name in gemm_names:
                out[i], out[i + 1] = replace(w, overlapped=True), dec(out[i + 1])
            elif i > 0 and out[i - 1].name in gemm_names:
                out[i - 1], out[i] = replace(w, overlapped=True), dec(out[i - 1])
        i += 1
    return out


@dataclass
class LayerWork:
    fwd: list[Work]
    bwd: list[Work]            # whole backward, or input-gradient part when split
    bwd_weight: list[Work]     # weight-gradient part (zero-bubble), else empty
    recompute: list[Work]
    act_bytes: float           # activation bytes kept per micro-batch
    recompute_extra_bytes: float  # transient bytes while recomputing (full recompute)
    param_bytes_local: float   # this device's share of the layer's parameters (bf16/fp16 copy)
    n_params_local: float
    n_expert_params_local: float = 0.0   # of which routed experts' (reduced over the expert-data-parallel group)


def layer_work(model, shard: Shard, plan: Plan, kernels: KernelModel, moe_layer: bool, split: bool,
                granularity: Granularity, host=None, software=None, windowed: bool = False) -> LayerWork:
    """`host` (hwsim.software.host.HostPlan, or None for a host that keeps ahead) sets each
    work's host dispatch time; `software` (hwsim.software.profiles.SoftwareStack, or None for
    hwsim's default stack) decides the fp8 casts, what parallel.recompute: selective re-runs,
    eager elementwise kernels, async TP and how gradients accumulate."""
    fp8_recipe = software.fp8_recipe.value if software else "delayed"
    fp8_casts = software.fp8_casts if software else "te"
    selective = software.selective_recompute.value if software else "attention"
    eager = software.unfused_elementwise if software else None
    async_tp = software.async_tp if software else False
    grad_accumulation_bytes = software.grad_accumulation_bytes if software else 0.0
    fwd_ops = O.layer_forward_ops(model, shard, moe_layer, flash=plan.flash, windowed=windowed)
    bwd_ops = O.layer_backward_ops(model, shard, moe_layer, flash=plan.flash, windowed=windowed)

    def timed(ops, category: str) -> list[Work]:
        return unfuse(time_ops(ops, kernels, plan, category, fp8_recipe, fp8_casts=fp8_casts), eager, kernels)

    fwd = timed(fwd_ops, "fwd")
    if plan.recompute == Recompute.FULL:
        rec = timed(fwd_ops, "recompute")
    elif plan.recompute == Recompute.SELECTIVE and selective == "op":
        rec = op_sac_recompute(timed(fwd_ops, "recompute"), model)
    elif plan.recompute == Recompute.SELECTIVE:
        # Korthikanti et al. 2022 §5: selective recompute re-runs the attention core (QKᵀ,
        # softmax, dropout, ·V) in the backward — Megatron-Core's "core_attn" checkpoint
        rec = timed([o for o in fwd_ops if o.kind == O.OpKind.ATTENTION], "recompute")
    else:
        rec = []
    if split:
        bwd = timed([o for o in bwd_ops if o.phase != O.Phase.BWD_WEIGHT], "bwd")
        bww = timed([o for o in bwd_ops if o.phase == O.Phase.BWD_WEIGHT], "bwd-weight")
    else:
        bwd, bww = timed(bwd_ops, "bwd"), []
    if async_tp and plan.sequence_parallel and plan.tp > 1:
        shapes = {o.name: o for o in (*fwd_ops, *bwd_ops) if o.kind == O.OpKind.GEMM}
        gemm_dtype = Dtype.FP8 if plan.fp8 else plan.precision

        def decompose(w: Work) -> Work:
            """The GEMM in tp pieces: the token rows split (a weight gradient: its token
            contraction split), each piece a matmul of its own."""
            op = shapes[w.name]
            m, n, k = op.gemm
            tp = plan.tp
            piece = ((m, n, -(-k // tp)) if w.name.endswith(".dw") else (-(-m // tp), n, k))
            whole = kernels.gemm_time_s(m, n, k, gemm_dtype, batch=op.gemm_batch)
            pieces = tp * kernels.gemm_time_s(*piece, gemm_dtype, batch=op.gemm_batch)
            return replace(w, duration_s=w.duration_s - whole + pieces, n_kernels=w.n_kernels + tp - 1)

        ag = not (plan.fp8 and fp8_recipe == "rowwise" and fp8_casts == "torchao")   # pytorch#149990, above
        fwd, rec, bwd, bww = (overlap_tp_with_gemms(x, set(shapes), decompose, fuse_all_gathers=ag)
                              for x in (fwd, rec, bwd, bww))
    if grad_accumulation_bytes > 0.0:
        # the weight gradients added into the accumulation buffer by a kernel of their own, every
        # micro-batch (per parameter: `grad_accumulation_bytes`), after the layer's backward
        n_bytes = O.layer_param_count(model, moe_layer, plan.tp, plan.ep, etp=plan.etp) * grad_accumulation_bytes
        add = Work("grad_accumulate", "bwd-weight" if split else "bwd", duration_s=kernels.memory_time_s(n_bytes),
                   bytes_moved=n_bytes)
        bwd, bww = (bwd, bww + [add]) if split else (bwd + [add], bww)
    if host is not None:
        fwd = host.apply(fwd, "fwd", per_layer=True)
        rec = host.apply(rec, "recompute", per_layer=plan.recompute == Recompute.FULL) if rec else rec
        both = host.apply(bwd + bww, "bwd", per_layer=True)   # the layer's autograd nodes, split or not
        bwd, bww = both[:len(bwd)], both[len(bwd):]
        syncs = getattr(host.counts, "forward_host_syncs", 0) if host.counts is not None else 0
        if syncs:
            fwd = with_mlp_sync(fwd, syncs * host.costs.host_sync_s)
            rec = with_mlp_sync(rec, syncs * host.costs.host_sync_s) if plan.recompute == Recompute.FULL else rec
    if granularity in (Granularity.LAYER, Granularity.STEP):
        fwd, bwd, bww, rec = fuse(fwd, "fwd"), fuse(bwd, "bwd"), fuse(bww, "bwd-weight"), fuse(rec, "recompute")
    act = (O.op_sac_activation_bytes(model, shard, moe_layer)
           if plan.recompute == Recompute.SELECTIVE and selective == "op" and plan.flash else
           O.layer_activation_bytes(model, shard, plan.recompute, moe_layer=moe_layer, flash=plan.flash,
                                    windowed=windowed))
    extra = (O.layer_activation_bytes(model, shard, Recompute.NONE, moe_layer=moe_layer, flash=plan.flash,
                                      windowed=windowed) - act
             if plan.recompute == Recompute.FULL else 0.0)
    dense, expert = layer_param_split(model, moe_layer, plan.tp, plan.ep, plan.etp)
    n_local = dense + expert
    return LayerWork(fwd, bwd, bww, rec, act, extra, n_local * shard.dtype_bytes, n_local, expert)





def with_mlp_sync(works: list[Work], sync_s: float) -> list[Work]:
    """The layer's forward with the host blocking on the GPU before its MLP (after the
    post-attention norm), as Megatron-DeepSpeed's ParallelTransformerLayer.forward does with
    torch.tensor(0.0, device=...) (a blocking H2D copy: cudaMemcpyAsync + cudaStreamSynchronize)."""
    names = [w.name for w in works]
    if "mlp_norm" not in names:
        return works
    i = next((j for j in range(names.index("mlp_norm") + 1, len(works)) if works[j].comm is None), None)
    if i is None:
        return works
    out = list(works)
    out[i] = replace(works[i], host_sync_s=works[i].host_sync_s + sync_s)
    return out


def per_layer_work(model, shard: Shard, plan: Plan, kernels: KernelModel, split: bool, granularity: Granularity,
                   host, software):
    """layer index -> its LayerWork under the resolved software stack (hwsim.software.profiles
    .SoftwareStack): dense or MoE, and with torchtitan's layer-level selective checkpointing
    every k-th block fully checkpointed and the others not."""
    selective = software.selective_recompute.value
    layer_ac = plan.recompute == Recompute.SELECTIVE and selective == "layer"
    interval = max(software.selective_layer_interval, 1)
    dense_layers = model.moe.dense_layers if model.moe else model.layers
    variants = {}

    def work_of(layer: int) -> LayerWork:
        ac = ((layer + 1) % interval == 0) if layer_ac else None
        key = (bool(model.moe) and layer >= dense_layers, ac, is_windowed_layer(model, layer))
        if key not in variants:
            moe, _, windowed = key
            p_ac = plan if ac is None else replace(plan, recompute=Recompute.FULL if ac else Recompute.NONE)
            h_ac = host if host is None or ac is None else replace(host, checkpointed=ac)
            variants[key] = layer_work(model, shard, p_ac, kernels, moe, split, granularity, h_ac, software, windowed)
        return variants[key]
    return work_of
