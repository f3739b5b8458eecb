"""Compile one training step (model × plan × cluster) into a TaskGraph.

The step is issued as a framework would: for each pipeline stage, its schedule's steps
(forward, backward, weight-gradient of one micro-batch on one model chunk) in order, each
expanded into the ops of its layers; tensor/context/expert-parallel collectives on the
device's comm stream, pipeline sends on the p2p streams, data-parallel reductions and ZeRO
gathers on the dp stream, memory allocations and frees beside the ops that make and free
the tensors.

Folding (DESIGN.md, "Scale"): by default one representative device per pipeline stage is
simulated; the tensor-, context- and data-parallel peers of a stage do the same work at the
same time. Their collectives are still charged in full: each collective's transfers carry the
flows of every concurrent group of that stage (the "mirror" groups), on the real topology, so
contention for NICs and switches is as in the unfolded run. `fold=False` simulates every
device, with lock-step peers emitted instruction by instruction.

Tasks are issued in one global order that respects every data dependency (a topological merge
of the stages' schedules), so every stream's in-order list agrees with every other's and a
rendezvous can never deadlock.

The module is longer than our ~400 lines: compile_step's closures (send, receive, gather,
run_layers, the issue loop) share one emitter's cursors and the step's bookkeeping; what does not
need that state lives in work.py (ops timed, per-layer work under a software stack) and
emitter.py (tasks issued).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from operator import itemgetter
from typing import Sequence

from hwsim.config.schema import Dtype, Recompute, ScenarioConfig
from hwsim.engine.task import MemKind, Stream, Task, TaskKind
from hwsim.engine.taskgraph import TaskGraph
from hwsim.hardware.kernels import KernelModel
from hwsim.hardware.topology import Topology
from hwsim.network.collectives import CollectiveOp, collective_transfers
from hwsim.network.maxmin import MaxMinFair
from hwsim.network.transfer import NetworkModel
from hwsim.software.eager import unfuse
from hwsim.software.host import OPTIMIZER_OPS_PER_TENSOR, host_plan
from hwsim.software.profiles import SoftwareStack, resolve_software
from hwsim.workload import ops as O
from hwsim.workload.memory import moe_static_memory_bytes, stage_param_split, stage_param_tensors
from hwsim.workload.plan import Plan, resolve_plan
from hwsim.workload.schedules import Action, chunk_layers, pipeline_schedule, split_backward, step_times
from hwsim.workload.emitter import AXIS_STREAM as _AXIS_STREAM, Emitter as _Emitter
from hwsim.workload.shard import Shard
from hwsim.workload.work import (Granularity, LayerWork as _LayerWork, Work, fuse,  # noqa: F401
                                 layer_work as _layer_work, per_layer_work, serial_seconds, time_ops)


@dataclass
class CompiledStep:
    graph: TaskGraph
    plan: Plan
    scenario: ScenarioConfig
    topology: Topology
    simulated: tuple[int, ...]
    stage_of: dict[int, int]
    stands_for: dict[int, int]          # simulated device -> real devices it represents
    initial_memory: dict[int, dict[MemKind, float]]
    model_flop: float                   # whole cluster, one step, no recompute
    folded: bool
    granularity: Granularity
    software: SoftwareStack | None = None


def compile_step(scenario: ScenarioConfig, topology: Topology, kernels: KernelModel, fold: bool = True,
                 granularity: Granularity = Granularity.OP, network: NetworkModel | None = None,
                 software: SoftwareStack | None = None,
                 stage_kernels: Sequence[KernelModel] | None = None) -> CompiledStep:
    """`network` prices collectives in isolation for the STEP granularity (max-min by default).
    `software`: the resolved stack (default: resolved from the scenario): host dispatch,
    gradient reduction dtype, optimizer fusion, host syncs. `stage_kernels`: each pipeline
    stage's kernel model (mixed accelerators, cluster.groups; default `kernels` everywhere): a
    stage's layers, its embedding or head and its optimizer are timed on its own device."""
    if network is None:
        network = MaxMinFair(topology.capacity_bytes_per_s)
    if software is None:
        software = resolve_software(scenario)
    plan = resolve_plan(scenario)
    grad_bytes = software.grad_reduce_bytes
    host = host_plan(software, plan.recompute == Recompute.FULL, plan.precision == Dtype.FP16)
    model = scenario.model
    shard = Shard(micro_batch=plan.micro_batch, seq_len=model.seq_len, tp=plan.tp, cp=plan.cp, ep=plan.ep,
                  sequence_parallel=plan.sequence_parallel, dtype_bytes=4 if plan.precision == Dtype.FP32 else 2,
                  fp8=plan.fp8, etp=plan.etp, dispatcher=software.moe_dispatcher.value)
    split = split_backward(plan.schedule)
    recipe = software.fp8_recipe.value
    stage_kernels = tuple(stage_kernels) if stage_kernels else (kernels,) * plan.pp
    works = {}
    for k in stage_kernels:
        if id(k) not in works:
            works[id(k)] = per_layer_work(model, shard, plan, k, split, granularity, host, software)
    stage_of_layer = {x: s for s, chunks in enumerate(chunk_layers(model.layers, plan.pp, plan.virtual_stages))
                      for c in chunks for x in c}

    layer_works: dict[int, _LayerWork] = {}   # the issue loop asks for each layer's work many times

    def layer_work(layer: int):   # on its stage's device (MTP's layer after the last: the last stage)
        lw = layer_works.get(layer)
        if lw is None:
            lw = layer_works[layer] = works[id(stage_kernels[stage_of_layer.get(layer, plan.pp - 1)])](layer)
        return lw

    kernels_first, kernels = stage_kernels[0], stage_kernels[-1]   # embedding on the first stage, head on the last
    emb_fwd, emb_bwd = (time_ops(x, kernels_first, plan, c, recipe, fp8_casts=software.fp8_casts)
                        for x, c in zip(O.embedding_ops(model, shard), ("fwd", "bwd")))
    loss = software.loss.value
    head_fwd, head_bwd = (unfuse(time_ops(x, kernels, plan, c, recipe, software.fp8_output_layer, software.fp8_casts),
                                 software.unfused_elementwise, kernels)
                          for x, c in zip(O.head_ops(model, shard, loss), ("fwd", "bwd")))
    if host is not None:
        emb_fwd, emb_bwd, head_fwd, head_bwd = (host.apply(w, c) for w, c in
                                                ((emb_fwd, "fwd"), (emb_bwd, "bwd"), (head_fwd, "fwd"), (head_bwd, "bwd")))
    if granularity in (Granularity.LAYER, Granularity.STEP):
        emb_fwd, emb_bwd, head_fwd, head_bwd = (fuse(w, n) for w, n in
                                                ((emb_fwd, "emb"), (emb_bwd, "emb"), (head_fwd, "head"), (head_bwd, "head")))
    head_act = O.head_activation_bytes(model, shard, loss)
    head_transient = O.head_transient_bytes(model, shard, loss)
    if model.mtp_layers:
        # DeepSeek-V3's multi-token prediction on the last stage (Megatron-Core puts the MTP block
        # there): per module the 2h -> h projection, one layer and the shared head and loss again
        mtp_lw = layer_work(model.layers)
        proj = O.Op("mtp_proj", O.OpKind.GEMM, O.Phase.FWD, flop=2.0 * shard.tokens * model.hidden * 2 * model.hidden / plan.tp,
                    gemm=(shard.tokens, model.hidden // plan.tp, 2 * model.hidden))
        proj_f = time_ops([proj], kernels, plan, "fwd", recipe, fp8_casts=software.fp8_casts)
        proj_b = [replace(w, name=w.name + ".bwd", category="bwd", duration_s=2 * w.duration_s, flop=2 * w.flop)
                  for w in proj_f]
        for _ in range(model.mtp_layers):
            head_fwd = head_fwd + proj_f + mtp_lw.fwd + head_fwd[:]
            head_bwd = head_bwd + mtp_lw.recompute + mtp_lw.bwd + mtp_lw.bwd_weight + proj_b
            head_act += mtp_lw.act_bytes + O.head_activation_bytes(model, shard, loss)

    pp, v = plan.pp, plan.virtual_stages
    n_virtual = pp * v
    layers_of = chunk_layers(model.layers, pp, v)          # [stage][chunk] -> range of layers
    schedule = pipeline_schedule(plan.schedule, pp, plan.n_micro, v)
    graph = TaskGraph()
    em = _Emitter(graph, plan, topology, fold)
    zero3 = plan.zero_stage >= 3
    # ZeRO-3/FSDP under pipeline parallelism keeps each chunk's parameters gathered from its first
    # forward to its last backward and accumulates unsharded gradients, reduce-scattered once, at
    # the chunk's last backward: torchtitan (parallelize_llama.apply_fsdp) sets
    # reshard_after_forward=False when pp is on "to avoid per-microbatch all-gathers", and
    # torch.distributed.pipelining (stage.backward_maybe_with_nosync) turns off
    # reshard_after_backward and gradient sync until the last backward.
    keep_gathered = zero3 and pp > 1
    gathered_chunks: set[tuple[int, int]] = set()
    grad_chunks: set[tuple[int, int]] = set()
    dp_op = "all-reduce" if plan.zero_stage == 0 else "reduce-scatter"

    # Which step of a stage is the last to touch each chunk's weight gradients.
    last_grad_step: dict[tuple[int, int], int] = {}
    for s in range(pp):
        for i, st in enumerate(schedule[s]):
            if st.action == (Action.W if split else Action.B):
                last_grad_step[(s, st.chunk)] = i

    p2p_bytes = plan.micro_batch * model.seq_len / plan.cp * model.hidden * shard.dtype_bytes / plan.tp
    p2p: dict[tuple[str, int, int], int] = {}        # (direction, mb, receiving virtual stage) -> task
    dp_tasks: dict[int, list[int]] = {s: [] for s in range(pp)}

    hops: dict[tuple[int, int], list] = {}

    def hop(stage_from: int, stage_to: int) -> list[tuple[tuple[int, int], tuple]]:
        """(simulated pair, transfers) of each task of a pipeline hop, the same for every
        micro-batch: one per (tp, cp, dp) coordinate; folded, the representatives carry every pair."""
        if (stage_from, stage_to) not in hops:
            pairs = em.pipeline_pairs(stage_from, stage_to)
            tasks = ([((plan.rank(pp=stage_from), plan.rank(pp=stage_to)), pairs)] if fold
                     else [(pr, (pr,)) for pr in pairs])
            hops[(stage_from, stage_to)] = [(sim, em.transfers("send-recv", "pp", stage_from, p2p_bytes, groups,
                                                                       peer=stage_to))
                                            for sim, groups in tasks]
        return hops[(stage_from, stage_to)]

    def send(stage_from: int, stage_to: int, key: tuple[str, int, int], stream: Stream, devices: tuple[int, ...]):
        ids = []
        for sim, transfers in hop(stage_from, stage_to):
            ids.append(graph.add(Task(f"send {key[0]} mb{key[1]} vs{key[2]}", TaskKind.COLLECTIVE, sim, stream,
                                      transfers=transfers, category="pp", micro_batch=key[1], bytes_moved=p2p_bytes),
                                 em.cursor.get(sim[0], ())))
        p2p[key] = ids
        if p2p_sync:
            em.host_sync(devices, host.costs.host_sync_s, f"p2p sync after send {key[0]} mb{key[1]}", deps=ids)

    def receive(key: tuple[str, int, int], devices: tuple[int, ...]) -> None:
        ids = p2p.pop(key)
        # the received activation joins what the device was already waiting on: a collective
        # that ended the previous step (a tensor-parallel all-reduce, a step's fused collectives)
        # is blocking in the frameworks, so the next compute waits for it as well
        if fold:
            for d in devices:
                em.cursor[d] = tuple(em.cursor.get(d, ())) + (ids[0],)
        else:
            by_dst = {graph.tasks[i].devices[1]: i for i in ids}
            for d in devices:
                em.cursor[d] = tuple(em.cursor.get(d, ())) + (by_dst[d],)
        if p2p_sync:
            em.host_sync(devices, host.costs.host_sync_s, f"p2p sync after recv {key[0]} mb{key[1]}")

    # Megatron-LM 2021's pipeline p2p (megatron/p2p_communication.py _communicate) waits on its
    # requests and then calls torch.cuda.synchronize(): the host dispatches nothing more until
    # the GPU has finished everything issued, the transfer included
    p2p_sync = host is not None and software.p2p_sync

    def gather(stage: int, devices, lw: _LayerWork, layer: int, mb: int, history: list) -> None:
        """ZeRO-3/FSDP: all-gather a layer's parameters, prefetched while the layer before the
        previous one computes (FSDP's one-unit-ahead prefetch); the layer's compute waits for it."""
        ids = em.collective(stage, devices, "all-gather", "dp", lw.param_bytes_local,
                            f"zero3 gather L{layer}", "dp", layer, mb, Stream.DP_GATHER,
                            deps=history[-2] if len(history) >= 2 else (), advance=False)
        em.memory(devices, TaskKind.ALLOC, lw.param_bytes_local, MemKind.WEIGHTS, f"gathered L{layer}", layer, mb)
        for d in devices:
            em.cursor[d] = tuple(em.cursor.get(d, ())) + tuple(ids)
        if copy_out:
            em.compute(devices, copy_out_work(lw.param_bytes_local, f"fsdp2 copy-out L{layer}", stage), layer, mb,
                       "fsdp")

    # FSDP2 (fully_shard) gathers a unit's parameters into one flat buffer and then copies them out
    # into the per-parameter tensors on the compute stream (torch/distributed/fsdp/_fully_shard/
    # _fsdp_param_group.py wait_for_unshard -> _fsdp_collectives.foreach_all_gather_copy_out:
    # torch.split_with_sizes_copy): a memory-bound kernel reading and writing the gathered bytes.
    # FSDP1's flat parameter is gathered in place (no copy-out).
    copy_out = zero3 and software.fsdp_version == 2

    def copy_out_work(n_bytes: float, name: str, stage: int) -> Work:
        w = Work(name, "fsdp", duration_s=stage_kernels[stage].memory_time_s(2 * n_bytes), bytes_moved=2 * n_bytes)
        return host.apply([w], "fwd")[0] if host is not None else w

    comm_time_cache: dict[tuple, float] = {}

    def serial_time(stage: int, works: Sequence[Work]) -> tuple[float, float, float]:
        def isolated(op: str, axis: str, size: float) -> float:
            key = (op, axis, stage, size)
            if key not in comm_time_cache:
                comm_time_cache[key] = sum(t.latency_s + (t.max_link_bytes / network.rates([t])[0] if t.link_bytes else 0.0)
                                           for t in em.transfers(op, axis, stage, size, em._groups(axis, stage)))
            return comm_time_cache[key]
        return serial_seconds(works, isolated)

    fused_cache: dict[tuple, list] = {}

    def fused_parts(stage: int, layer_ids, phase: str) -> list:
        """(the fused compute work, its exposed collective seconds, their axis) per part of a
        step: the same for every micro-batch, so built once per (stage, layers, phase)."""
        key = (stage, layer_ids[0], layer_ids[-1], phase)
        if key not in fused_cache:
            lws = [layer_work(x) for x in layer_ids]
            parts = []
            if phase == "F":
                parts.append(("fwd", [w for lw in lws for w in lw.fwd]))
            if phase in ("B", "BW") and any(lw.recompute for lw in lws):
                parts.append(("recompute", [w for lw in lws for w in lw.recompute]))
            if phase in ("B", "BW"):
                parts.append(("bwd", [w for lw in lws for w in lw.bwd]))
            if phase in ("W", "BW"):
                parts.append(("bwd-weight", [w for lw in lws for w in lw.bwd_weight]))
            fused_cache[key] = [fused_part(stage, f"{c} L{layer_ids[0]}..L{layer_ids[-1]}", c, ws) for c, ws in parts]
        return fused_cache[key]

    def fused_part(stage: int, name: str, category: str, ws: list[Work]) -> tuple[Work, float, str]:
        compute, comm, flop = serial_time(stage, ws)
        work = Work(name, category, duration_s=compute, flop=flop, host_s=sum(w.host_s for w in ws),
                    n_kernels=max(sum(w.n_kernels for w in ws if w.comm is None), 1))
        return work, comm, next((w.comm[1] for w in ws if w.comm), "")

    activations_cache: dict[tuple, tuple[float, float | None]] = {}

    def fused_activations(layer_ids) -> tuple[float, float | None]:
        """(the layers' stashed activation bytes, the largest recompute transient or None
        without recompute)."""
        key = (layer_ids[0], layer_ids[-1])
        if key not in activations_cache:
            lws = [layer_work(x) for x in layer_ids]
            activations_cache[key] = (sum(lw.act_bytes for lw in lws),
                                      max(lw.recompute_extra_bytes for lw in lws) if any(lw.recompute for lw in lws)
                                      else None)
        return activations_cache[key]

    def run_step_fused(stage: int, devices, layer_ids, mb: int, phase: str, gather_now: bool) -> None:
        l0, name0 = layer_ids[0], f"L{layer_ids[0]}..L{layer_ids[-1]}"
        act_bytes, recompute_bytes = fused_activations(layer_ids)
        gathered = gather_now
        rest_ids: list[int] = []
        held = 0.0
        if gathered:
            lws = [layer_work(x) for x in layer_ids]
            # ZeRO-3/FSDP at step granularity: the first layer's gather gates the step's compute;
            # the other layers' gathers run beside it (FSDP prefetches layer by layer) and the
            # step ends when both are done; about two layers are held gathered at a time.
            first_ids = em.collective(stage, devices, "all-gather", "dp", lws[0].param_bytes_local,
                                      f"zero3 gather L{l0}", "dp", l0, mb, Stream.DP_GATHER, advance=False)
            rest = sum(lw.param_bytes_local for lw in lws[1:])
            if rest > 0:
                rest_ids = em.collective(stage, devices, "all-gather", "dp", rest, f"zero3 gather {name0}", "dp",
                                         l0, mb, Stream.DP_GATHER, advance=False)
            held = (sum(lw.param_bytes_local for lw in lws) if keep_gathered else
                    lws[0].param_bytes_local + max((lw.param_bytes_local for lw in lws[1:]), default=0.0))
            em.memory(devices, TaskKind.ALLOC, held, MemKind.WEIGHTS, f"gathered {name0}", l0, mb)
            for d in devices:
                em.cursor[d] = tuple(em.cursor.get(d, ())) + tuple(first_ids)
            if copy_out:
                em.compute(devices, copy_out_work(sum(lw.param_bytes_local for lw in lws), f"fsdp2 copy-out {name0}", stage),
                           l0, mb, "fsdp")
        if phase == "F":
            em.memory(devices, TaskKind.ALLOC, act_bytes, MemKind.ACTIVATIONS, f"act {name0}", l0, mb)
        elif phase in ("B", "BW") and recompute_bytes is not None:
            # one layer is recomputed at a time: the transient is the largest layer's
            em.memory(devices, TaskKind.ALLOC, recompute_bytes, MemKind.ACTIVATIONS, f"recompute {name0}", l0, mb)
        for work, comm, axis in fused_parts(stage, layer_ids, phase):
            em.compute(devices, work, l0, mb)
            if comm > 0:
                for d in devices:
                    tid = graph.add(Task(f"{axis} collectives of {work.name}", TaskKind.COLLECTIVE, (d,), Stream.COMM,
                                         duration_s=comm, category=axis, layer=l0, micro_batch=mb),
                                    em.cursor.get(d, ()))
                    em.cursor[d] = (tid,)
        if rest_ids:
            for d in devices:
                em.cursor[d] = tuple(em.cursor.get(d, ())) + tuple(rest_ids)
        if gathered and not keep_gathered:
            em.memory(devices, TaskKind.FREE, held, MemKind.WEIGHTS, f"gathered {name0}", l0, mb)
        if phase in ("B", "BW"):
            em.memory(devices, TaskKind.FREE, act_bytes + (recompute_bytes or 0.0),
                      MemKind.ACTIVATIONS, f"act {name0}", l0, mb)
        if zero3 and phase in ("BW", "W") and not keep_gathered:
            dp_tasks[stage] += em.collective(
                stage, devices, "reduce-scatter", "dp", sum(layer_work(x).n_params_local for x in layer_ids) * grad_bytes,
                f"zero3 grad reduce {name0}", "dp", l0, mb, Stream.DP, advance=False)

    def run_layers(stage: int, devices, layer_ids, mb: int, phase: str, last_mb_for_grads: bool,
                   gather_now: bool) -> None:
        if (granularity == Granularity.STEP and layer_ids
                and not (phase in ("BW", "W") and last_mb_for_grads)):
            run_step_fused(stage, devices, layer_ids, mb, phase, gather_now)
            return
        history: list[tuple[int, ...]] = []
        for layer in layer_ids:
            lw = layer_work(layer)
            history.append(tuple(x for d in devices for x in em.cursor.get(d, ())))
            if phase == "F":
                if gather_now:
                    gather(stage, devices, lw, layer, mb, history)
                em.memory(devices, TaskKind.ALLOC, lw.act_bytes, MemKind.ACTIVATIONS, f"act L{layer}", layer, mb)
                for w in lw.fwd:
                    _emit(stage, devices, w, layer, mb)
                if gather_now and not keep_gathered:
                    em.memory(devices, TaskKind.FREE, lw.param_bytes_local, MemKind.WEIGHTS,
                              f"gathered L{layer}", layer, mb)
            else:
                if phase in ("B", "BW") and gather_now:
                    gather(stage, devices, lw, layer, mb, history)
                if phase in ("B", "BW") and lw.recompute:
                    em.memory(devices, TaskKind.ALLOC, lw.recompute_extra_bytes, MemKind.ACTIVATIONS,
                              f"recompute L{layer}", layer, mb)
                    for w in lw.recompute:
                        _emit(stage, devices, w, layer, mb)
                for w in (lw.bwd if phase in ("B", "BW") else []) + (lw.bwd_weight if phase in ("W", "BW") else []):
                    _emit(stage, devices, w, layer, mb)
                if phase in ("B", "BW"):
                    em.memory(devices, TaskKind.FREE, lw.act_bytes + lw.recompute_extra_bytes, MemKind.ACTIVATIONS,
                              f"act L{layer}", layer, mb)
                    if gather_now:
                        em.memory(devices, TaskKind.FREE, lw.param_bytes_local, MemKind.WEIGHTS,
                                  f"gathered L{layer}", layer, mb)
                grads_done = phase in ("BW", "W")
                if zero3 and grads_done and (last_mb_for_grads or not keep_gathered):
                    dp_tasks[stage] += em.collective(
                        stage, devices, "reduce-scatter", "dp", lw.n_params_local * grad_bytes,
                        f"zero3 grad reduce L{layer}", "dp", layer, mb, Stream.DP, advance=False)
                elif grads_done and last_mb_for_grads and reduce_needed and not overlap_reduce:
                    deferred.setdefault(stage, []).append(layer)
                elif grads_done and last_mb_for_grads and reduce_needed:
                    bucket.append(layer)
                    if sum(layer_work(x).n_params_local for x in bucket) * grad_bytes >= scenario.parallel.dp_bucket:
                        flush_bucket(stage, devices)

    bucket: list[int] = []
    reduce_needed = plan.grad_shards > 1 or (model.moe is not None and plan.expert_grad_shards > 1)
    # parallel.overlap_grad_reduce false (Megatron-LM 2020-21 LocalDDP, DeepSpeed ZeRO 0/1): the
    # gradients are reduced after the stage's last backward, in one collective over all of them
    overlap_reduce = scenario.parallel.overlap_grad_reduce
    deferred: dict[int, list[int]] = {}

    def grad_reduce(stage: int, devices, layer_ids, op: str, name: str, layer: int, n_bytes_per_param: float,
                    stream: Stream = Stream.DP) -> list[int]:
        """The dp reduction (or gather) of layers' gradients: the dense part over the dp·cp group,
        the routed experts' part over the expert-data-parallel group (MoE parallel folding)."""
        expert = sum(layer_work(x).n_expert_params_local for x in layer_ids)
        dense = sum(layer_work(x).n_params_local for x in layer_ids) - expert
        ids = []
        if dense > 0 and plan.grad_shards > 1:
            ids += em.collective(stage, devices, op, "dp", dense * n_bytes_per_param, name, "dp", layer, -1, stream,
                                 advance=False)
        if expert > 0 and plan.expert_grad_shards > 1:
            ids += em.collective(stage, devices, op, "edp", expert * n_bytes_per_param, name + " (experts)", "dp",
                                 layer, -1, stream, advance=False)
        return ids

    def flush_bucket(stage: int, devices) -> None:
        if not bucket:
            return
        dp_tasks[stage] += grad_reduce(stage, devices, list(bucket), dp_op,
                                       f"dp grad {dp_op} L{bucket[-1]}..L{bucket[0]}", bucket[0], grad_bytes)
        bucket.clear()

    overlapping: dict[int, tuple[int, ...]] = {}   # device -> collective running beside its next compute

    def _emit(stage: int, devices, w: Work, layer: int, mb: int) -> None:
        if w.comm is None:
            em.compute(devices, w, layer, mb)
            for d in devices:
                if d in overlapping:
                    em.cursor[d] = em.cursor[d] + overlapping.pop(d)
        else:
            op, axis, size = w.comm
            ids = em.collective(stage, devices, op, axis, size, w.name, axis, layer, mb,
                                _AXIS_STREAM.get(axis, Stream.COMM), advance=not w.overlapped)
            if w.overlapped:
                for d in devices:
                    overlapping[d] = overlapping.get(d, ()) + tuple(
                        i for i in ids if d in graph.tasks[i].devices or fold)

    def _issue_step(s: int, st, j: int, index: int) -> None:
        devices = em.role_devices(s)
        layer_ids = layers_of[s][st.chunk]
        mb = st.micro_batch
        last = index == last_grad_step.get((s, st.chunk))
        key = (s, st.chunk)
        # only ZeRO-3 under pipeline parallelism holds a whole chunk's gradients
        chunk_params = sum(layer_work(x).n_params_local for x in layer_ids) if keep_gathered else 0.0
        if keep_gathered and st.action == (Action.W if split else Action.B) and key not in grad_chunks:
            grad_chunks.add(key)   # the unsharded gradients accumulate over the micro-batches
            em.memory(devices, TaskKind.ALLOC, chunk_params * grad_bytes, MemKind.GRADIENTS,
                      f"unsharded grads chunk{st.chunk}", -1, mb)
        if st.action == Action.F:
            if j > 0:
                receive(("F", mb, j), devices)
            if j == 0:
                for w in emb_fwd:
                    _emit(s, devices, w, -1, mb)
            gather_now = zero3 and not (keep_gathered and key in gathered_chunks)
            gathered_chunks.add(key)
            run_layers(s, devices, layer_ids, mb, "F", False, gather_now)
            if j == n_virtual - 1:
                em.memory(devices, TaskKind.ALLOC, head_act, MemKind.ACTIVATIONS, "logits", -1, mb)
                em.memory(devices, TaskKind.ALLOC, head_transient, MemKind.ACTIVATIONS, "loss transient", -1, mb)
                for w in head_fwd:
                    _emit(s, devices, w, -1, mb)
                em.memory(devices, TaskKind.FREE, head_transient, MemKind.ACTIVATIONS, "loss transient", -1, mb)
            else:
                send(s, (j + 1) % pp, ("F", mb, j + 1), Stream.P2P, devices)
            return
        if st.action == Action.B:
            if j < n_virtual - 1:
                receive(("B", mb, j), devices)
            else:
                em.memory(devices, TaskKind.ALLOC, head_transient, MemKind.ACTIVATIONS, "loss transient", -1, mb)
                for w in head_bwd:
                    _emit(s, devices, w, -1, mb)
                em.memory(devices, TaskKind.FREE, head_transient, MemKind.ACTIVATIONS, "loss transient", -1, mb)
                em.memory(devices, TaskKind.FREE, head_act, MemKind.ACTIVATIONS, "logits", -1, mb)
            run_layers(s, devices, list(reversed(layer_ids)), mb, "B" if split else "BW", last,
                       zero3 and not keep_gathered)
            if j == 0:
                for w in emb_bwd:
                    _emit(s, devices, w, -1, mb)
            else:
                send(s, (j - 1) % pp, ("B", mb, j - 1), Stream.P2P_BWD, devices)
        else:  # W: weight gradients of the chunk (zero-bubble)
            run_layers(s, devices, list(reversed(layer_ids)), mb, "W", last, False)
        if last:
            flush_bucket(s, devices)
            if keep_gathered:
                em.memory(devices, TaskKind.FREE, sum(layer_work(x).param_bytes_local for x in layer_ids),
                          MemKind.WEIGHTS, f"gathered chunk{st.chunk}", -1, mb)
                em.memory(devices, TaskKind.FREE, chunk_params * grad_bytes, MemKind.GRADIENTS,
                          f"unsharded grads chunk{st.chunk}", -1, mb)

    # ZeRO-1/2 (distributed optimizer): parameters are all-gathered after the optimizer; with
    # overlap_param_gather that gather overlaps the next step's forward, so in the steady state
    # it is issued at the start of the step, one bucket per chunk, and the chunk's first forward
    # waits for it.
    if plan.zero_stage in (1, 2) and (plan.grad_shards > 1 or plan.expert_grad_shards > 1):
        for s in range(pp):
            devices = em.role_devices(s)
            for c in range(v):
                ids = grad_reduce(s, devices, list(layers_of[s][c]), "all-gather", f"param gather chunk{c}", -1,
                                  shard.dtype_bytes, Stream.DP_GATHER)
                for d in devices:
                    em.cursor[d] = tuple(em.cursor.get(d, ())) + tuple(ids)

    # Issue the stages' steps in the order they are expected to start (a list-scheduling pass
    # with each step's compute time), so that every stream's issue order follows time as a
    # framework's program order would; ties go to the lower stage.
    seconds_of: dict[tuple, float] = {}   # (stage, chunk, action) -> seconds: the same for every micro-batch

    def step_seconds(s: int, st) -> float:
        key = (s, st.chunk, st.action)
        if key not in seconds_of:
            seconds_of[key] = chunk_seconds(s, st)
        return seconds_of[key]

    def chunk_seconds(s: int, st) -> float:
        layer_ids = layers_of[s][st.chunk]
        j = st.chunk * pp + s
        if st.action == Action.F:
            extra = (emb_fwd if j == 0 else []) + (head_fwd if j == n_virtual - 1 else [])
            return sum(w.duration_s for x in layer_ids for w in layer_work(x).fwd) + sum(w.duration_s for w in extra)
        if st.action == Action.B:
            extra = (emb_bwd if j == 0 else []) + (head_bwd if j == n_virtual - 1 else [])
            return (sum(w.duration_s for x in layer_ids for w in layer_work(x).bwd + layer_work(x).recompute)
                    + sum(w.duration_s for w in extra))
        return sum(w.duration_s for x in layer_ids for w in layer_work(x).bwd_weight)

    for start, s, index, st in _expected_order(schedule, pp, n_virtual, step_seconds):
        _issue_step(s, st, st.chunk * pp + s, index)

    # Tied embeddings across stages: first and last stage all-reduce the embedding gradient.
    if model.tied_embeddings and pp > 1:
        size = model.vocab * model.hidden / plan.tp * grad_bytes
        pairs = em.pipeline_pairs(0, pp - 1)
        sims = [((plan.rank(pp=0), plan.rank(pp=pp - 1)), pairs)] if fold else [(p_, (p_,)) for p_ in pairs]
        for sim, groups in sims:
            deps = tuple(dict.fromkeys(x for d in sim for x in em.cursor.get(d, ())))
            tid = graph.add(Task("embedding grad all-reduce", TaskKind.COLLECTIVE, sim, Stream.DP,
                                 transfers=collective_transfers(topology, CollectiveOp.ALL_REDUCE, groups, size),
                                 category="dp", bytes_moved=size), deps)
            dp_tasks[0].append(tid)
            dp_tasks[pp - 1].append(tid)

    for s_, layers_ in deferred.items():
        devices = em.role_devices(s_)
        dp_tasks[s_] += grad_reduce(s_, devices, layers_, dp_op, f"dp grad {dp_op} (after the backward)", layers_[0],
                                    grad_bytes)

    def overflow_check_per_tensor(stage: int, devices, n_local: float) -> None:
        """DeepSpeed's fp16 optimizer checks every gradient tensor for inf/nan on its own:
        float(x.float().sum()) — an fp32 copy (read 2, write 4 bytes per element), a sum (read
        4) and a host read that waits for them, tensor after tensor (deepspeed 0.9.5
        runtime/fp16/fused_optimizer.py FP16_Optimizer.step -> runtime/utils.py
        CheckOverflow.has_overflow_serial, _has_inf_or_nan)."""
        n_tensors = stage_param_tensors(model, pp, stage, v)
        per_tensor = n_local / n_tensors * 10.0   # bytes
        km = stage_kernels[stage]
        check = Work("overflow check", "optimizer", duration_s=km.memory_time_s(per_tensor) + km.launch_overhead_s,
                     bytes_moved=per_tensor, n_kernels=2)
        if host is not None:
            check = host.apply([check], "optimizer")[0]
        for i in range(n_tensors):
            em.compute(devices, replace(check, name=f"overflow check t{i}"), -1, -1, "optimizer")
            if host is not None:
                em.host_sync(devices, host.costs.host_sync_s, f"overflow check read t{i}")

    # Optimizer step on each stage once its gradients are reduced.
    initial: dict[int, dict[MemKind, float]] = {}
    stands_for: dict[int, int] = {}
    stage_of: dict[int, int] = {}
    for s in range(pp):
        devices = em.role_devices(s)
        n_dense, n_expert = stage_param_split(model, pp, s, v, plan.tp, plan.ep, plan.etp)
        n_local = n_dense + n_expert
        opt_params = (n_dense / plan.grad_shards + n_expert / plan.expert_grad_shards if plan.zero_stage >= 1
                      else n_local)
        opt = time_ops(O.optimizer_ops(opt_params, plan.precision, optimizer=scenario.training.optimizer),
                       stage_kernels[s], plan, "optimizer")
        if host is not None:
            if not software.optimizer_fused:   # a per-tensor loop: OPTIMIZER_OPS_PER_TENSOR kernels per tensor
                n_tensors = stage_param_tensors(model, pp, s, v)
                opt = [replace(w, n_kernels=n_tensors * OPTIMIZER_OPS_PER_TENSOR) for w in opt]
            opt = host.apply(opt, "optimizer")
        for d in devices:
            em.cursor[d] = tuple(dict.fromkeys(em.cursor.get(d, ()) + tuple(dp_tasks[s])))
        if software.overflow_check == "per-tensor" and plan.precision == Dtype.FP16:
            overflow_check_per_tensor(s, devices, n_local)
        if host is not None:
            for i in range(host.syncs_per_step):   # loss-scale found-inf, grad-norm .item(), ...
                em.host_sync(devices, host.costs.host_sync_s, f"host sync {i + 1} before the optimizer")
        for w in opt:
            em.compute(devices, w, -1, -1, "optimizer")
        static = moe_static_memory_bytes(n_dense, n_expert, plan.zero_stage, plan.grad_shards,
                                         plan.expert_grad_shards, plan.precision, scenario.training.optimizer)
        for d in devices:
            initial[d] = dict(static)
            stage_of[d] = s
            stands_for[d] = plan.n_devices // pp if fold else 1
    return CompiledStep(graph=graph, plan=plan, scenario=scenario, topology=topology,
                        simulated=tuple(sorted(stage_of)), stage_of=stage_of, stands_for=stands_for,
                        initial_memory=initial, model_flop=O.model_flop_per_step(model, plan.global_batch),
                        folded=fold, granularity=granularity, software=software)


def _expected_order(schedule, pp: int, n_virtual: int, seconds) -> list:
    """(expected start, stage, index, step) of every step, sorted by start then stage: the
    schedule's own recurrence (schedules.step_times) with each step's compute time."""
    times = step_times(schedule, pp, n_virtual // pp, lambda s, st: max(seconds(s, st), 1e-12))
    return sorted(((start, s, i, st) for start, _end, s, i, st in times), key=itemgetter(0, 1, 2))
