"""Checkpoints: their size (from hwsim's memory model), how long they take on a storage tier,
and the interval that wastes the least.

Size: a checkpoint holds the weights and the optimizer state, not the gradients
(`hwsim.workload.memory.static_memory_bytes`: ZeRO §3's 2Ψ + KΨ for mixed-precision Adam).
The whole job's checkpoint is the unsharded total; one device writes its own shard: its
optimizer state as held, and a 1/dp share of the replicated weights (a distributed checkpoint's
fully parallel save spreads the replicated tensors over the data-parallel ranks).

Times: a device first copies its shard to host memory over its host link (the snapshot), then
the storage takes it: a shared tier at its aggregate bandwidth, node-local drives at each
node's. Blocking checkpoints stall training for the whole write; async ones for the snapshot.

Interval: with exponential failures of mean M, periods of compute τ each followed by a
checkpoint stall C, and a failure losing the period in progress, the expected wall time per
unit of work is (M + D)(e^{(τ+C)/M} - 1)/τ (D: downtime per failure). Its minimum is at
τ* = M (1 + W0(-e^{-1-C/M})) (W0: Lambert's principal branch; Daly 2006, "A higher order
estimate of the optimum checkpoint interval for restart dumps", FGCS 22(3), with R = 0), which
for C << M is Young's first-order τ ≈ sqrt(2 C M) (Young 1974, CACM 17(9)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hwsim.config.reliability import CheckpointMode
from hwsim.config.schema import ScenarioConfig
from hwsim.engine.task import MemKind
from hwsim.reliability.spec import CheckpointSpec
from hwsim.workload.memory import stage_params, static_memory_bytes
from hwsim.workload.plan import Plan
from hwsim.workload.shard import param_count

__all__ = ["CheckpointCost", "checkpoint_cost", "young_daly_interval_s", "optimal_interval_s",
           "expected_wall_per_work", "lambert_w0"]


@dataclass(frozen=True, slots=True)
class CheckpointCost:
    total_bytes: float            # the whole job's checkpoint
    device_bytes: float           # the largest shard one device writes
    snapshot_s: float             # device -> host memory
    write_s: float                # until durable on the storage tier (snapshot included)
    read_s: float                 # loading it back at a restart
    stall_s: float                # what training waits per checkpoint (blocking: write_s; async: snapshot_s)


def _saved(memory: dict[MemKind, float], weight_share: float) -> float:
    return memory[MemKind.WEIGHTS] * weight_share + memory[MemKind.OPTIMIZER]


def checkpoint_cost(scenario: ScenarioConfig, plan: Plan, spec: CheckpointSpec) -> CheckpointCost:
    model, train, cluster = scenario.model, scenario.training, scenario.cluster
    total = _saved(static_memory_bytes(param_count(model), 0, 1, train.precision, train.optimizer), 1.0)
    weight_share = 1.0 if plan.zero_stage >= 3 else 1.0 / plan.dp   # ZeRO-3 already shards the weights
    device = max(_saved(static_memory_bytes(stage_params(model, plan.pp, s, plan.virtual_stages, plan.tp, plan.ep),
                                            plan.zero_stage, plan.dp, train.precision, train.optimizer),
                        weight_share) for s in range(plan.pp))
    snapshot_s = device / cluster.accelerator.host_bandwidth
    tier = spec.storage
    stored = device * cluster.devices_per_node if tier.per_node else total
    write_s = max(snapshot_s, stored / tier.write_bandwidth_bytes_per_s)
    read_s = max(snapshot_s, stored / tier.read_bandwidth_bytes_per_s)
    stall_s = write_s if spec.mode == CheckpointMode.BLOCKING else snapshot_s
    return CheckpointCost(total, device, snapshot_s, write_s, read_s, stall_s)


def young_daly_interval_s(stall_s: float, mtbf_s: float) -> float:
    """Young's first-order optimum sqrt(2 C M)."""
    return math.sqrt(2.0 * stall_s * mtbf_s)


def expected_wall_per_work(interval_s: float, stall_s: float, mtbf_s: float, downtime_s: float = 0.0) -> float:
    """Expected wall seconds per compute second: (M + D)(e^{(τ+C)/M} - 1)/τ."""
    return (mtbf_s + downtime_s) * math.expm1((interval_s + stall_s) / mtbf_s) / interval_s


def lambert_w0(z: float) -> float:
    """Lambert W, principal branch, for -1/e <= z <= 0 (Halley iterations from the branch-point
    series -1 + p - p²/3 + 11p³/72, p = sqrt(2(ez + 1)), or from z - z² near 0)."""
    if not -1.0 / math.e <= z <= 0.0:
        raise ValueError(f"lambert_w0 is implemented on [-1/e, 0], got {z}")
    if z == 0.0:
        return 0.0
    if z > -0.25:
        w = z - z * z
    else:
        p = math.sqrt(max(0.0, 2.0 * (math.e * z + 1.0)))
        w = -1.0 + p - p * p / 3.0 + 11.0 / 72.0 * p ** 3
    for _ in range(50):
        ew = math.exp(w)
        f = w * ew - z
        if f == 0.0 or w == -1.0:
            break
        step = f / (ew * (w + 1.0) - (w + 2.0) * f / (2.0 * w + 2.0))
        w -= step
        if abs(step) <= 1e-15 * max(1.0, abs(w)):
            break
    return w


def optimal_interval_s(stall_s: float, mtbf_s: float) -> float:
    """τ* minimising expected_wall_per_work (independent of the downtime D). Where the branch
    point makes W0 inaccurate (C/M below 1e-8), Young's form is exact to that precision."""
    if math.isinf(mtbf_s):
        return math.inf
    ratio = stall_s / mtbf_s
    if ratio < 1e-8:
        return young_daly_interval_s(stall_s, mtbf_s)
    return mtbf_s * (1.0 + lambert_w0(-math.exp(-1.0 - ratio)))
