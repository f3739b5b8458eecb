"""One training step, end to end: scenario → cluster + compiled step → SimPy run → summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hwsim.analysis.metrics import summarize
from hwsim.config.schema import Dtype, NetworkModelKind, ScenarioConfig
from hwsim.engine.task import Stream
from hwsim.hardware.groups import slow_part_words, stage_groups
from hwsim.engine.executor import collector_paused, simulate
from hwsim.engine.trace import Trace
from hwsim.hardware.kernels import KernelModel
from hwsim.hardware.topology import Topology, load_transports, shared_topology
from hwsim.network.maxmin import Ideal, MaxMinFair
from hwsim.software.profiles import effective_scenario, resolve_software
from hwsim.workload.compiler import CompiledStep, Granularity, compile_step
from hwsim.workload.plan import resolve_plan

# Above this many op-level tasks (estimated), a step is simulated at pipeline-step granularity
# (same step time when tensor-parallel collectives do not contend; see compiler.Granularity).
OP_LEVEL_TASK_LIMIT = 30_000


@dataclass
class StepResult:
    compiled: CompiledStep
    trace: Trace
    summary: dict[str, Any]
    scenario: ScenarioConfig | None = None   # as given to run_step (before the software stack's effects)
    what_ifs: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)  # advice's, simulated once


def comm_slowdown(scenario: ScenarioConfig) -> float:
    """Fraction of compute speed lost while a collective runs on the device: the SMs the
    collective library holds (transports.yaml, collective_sms) over the device's SMs. TPUs move
    collectives with DMA engines over ICI and lose no cores (0)."""
    acc = scenario.cluster.accelerator
    if scenario.simulation.comm_compute_interference is False or acc.kernel_profile == "tpu":
        return 0.0
    return min(0.5, load_transports().collective_sms / max(acc.sm_count, 1))


def estimate_op_tasks(scenario: ScenarioConfig, fold: bool) -> int:
    plan = resolve_plan(scenario)
    per_layer = 45  # forward, backward, recompute kernels and collectives of one layer, op level
    roles = plan.pp if fold else plan.n_devices
    return roles * plan.n_micro * (scenario.model.layers // plan.pp + 1) * per_layer


def run_step(scenario: ScenarioConfig, fold: bool | None = None,
             granularity: Granularity | str | None = None, topology: Topology | None = None,
             stop_at_oom: bool = False) -> StepResult:
    """`topology`: the cluster's, when the caller changed it (a degraded link, hwsim.reliability.links).
    `stop_at_oom`: end at the first memory overflow with hwsim.engine.memory.OutOfMemoryStop
    (a what-if that only needs to know that the plan does not fit)."""
    with collector_paused():   # compiling allocates ~10^5 objects, no cycles: collections cost 15%
        return _run_step(scenario, fold, granularity, topology, stop_at_oom)


def _run_step(scenario: ScenarioConfig, fold: bool | None, granularity: Granularity | str | None,
              topology: Topology | None, stop_at_oom: bool) -> StepResult:
    fold = (scenario.simulation.fold if scenario.simulation.fold is not None else True) if fold is None else fold
    if granularity is None:
        granularity = (Granularity.STEP if estimate_op_tasks(scenario, fold) > OP_LEVEL_TASK_LIMIT
                       else Granularity.OP)
    granularity = Granularity(granularity)
    given = scenario
    software = resolve_software(scenario)
    scenario = effective_scenario(scenario, software)
    topology = shared_topology(scenario.cluster) if topology is None else topology
    kernels = KernelModel(scenario.cluster.accelerator, scenario.training.attention.value)
    network = (MaxMinFair if scenario.simulation.network_model == NetworkModelKind.MAXMIN else Ideal)(
        topology.capacity_bytes_per_s)
    mixed = _mixed(scenario, kernels) if scenario.cluster.groups else None
    compiled = compile_step(scenario, topology, kernels, fold=fold, granularity=granularity, network=network,
                            software=software, stage_kernels=mixed[1] if mixed else None)
    capacity, slowdown = scenario.cluster.accelerator.hbm, comm_slowdown(scenario)
    if mixed:   # each device its own HBM and SM count (cluster.groups)
        stages, _ = mixed
        capacity = {d: stages.accelerator(s).hbm for d, s in compiled.stage_of.items()}
        slowdown = {d: comm_slowdown(_with_accelerator(scenario, stages.accelerator(s)))
                    for d, s in compiled.stage_of.items()}
    trace = simulate(compiled.graph, network, memory_capacity_bytes=capacity,
                     n_links=len(topology.links), initial_memory=compiled.initial_memory,
                     comm_slowdown=slowdown, stop_at_oom=stop_at_oom)
    summary = summarize(compiled, trace, kernels)
    if mixed:
        _mixed_summary(summary, compiled, trace, mixed[0], capacity)
    if topology.background is not None:
        summary["shared_fabric"] = {"placement": topology.background.placement,
                                    "slots": list(topology.background.slots),
                                    "leaves": list(topology.background.job_leaves),
                                    "taken_frac": topology.background.taken_frac,
                                    "words": topology.background.words()}
    return StepResult(compiled, trace, summary, given)


def _with_accelerator(scenario: ScenarioConfig, accelerator) -> ScenarioConfig:
    return scenario.model_copy(update={"cluster": scenario.cluster.model_copy(update={"accelerator": accelerator})})


def _mixed(scenario: ScenarioConfig, kernels: KernelModel):
    """(stage -> group, each stage's KernelModel) for cluster.groups (hwsim.hardware.groups)."""
    stages = stage_groups(scenario.cluster, resolve_plan(scenario), scenario.training.precision)
    models = {0: kernels} if scenario.cluster.groups[0].accelerator == scenario.cluster.accelerator else {}
    for g in stages.group_of_stage:
        if g not in models:
            models[g] = KernelModel(stages.accelerators[g], scenario.training.attention.value)
    return stages, tuple(models[g] for g in stages.group_of_stage)


def _mixed_summary(summary: dict[str, Any], compiled: CompiledStep, trace: Trace, stages, capacity) -> None:
    """MFU against each device's own peak, memory against each device's own HBM, and the slow part."""
    peak_dtype = Dtype.FP8 if compiled.plan.fp8 else compiled.plan.precision
    peaks = [KernelModel(stages.accelerator(s)).peak_flop_per_s(peak_dtype) for s in range(compiled.plan.pp)]
    mean_peak = sum(peaks) / len(peaks)   # every stage has the same number of devices
    scale = summary["peak_flop_per_s"] / mean_peak
    summary.update(mfu=summary["mfu"] * scale, hfu=summary["hfu"] * scale, peak_flop_per_s=mean_peak)
    peak_mem = trace.peak_memory_bytes()
    summary["fits_in_memory"] = all(peak_mem[d] <= capacity[d] for d in compiled.simulated)
    summary["memory_capacity_bytes"] = min(capacity[d] for d in compiled.simulated)
    compute = {}
    for d, s in compiled.stage_of.items():
        compute[s] = max(compute.get(s, 0.0), trace.busy_s(d, Stream.COMPUTE))
    summary["mixed"] = slow_part_words(stages, compute)
