"""Screening: a summary of one training step in milliseconds, without the event simulation.

The same building blocks as the simulation — the kernel-time model, the collectives priced on
the real topology, the pipeline schedule, the memory formulas — put together in closed form:

    step ≈ pipeline makespan of the schedule with per-chunk forward/backward times (the
           schedule's own recurrence, `simulate_unit_times`, with the p2p hop as t_comm)
         + the extra work of the heaviest stage (embedding, logits) × micro-batches
         + exposed data-parallel communication (what the last backward cannot hide)
         + optimizer step.

Collectives are priced for the representative's own group alone (no contention between
concurrent groups: the fat-trees of the presets have full bisection, so this is the cheaper
approximation DESIGN.md allows for screening). `tests/unit/test_screen.py` checks it against
the simulation; use the simulation (hwsim.simulate.run_step) for anything you will report.
"""

from __future__ import annotations

from typing import Any

from hwsim.config.schema import Dtype, Recompute, ScenarioConfig, Schedule
from hwsim.hardware.kernels import KernelModel
from hwsim.hardware.topology import Topology, build_topology
from hwsim.network.collectives import CollectiveOp, collective_time
from hwsim.network.maxmin import MaxMinFair
from hwsim.units import TFLOP
from hwsim.workload import ops as O
from hwsim.workload.compiler import GRAD_REDUCE_BYTES, Granularity, _layer_work, serial_seconds, time_ops
from hwsim.workload.memory import stage_params, static_memory_bytes
from hwsim.workload.plan import resolve_plan
from hwsim.workload.schedules import chunk_layers, pipeline_schedule, simulate_unit_times, split_backward
from hwsim.workload.shard import Shard


_HARDWARE: dict[str, tuple[Topology, KernelModel, MaxMinFair]] = {}


def _hardware(cluster) -> tuple[Topology, KernelModel, MaxMinFair]:
    """Topology, kernel model and network of a cluster, kept for the next configuration."""
    key = cluster.model_dump_json()
    if key not in _HARDWARE:
        if len(_HARDWARE) >= 32:
            _HARDWARE.clear()
        topology = build_topology(cluster)
        _HARDWARE[key] = (topology, KernelModel(cluster.accelerator), MaxMinFair(topology.capacity_bytes_per_s))
    return _HARDWARE[key]


class _Comm:
    def __init__(self, topology: Topology, network: MaxMinFair, plan) -> None:
        self.topology, self.network, self.plan = topology, network, plan
        self.cache: dict[tuple, float] = {}

    def time(self, op: str, axis: str, size: float) -> float:
        key = (op, axis, size)
        if key not in self.cache:
            if axis == "ep":
                group = self.plan.ep_groups(0)[0]
            else:
                group = self.plan.group(axis, 0)
            if op == "send-recv":   # cp ring: each rank to its successor
                groups = tuple((group[i], group[(i + 1) % len(group)]) for i in range(len(group)))
            else:
                groups = (group,)
            self.cache[key] = (collective_time(self.topology, self.network, CollectiveOp(op), groups, size)
                               if len(group) > 1 else 0.0)
        return self.cache[key]

    def serial(self, works) -> tuple[float, float, float]:
        return serial_seconds(works, self.time)


def pipeline_makespan(kind: Schedule, pp: int, m: int, v: int, t_f: float, t_b: float, t_w: float,
                      t_comm: float, schedule=None) -> float:
    """Makespan of a pipeline of uniform stages whose whole forward, backward (input gradient)
    and weight-gradient times per micro-batch are t_f, t_b, t_w — in closed form, so its cost
    does not grow with the number of micro-batches:
      GPipe, 1F1B:      (m + p − 1)(t_f + t_b)                 (Narayanan et al. 2021)
      interleaved (v):  m(t_f + t_b) + (p − 1)(t_f + t_b)/v    (Narayanan et al. SC'21)
      ZB-H1 (m ≥ p, t_w ≤ t_b): m(t_f + t_b + t_w) + (p − 1)(t_f + t_b − t_w)  (Qi et al. 2023)
    plus the pipeline hops of the warm-up and cool-down chains, 2(p·v − 1)·t_comm. Cases outside
    the closed forms (ZB-H1 with m < p or t_w > t_b) fall back to the schedule's recurrence.
    tests/unit/test_screen.py checks these against `simulate_unit_times`."""
    hops = 2 * (pp * v - 1) * t_comm if pp > 1 else 0.0
    if kind in (Schedule.GPIPE, Schedule.ONE_F_ONE_B) or (kind == Schedule.INTERLEAVED and v == 1):
        return (m + pp - 1) * (t_f + t_b) + hops
    if kind == Schedule.INTERLEAVED:
        return m * (t_f + t_b) + (pp - 1) * (t_f + t_b) / v + hops
    if m >= pp and t_w <= t_b:
        return m * (t_f + t_b + t_w) + (pp - 1) * (t_f + t_b - t_w) + hops
    schedule = schedule or pipeline_schedule(kind, pp, m, v)
    return simulate_unit_times(schedule, pp, v, t_f / v, t_b / v, t_w / v, t_comm)


