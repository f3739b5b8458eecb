"""One training step, end to end: scenario → cluster + compiled step → SimPy run → summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hwsim.analysis.metrics import summarize
from hwsim.config.schema import NetworkModelKind, ScenarioConfig
from hwsim.engine.executor import simulate
from hwsim.engine.trace import Trace
from hwsim.hardware.kernels import KernelModel
from hwsim.hardware.topology import Topology, build_topology, load_transports
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
             granularity: Granularity | str | None = None, topology: Topology | None = None) -> StepResult:
    """`topology`: the cluster's, when the caller changed it (a degraded link, hwsim.reliability.links)."""
    fold = (scenario.simulation.fold if scenario.simulation.fold is not None else True) if fold is None else fold
    if granularity is None:
        granularity = (Granularity.STEP if estimate_op_tasks(scenario, fold) > OP_LEVEL_TASK_LIMIT
                       else Granularity.OP)
    granularity = Granularity(granularity)
    given = scenario
    software = resolve_software(scenario)
    scenario = effective_scenario(scenario, software)
    topology = build_topology(scenario.cluster) if topology is None else topology
    kernels = KernelModel(scenario.cluster.accelerator, scenario.training.attention.value)
    network = (MaxMinFair if scenario.simulation.network_model == NetworkModelKind.MAXMIN else Ideal)(
        topology.capacity_bytes_per_s)
    compiled = compile_step(scenario, topology, kernels, fold=fold, granularity=granularity, network=network,
                            software=software)
    trace = simulate(compiled.graph, network, memory_capacity_bytes=scenario.cluster.accelerator.hbm,
                     n_links=len(topology.links), initial_memory=compiled.initial_memory,
                     comm_slowdown=comm_slowdown(scenario))
    return StepResult(compiled, trace, summarize(compiled, trace, kernels), given)
