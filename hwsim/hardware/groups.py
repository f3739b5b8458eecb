"""Mixed accelerators in one job (`cluster.groups`, an hwsim extension): which device is which
accelerator, and which pipeline stage runs on which.

Groups are consecutive nodes in rank order (group 0 holds nodes 0..n0-1, and so on), all with
the cluster's devices_per_node and interconnect. The plan's pipeline stages map onto them by rank
order, so with the default parallel.order (pp slowest) stage s is the s-th block of
tp·cp·dp devices. What is supported: every stage on one accelerator, so that its tensor-,
context-, expert- and data-parallel groups are among peers of one kind. Then each stage's
kernels are timed with its own accelerator's kernel model, each device has its own HBM and its
own compute slowdown under collectives, and folding (one representative per stage) stays
exact: devices of different accelerators are never peers. A stage that spans two accelerators
(a tp or dp group across them) is rejected: it would run at the pace of the slowest member and
need a load-balancing policy hwsim does not model.

Not modelled: different devices_per_node or NICs per group, and a stage layer split weighted
by speed (stages get the same layers, as Megatron's uniform split does; a faster group could take
more, which is the what-if the report's slow-part line points at).
"""

from __future__ import annotations

from dataclasses import dataclass

from hwsim.config.schema import AcceleratorConfig, ClusterConfig, Dtype
from hwsim.errors import ConfigError

__all__ = ["StageDevices", "device_group", "stage_groups", "slow_part_words"]


@dataclass(frozen=True)
class StageDevices:
    """Pipeline stage -> index of its group in cluster.groups, and each group's accelerator."""

    group_of_stage: tuple[int, ...]
    accelerators: tuple[AcceleratorConfig, ...]

    def accelerator(self, stage: int) -> AcceleratorConfig:
        return self.accelerators[self.group_of_stage[stage]]


def device_group(cluster: ClusterConfig, device: int) -> int:
    """The index of the group holding `device` (0 without groups)."""
    if not cluster.groups:
        return 0
    node, first = device // cluster.devices_per_node, 0
    for i, g in enumerate(cluster.groups):
        first += g.nodes
        if node < first:
            return i
    raise ValueError(f"device {device} is beyond the cluster's {cluster.n_devices} devices")


def stage_groups(cluster: ClusterConfig, plan, precision: Dtype) -> StageDevices:
    """Each pipeline stage's group; a ConfigError naming cluster.groups when a stage spans two."""
    accs = tuple(g.accelerator for g in cluster.groups)
    if sum(g.nodes for g in cluster.groups) != cluster.nodes:
        raise ConfigError(f"cluster.groups hold {sum(g.nodes for g in cluster.groups)} nodes but cluster.nodes is "
                          f"{cluster.nodes}: make the groups' nodes add up to cluster.nodes")
    out = []
    for s in range(plan.pp):
        found = sorted({device_group(cluster, r) for r in plan.stage_ranks(s)})
        if len(found) > 1:
            names = " and ".join(f"{accs[i].name} (group {i})" for i in found)
            per_stage = plan.n_devices // plan.pp
            raise ConfigError(
                f"cluster.groups: pipeline stage {s} has devices on {names}, so its tensor-, context- or "
                f"data-parallel groups would span two accelerators, which hwsim does not model; make each "
                f"group hold whole stages (a multiple of tp·cp·dp = {per_stage} devices per group, "
                f"with pp slowest in parallel.order) or change pp")
        out.append(found[0])
    if precision == Dtype.FP8:
        for i in sorted(set(out)):
            if not accs[i].peak.fp8:
                raise ConfigError(f"cluster.groups.{i}.accelerator: training.precision fp8 needs fp8 tensor cores, "
                                  f"which {accs[i].name} does not have; use bf16, or an fp8 accelerator")
    return StageDevices(tuple(out), accs)


def _stage_ranges(stages: list[int]) -> str:
    runs, start = [], stages[0]
    for a, b in zip(stages, stages[1:] + [None]):
        if b != a + 1:
            runs.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ", ".join(runs)


def slow_part_words(stage_devices: StageDevices, compute_s_by_stage: dict[int, float]) -> dict:
    """Which accelerator's stages hold the critical path: the one whose busiest stage computes
    longest (a pipeline runs at the pace of its slowest stage). Returns the summary's `mixed`
    entry: per accelerator its stages and busiest compute time, and a sentence."""
    by_acc: dict[str, dict] = {}
    for s, g in enumerate(stage_devices.group_of_stage):
        name = stage_devices.accelerators[g].name
        entry = by_acc.setdefault(name, {"accelerator": name, "stages": [], "compute_s": 0.0})
        entry["stages"].append(s)
        entry["compute_s"] = max(entry["compute_s"], compute_s_by_stage.get(s, 0.0))
    ranked = sorted(by_acc.values(), key=lambda e: -e["compute_s"])
    slow = ranked[0]
    plural = "stages" if len(slow["stages"]) > 1 else "stage"
    if len(ranked) == 1:
        words = f"all pipeline stages run on {slow['accelerator']}"
    else:
        others = "; ".join(f"{_fmt(e['compute_s'])} on {e['accelerator']} (stage{'s' if len(e['stages']) > 1 else ''} "
                           f"{_stage_ranges(e['stages'])})" for e in ranked[1:])
        words = (f"mixed cluster: {plural} {_stage_ranges(slow['stages'])} on {slow['accelerator']} hold the critical "
                 f"path: their busiest stage computes {_fmt(slow['compute_s'])} per step vs {others}; the pipeline "
                 f"runs at the pace of its slowest stage")
    return {"by_accelerator": ranked, "slow_accelerator": slow["accelerator"], "words": words}


def _fmt(seconds: float) -> str:
    from hwsim import units
    return units.fmt_time(seconds, 3)