def in_flight_chunks(kind: Schedule, pp: int, m: int, v: int, stage: int) -> int:
    """How many (micro-batch, chunk) activation sets stage `stage` holds at its peak: GPipe m·v;
    1F1B min(p − s, m); ZB-H1 min(p, m) (deferred weight gradients keep their inputs);
    interleaved Megatron's warm-up + 1 = 2(p − s − 1) + (v − 1)p + 1, at most m·v (m·v when
    m = p, where every forward runs first). Checked
    against `schedules.peak_in_flight` in tests/unit/test_screen.py."""
    if kind == Schedule.GPIPE:
        return m * v
    if kind == Schedule.ZERO_BUBBLE:
        return min(pp, m)
    if kind == Schedule.INTERLEAVED and v > 1:   # with m == p Megatron runs every forward first
        return m * v if m == pp else min(m * v, 2 * (pp - stage - 1) + (v - 1) * pp + 1)
    return min(pp - stage, m)


def screen(scenario: ScenarioConfig) -> dict[str, Any]:
    """A summary (step time, throughput, MFU, peak memory, a coarse breakdown) in closed form."""
    plan = resolve_plan(scenario)
    model, cluster = scenario.model, scenario.cluster
    topology, kernels, network = _hardware(cluster)
    comm = _Comm(topology, network, plan)
    shard = Shard(micro_batch=plan.micro_batch, seq_len=model.seq_len, tp=plan.tp, cp=plan.cp, ep=plan.ep,
                  sequence_parallel=plan.sequence_parallel, dtype_bytes=4 if plan.precision == Dtype.FP32 else 2,
                  fp8=plan.fp8)
    split = split_backward(plan.schedule)
    dense_layers = model.moe.dense_layers if model.moe else model.layers
    works = {moe: _layer_work(model, shard, plan, kernels, moe, split, Granularity.OP)
             for moe in ((False, True) if model.moe else (False,))}
    lw_of = [works[bool(model.moe) and i >= dense_layers] for i in range(model.layers)]
    per_layer = {}
    for moe, lw in works.items():
        f = comm.serial(lw.fwd)
        b = comm.serial(lw.bwd)
        r = comm.serial(lw.recompute) if lw.recompute else (0.0, 0.0, 0.0)
        w = comm.serial(lw.bwd_weight) if lw.bwd_weight else (0.0, 0.0, 0.0)
        per_layer[moe] = (f, b, r, w)
    emb = [comm.serial(time_ops(x, kernels, plan, c)) for x, c in zip(O.embedding_ops(model, shard), ("fwd", "bwd"))]
    head = [comm.serial(time_ops(x, kernels, plan, c)) for x, c in zip(O.head_ops(model, shard), ("fwd", "bwd"))]

    pp, v, m = plan.pp, plan.virtual_stages, plan.n_micro
    layers_of = chunk_layers(model.layers, pp, v)
    stage_work, t_f_sum, t_b_sum, t_w_sum, flop = [], 0.0, 0.0, 0.0, 0.0
    comm_exposed = 0.0
    for s in range(pp):
        tf = tb = tw = 0.0
        for c in range(v):
            for layer in layers_of[s][c]:
                f, b, r, w = per_layer[bool(model.moe) and layer >= dense_layers]
                tf += f[0] + f[1]
                tb += b[0] + b[1] + r[0] + r[1]
                tw += w[0] + w[1]
                comm_exposed += (f[1] + b[1] + r[1] + w[1]) if s == 0 else 0.0
                flop += (f[2] + b[2] + r[2] + w[2]) * m
        if s == 0:
            tf += emb[0][0] + emb[0][1]
            tb += emb[1][0] + emb[1][1]
        if s == (pp * v - 1) % pp:
            tf += head[0][0] + head[0][1]
            tb += head[1][0] + head[1][1]
        stage_work.append(tf + tb + tw)
        t_f_sum, t_b_sum, t_w_sum = t_f_sum + tf, t_b_sum + tb, t_w_sum + tw
    avg = sum(stage_work) / pp
    p2p_bytes = plan.micro_batch * model.seq_len / plan.cp * model.hidden * shard.dtype_bytes / plan.tp
    t_p2p = (collective_time(topology, network, CollectiveOp.SEND_RECV,
                             ((plan.rank(pp=0), plan.rank(pp=1)),), p2p_bytes) if pp > 1 else 0.0)
    pipe = pipeline_makespan(plan.schedule, pp, m, v, t_f_sum / pp, t_b_sum / pp, t_w_sum / pp, t_p2p)
    pipe += m * (max(stage_work) - avg)

    # data-parallel reduction of the heaviest stage: what the last micro-batch's backward of
    # the first chunk cannot hide (buckets overlap the rest of the backward)
    n_local = max(stage_params(model, pp, s, v, plan.tp, plan.ep) for s in range(pp))
    dp_exposed = 0.0
    if plan.dp > 1 and plan.zero_stage < 3:
        op = "all-reduce" if plan.zero_stage == 0 else "reduce-scatter"
        t_dp = comm.time(op, "dp", n_local * GRAD_REDUCE_BYTES)
        bucket = min(1.0, scenario.parallel.dp_bucket / max(n_local * GRAD_REDUCE_BYTES, 1.0))
        dp_exposed = max(t_dp * bucket, t_dp - t_b_sum / pp / v)
        if plan.zero_stage in (1, 2):
            t_ag = comm.time("all-gather", "dp", n_local * shard.dtype_bytes)
            dp_exposed += max(0.0, t_ag - t_f_sum / pp / v)
    elif plan.dp > 1:   # ZeRO-3: per layer and micro-batch, gathers and reductions behind compute
        lw = lw_of[0]
        t_ag = comm.time("all-gather", "dp", lw.param_bytes_local)
        t_rs = comm.time("reduce-scatter", "dp", lw.n_params_local * GRAD_REDUCE_BYTES)
        f, b, r, w = per_layer[False]
        per_mb_layer = max(0.0, 2 * t_ag + t_rs - (f[0] + b[0] + r[0] + w[0]))
        dp_exposed = per_mb_layer * m * len(layers_of[0][0]) * v + t_ag
    opt = sum(comm.serial(time_ops(O.optimizer_ops(n_local / (plan.dp if plan.zero_stage >= 1 else 1)),
                                   kernels, plan, "optimizer"))[:2])
    step = pipe + dp_exposed + opt

    # memory of the heaviest stage: static + the activations the schedule keeps in flight
    peaks = []
    for s in range(pp):
        n_s = stage_params(model, pp, s, v, plan.tp, plan.ep)
        static = sum(static_memory_bytes(n_s, plan.zero_stage, plan.dp, plan.precision).values())
        in_flight = in_flight_chunks(plan.schedule, pp, m, v, s)
        act_per_chunk = max(sum(lw_of[x].act_bytes for x in layers_of[s][c]) for c in range(v))
        extra = max(lw_of[x].recompute_extra_bytes for x in layers_of[s][0]) if plan.recompute == Recompute.FULL else 0.0
        gathered = 2 * lw_of[0].param_bytes_local if plan.zero_stage >= 3 else 0.0
        head_act = O.head_activation_bytes(model, shard) if s == (pp * v - 1) % pp else 0.0
        peaks.append(static + in_flight * act_per_chunk + max(extra, head_act) + gathered)
    tokens = plan.global_batch * model.seq_len
    peak_dtype = Dtype.FP8 if plan.fp8 else plan.precision
    model_flop = O.model_flop_per_step(model, plan.global_batch)
    n = plan.n_devices
    return {
        "name": scenario.name, "step_time_s": step, "tokens_per_s": tokens / step,
        "tokens_per_s_per_device": tokens / step / n, "tflops_per_device": model_flop / step / n / TFLOP,
        "mfu": model_flop / step / n / kernels.peak_flop_per_s(peak_dtype),
        "peak_memory_bytes": max(peaks), "memory_capacity_bytes": cluster.accelerator.hbm,
        "fits_in_memory": max(peaks) <= cluster.accelerator.hbm, "devices": n,
        "breakdown": {"pipeline (compute, tp/cp/ep comm, bubble)": pipe, "exposed_comm.dp": dp_exposed,
                      "optimizer": opt},
        "screened": True,
    }
