"""Variance and stragglers: the step time as a distribution over many simulated steps.

A step is compiled once, unfolded (every device simulated: folding makes one device stand for
its peers, which is exact only while they run identically; per-device variance breaks that,
so this module never folds and says so for clusters too large to unfold). Each sample then
scales the duration of every compute kernel on device d by

    slowdown[d] * exp(sigma * Z - sigma^2 / 2),   Z ~ N(0, 1), seeded,

a mean-one lognormal whose coefficient of variation is `kernel_cv` (sigma^2 = ln(1 + cv^2)),
and re-runs the step on the same task graph and network. A straggler is a device with a
constant slowdown (a throttled GPU: slowdown = its nominal clock / its throttled one).
Synchronous collectives turn one slow rank into everyone's wait: with no overlap, a straggler
of slowdown s stretches the step's compute part by s.

`device_cv` is the other kind of spread: a whole GPU slower or faster than its peers for the whole
step (manufacturing and power management; Sinha et al., SC22, measured it across the GPUs of
four supercomputers). Each sample draws one mean-one lognormal factor per device (a different set
of GPUs each sample) and scales all that device's kernels by it. Link and collective times are
not perturbed (no link_cv): a slow link is a degraded link (reliability.degraded_links).

No default spread is assumed (kernel_cv = device_cv = 0; README, "Variance and stragglers", says
which published measurements exist and why none is a per-kernel default): with no variance and no
straggler, a sample is the deterministic unfolded step, exactly.

The scenario's `reliability.variance` block (hwsim.config.reliability.VarianceConfig) is read
only by `hwsim variance` (`variance_from_scenario`); `hwsim run` stays the folded, noiseless step.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace

import numpy as np

from hwsim.config.schema import NetworkModelKind, ScenarioConfig
from hwsim.engine.executor import simulate
from hwsim.engine.task import TaskKind
from hwsim.engine.taskgraph import TaskGraph
from hwsim.errors import ConfigError
from hwsim.hardware.kernels import KernelModel
from hwsim.hardware.topology import build_topology
from hwsim.network.maxmin import Ideal, MaxMinFair
from hwsim.network.transfer import Transfer
from hwsim.simulate import comm_slowdown, estimate_op_tasks
from hwsim.software.profiles import effective_scenario, resolve_software
from hwsim.workload.compiler import CompiledStep, Granularity, compile_step

__all__ = ["Straggler", "StepDistribution", "step_distribution", "perturbed_graph", "UNFOLDED_TASK_LIMIT",
           "stragglers_from_config", "variance_from_scenario"]

UNFOLDED_TASK_LIMIT = 300_000   # op-level tasks of an unfolded step; past it, the samples would take minutes


@dataclass(frozen=True, slots=True)
class Straggler:
    device: int
    slowdown: float             # >= 1: its kernels take this many times as long


@dataclass(frozen=True)
class StepDistribution:
    step_times_s: np.ndarray
    noiseless_step_s: float
    slowest_device: int         # the device busiest on compute, most often over the samples
    slowest_share: float = 1.0  # the fraction of the samples in which it was the busiest
    n_tasks: int = 0            # tasks of the unfolded step graph

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.step_times_s, q))

    @property
    def p50_s(self) -> float:
        return self.percentile(50)

    @property
    def p99_s(self) -> float:
        return self.percentile(99)


def perturbed_graph(graph: TaskGraph, factors: np.ndarray, comm_factors: np.ndarray | None = None) -> TaskGraph:
    """A copy of `graph` whose compute task i lasts factors[i] times as long and, with
    `comm_factors`, whose collective i moves comm_factors[i] times its bytes and waits that many
    times its latency (its time on idle links scaled; contention still shared as the network does).
    Dependencies and stream orders are shared, unchanged."""
    out = copy.copy(graph)
    tasks = []
    for i, t in enumerate(graph.tasks):
        if t.kind == TaskKind.COMPUTE:
            t = replace(t, duration_s=t.duration_s * float(factors[i]))
        elif t.kind == TaskKind.COLLECTIVE and comm_factors is not None:
            f = float(comm_factors[i])
            t = replace(t, duration_s=t.duration_s * f, transfers=tuple(
                Transfer(tuple((link, b * f) for link, b in x.link_bytes), x.latency_s * f) for x in t.transfers))
        tasks.append(t)
    out.tasks = tasks
    return out


def _compile_unfolded(scenario: ScenarioConfig):
    if scenario.cluster.groups:
        raise ConfigError("cluster.groups: step-time distributions (hwsim variance) are not modelled on mixed "
                          "clusters yet; run `hwsim run` for the step, or give one accelerator")
    software = resolve_software(scenario)
    scenario = effective_scenario(scenario, software)
    topology = build_topology(scenario.cluster)
    if scenario.reliability is not None and scenario.reliability.degraded_links:   # a slow link: a straggler too
        from hwsim.reliability.links import degrade_links
        topology = degrade_links(topology, scenario.reliability.degraded_links)
    kernels = KernelModel(scenario.cluster.accelerator, scenario.training.attention.value)
    network_kind = MaxMinFair if scenario.simulation.network_model == NetworkModelKind.MAXMIN else Ideal
    compiled = compile_step(scenario, topology, kernels, fold=False, granularity=Granularity.OP,
                            network=network_kind(topology.capacity_bytes_per_s), software=software)
    return scenario, topology, network_kind, compiled


def _run(scenario: ScenarioConfig, topology, network_kind, compiled: CompiledStep, graph: TaskGraph):
    return simulate(graph, network_kind(topology.capacity_bytes_per_s),
                    memory_capacity_bytes=scenario.cluster.accelerator.hbm, n_links=len(topology.links),
                    initial_memory=compiled.initial_memory, comm_slowdown=comm_slowdown(scenario))


def step_distribution(scenario: ScenarioConfig, n_steps: int = 100, seed: int = 0, kernel_cv: float = 0.0,
                      stragglers: tuple[Straggler, ...] = (), device_cv: float = 0.0,
                      link_cv: float = 0.0) -> StepDistribution:
    """`n_steps` simulated steps with seeded kernel-time noise (`kernel_cv`, per kernel),
    per-device speed spread (`device_cv`, one draw per device and sample), collective-time noise
    on the links (`link_cv`, per collective) and `stragglers`."""
    if n_steps < 1:
        raise ConfigError(f"n_steps: {n_steps} must be at least 1")
    if not (0.0 <= kernel_cv < 10.0):
        raise ConfigError(f"kernel_cv: {kernel_cv} must be in [0, 10): the coefficient of variation of a kernel's time")
    if not (0.0 <= link_cv < 10.0):
        raise ConfigError(f"link_cv: {link_cv} must be in [0, 10): the coefficient of variation of a collective's "
                          f"time on the links")
    if not (0.0 <= device_cv < 10.0):
        raise ConfigError(f"device_cv: {device_cv} must be in [0, 10): the coefficient of variation of a device's "
                          f"speed")
    n_devices = scenario.cluster.n_devices
    for s in stragglers:
        if not 0 <= s.device < n_devices:
            raise ConfigError(f"stragglers: device {s.device} is not in the cluster's 0..{n_devices - 1}")
        if not (1.0 <= s.slowdown < math.inf):
            raise ConfigError(f"stragglers: slowdown {s.slowdown} of device {s.device} must be at least 1")
    if estimate_op_tasks(scenario, fold=False) > UNFOLDED_TASK_LIMIT:
        raise ConfigError(
            f"cannot fold with variance or stragglers: folding lets one device stand for its peers, which is exact "
            f"only while they run identically, and {n_devices:,} devices unfolded are about "
            f"{estimate_op_tasks(scenario, fold=False):,} tasks, over the {UNFOLDED_TASK_LIMIT:,} that sample in "
            f"reasonable time. Study the variance on a slice of the cluster: fewer cluster.nodes (e.g. --set "
            f"cluster.nodes=N) with the same parallel.tp and pp and a smaller global_batch, or fewer model.layers; "
            f"the noiseless step of the whole cluster is `hwsim run` (folded, exact)")
    eff, topology, network_kind, compiled = _compile_unfolded(scenario)
    graph = compiled.graph
    device_of = np.array([t.devices[0] for t in graph.tasks])
    compute = np.array([t.kind == TaskKind.COMPUTE for t in graph.tasks])
    durations = np.array([t.duration_s for t in graph.tasks])
    slow = np.ones(n_devices)
    for s in stragglers:
        slow[s.device] *= s.slowdown
    noiseless = _run(eff, topology, network_kind, compiled, graph).makespan_s
    sigma = math.sqrt(math.log1p(kernel_cv ** 2))
    sigma_dev = math.sqrt(math.log1p(device_cv ** 2))
    sigma_link = math.sqrt(math.log1p(link_cv ** 2))
    collective = np.array([t.kind == TaskKind.COLLECTIVE for t in graph.tasks])
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
    times, busiest = np.empty(n_steps), np.zeros(n_devices, dtype=np.int64)
    for k in range(n_steps):
        noise = np.exp(sigma * rng.standard_normal(len(graph.tasks)) - sigma * sigma / 2) if sigma > 0 else 1.0
        speed = (np.exp(sigma_dev * rng.standard_normal(n_devices) - sigma_dev * sigma_dev / 2) if sigma_dev > 0
                 else np.ones(n_devices))
        factors = (slow * speed)[device_of] * noise
        comm = (np.where(collective, np.exp(sigma_link * rng.standard_normal(len(graph.tasks))
                                            - sigma_link * sigma_link / 2), 1.0) if sigma_link > 0 else None)
        times[k] = _run(eff, topology, network_kind, compiled, perturbed_graph(graph, factors, comm)).makespan_s
        busy = np.bincount(device_of[compute], weights=(durations * factors)[compute], minlength=n_devices)
        busiest[int(np.argmax(busy))] += 1
    top = int(np.argmax(busiest))
    return StepDistribution(times, noiseless, top, float(busiest[top]) / n_steps, len(graph.tasks))


def stragglers_from_config(variance, scenario: ScenarioConfig) -> tuple[Straggler, ...]:
    """reliability.variance.stragglers as devices: a node straggler slows each of its devices."""
    n_devices, per_node = scenario.cluster.n_devices, scenario.cluster.devices_per_node
    out = []
    for i, s in enumerate(variance.stragglers):
        where = f"reliability.variance.stragglers.{i}"
        if s.device is not None:
            if s.device >= n_devices:
                raise ConfigError(f"{where}.device: {s.device} is not in the cluster's devices 0..{n_devices - 1}")
            out.append(Straggler(s.device, s.slowdown))
        else:
            n_nodes = scenario.cluster.nodes
            if s.node >= n_nodes:
                raise ConfigError(f"{where}.node: {s.node} is not in the cluster's nodes 0..{n_nodes - 1}")
            out.extend(Straggler(d, s.slowdown) for d in range(s.node * per_node, (s.node + 1) * per_node))
    return tuple(out)


def variance_from_scenario(scenario: ScenarioConfig, samples: int | None = None,
                           seed: int | None = None) -> StepDistribution:
    """The step-time distribution of the scenario's `reliability.variance` block (absent: no spread,
    no straggler); `samples` and `seed` override the block's."""
    from hwsim.config.reliability import VarianceConfig

    block = scenario.reliability.variance if scenario.reliability is not None else VarianceConfig()
    return step_distribution(scenario, n_steps=block.samples if samples is None else samples,
                             seed=block.seed if seed is None else seed, kernel_cv=block.kernel_cv,
                             stragglers=stragglers_from_config(block, scenario), device_cv=block.device_cv,
                             link_cv=block.link_cv)
