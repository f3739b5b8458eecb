"""The parallel plan: checks that it is possible, derives what follows from it, and maps ranks.

Rank order follows Megatron-LM by default (`parallel.order`, fastest-varying first:
tp-cp-ep-dp-pp): tensor-parallel peers are adjacent ranks (inside a node), then context,
data, and pipeline stages outermost. Expert parallelism reuses the data×context ranks of a
stage (ep divides dp·cp), as Megatron-Core's expert-data-parallel groups do.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property

from hwsim.config.schema import AttentionKernel, Dtype, Recompute, ScenarioConfig, Schedule
from hwsim.errors import PlanError

_AXES = ("tp", "cp", "dp", "pp")


@dataclass(frozen=True)
class Plan:
    """A checked plan: the sizes of every parallel dimension and what follows from them."""

    tp: int
    pp: int
    dp: int
    cp: int
    ep: int
    virtual_stages: int
    schedule: Schedule
    sequence_parallel: bool
    zero_stage: int
    recompute: Recompute
    micro_batch: int
    global_batch: int
    n_micro: int
    precision: Dtype
    order: tuple[str, ...]
    flash: bool
    n_devices: int
    devices_per_node: int

    @cached_property
    def _strides(self) -> dict[str, int]:
        strides, stride = {}, 1
        for axis in self.order:
            strides[axis] = stride
            stride *= getattr(self, axis)
        return strides

    def rank(self, tp: int = 0, cp: int = 0, dp: int = 0, pp: int = 0) -> int:
        s = self._strides
        return tp * s["tp"] + cp * s["cp"] + dp * s["dp"] + pp * s["pp"]

    def coords(self, rank: int) -> dict[str, int]:
        return {axis: (rank // self._strides[axis]) % getattr(self, axis) for axis in self.order}

    def group(self, axis: str, rank: int) -> tuple[int, ...]:
        """The ranks of `rank`'s group along `axis` (tp, cp, dp or pp), in axis order."""
        c = self.coords(rank)
        return tuple(self.rank(**{**c, axis: i}) for i in range(getattr(self, axis)))

    def stride(self, axis: str) -> int:
        return self._strides[axis]

    def groups(self, axis: str, stage: int | None = None) -> tuple[tuple[int, ...], ...]:
        """Every group along `axis` (optionally only those of pipeline stage `stage`), ordered by
        their first rank."""
        others = [a for a in self.order if a != axis and not (a == "pp" and stage is not None)]
        base0 = stage * self._strides["pp"] if stage is not None else 0
        step, size = self._strides[axis], getattr(self, axis)
        bases = sorted(base0 + sum(c * self._strides[a] for a, c in zip(others, combo))
                       for combo in itertools.product(*(range(getattr(self, a)) for a in others)))
        return tuple(tuple(b + i * step for i in range(size)) for b in bases)

    def stage_ranks(self, stage: int) -> tuple[int, ...]:
        """The ranks of pipeline stage `stage`, ascending."""
        return tuple(sorted(r for g in self.groups("tp", stage) for r in g))

    @property
    def grad_shards(self) -> int:
        """Ranks that hold the same parameters and reduce their gradients together: the
        data-parallel ranks times the context-parallel ones (cp ranks see different tokens of
        the same sequences with the same weights; Megatron's dp-cp group, torchtitan's FSDP mesh)."""
        return self.dp * self.cp

    def grad_groups(self, stage: int | None = None) -> tuple[tuple[int, ...], ...]:
        """Groups of `grad_shards` ranks with the same tp rank (and pipeline stage)."""
        if self.cp == 1:
            return self.groups("dp", stage)
        by_first: dict[int, tuple[int, ...]] = {}
        for g in self.groups("tp", stage):
            for t, r in enumerate(g):
                c = self.coords(r)
                if c["dp"] == 0 and c["cp"] == 0:
                    members = tuple(sorted(self.rank(tp=t, cp=cc, dp=dd, pp=c["pp"])
                                           for dd in range(self.dp) for cc in range(self.cp)))
                    by_first[members[0]] = members
        return tuple(by_first[k] for k in sorted(by_first))

    def ep_groups(self, stage: int) -> tuple[tuple[int, ...], ...]:
        """Expert-parallel groups of a stage: ep consecutive members of the dp×cp ranks that
        share a tp rank (Megatron-Core's expert-model-parallel layout)."""
        out = []
        for t in range(self.tp):
            members = [self.rank(tp=t, cp=c, dp=d, pp=stage) for d in range(self.dp) for c in range(self.cp)]
            out.extend(tuple(members[i:i + self.ep]) for i in range(0, len(members), self.ep))
        return tuple(out)

    @property
    def fp8(self) -> bool:
        return self.precision == Dtype.FP8


def resolve_plan(scenario: ScenarioConfig) -> Plan:
    """Check the plan against the model and cluster; raise PlanError with the fix."""
    par, model, train, cluster = scenario.parallel, scenario.model, scenario.training, scenario.cluster
    n = cluster.n_devices
    tp, pp, cp, ep, v = par.tp, par.pp, par.cp, par.ep, par.virtual_stages
    kv_heads = model.kv_heads or model.heads
    if model.heads % tp:
        raise PlanError(f"parallel.tp: tp={tp} does not divide the model's {model.heads} attention heads; "
                        f"use a tp that divides {model.heads}")
    if kv_heads % tp:   # Megatron-LM splits the key-value heads (query groups) evenly over tp
        raise PlanError(f"parallel.tp: tp={tp} does not divide the model's {kv_heads} key-value heads; use a "
                        f"tp that divides {kv_heads}")
    if model.ffn_hidden % tp:
        raise PlanError(f"parallel.tp: tp={tp} does not divide ffn_hidden={model.ffn_hidden}; use a tp that "
                        f"divides it")
    if n % (tp * pp * cp):
        raise PlanError(f"parallel: tp·pp·cp = {tp}·{pp}·{cp} = {tp * pp * cp} does not divide the "
                        f"{n} devices of the cluster (nodes × devices_per_node); change tp, pp or cp, "
                        f"or the number of nodes")
    dp = par.dp if par.dp is not None else n // (tp * pp * cp)
    if tp * pp * cp * dp != n:
        raise PlanError(f"parallel.dp: tp·pp·cp·dp = {tp}·{pp}·{cp}·{dp} = {tp * pp * cp * dp} but the "
                        f"cluster has {n} devices; set dp to {n // (tp * pp * cp)} or leave it out")
    if model.layers < pp * v:
        raise PlanError(f"parallel.pp: pp·virtual_stages = {pp}·{v} = {pp * v} exceeds the model's "
                        f"{model.layers} layers; each virtual stage needs at least one layer")
    if v > 1 and par.schedule not in (Schedule.INTERLEAVED,):
        raise PlanError(f"parallel.virtual_stages: virtual_stages={v} needs schedule: interleaved "
                        f"(got {par.schedule.value}); set schedule: interleaved or virtual_stages: 1")
    if par.schedule == Schedule.INTERLEAVED and pp == 1:
        raise PlanError("parallel.schedule: interleaved needs pp > 1; use schedule: 1f1b for pp: 1")
    if model.seq_len % cp:
        raise PlanError(f"parallel.cp: cp={cp} does not divide seq_len={model.seq_len}; use a cp that "
                        f"divides the sequence length")
    if ep > 1:
        if model.moe is None:
            raise PlanError(f"parallel.ep: ep={ep} but the model has no experts (model.moe); set ep: 1")
        if model.moe.experts % ep:
            raise PlanError(f"parallel.ep: ep={ep} does not divide the {model.moe.experts} experts; use "
                            f"an ep that divides it")
        if (dp * cp) % ep:
            raise PlanError(f"parallel.ep: ep={ep} must divide dp·cp = {dp * cp} (experts are spread over "
                            f"the data-parallel ranks of a stage); change ep or dp")
    per_step = train.micro_batch * dp
    if train.global_batch % per_step:
        raise PlanError(f"training.global_batch: {train.global_batch} is not a multiple of micro_batch·dp = "
                        f"{train.micro_batch}·{dp} = {per_step}; use a global_batch that is (e.g. "
                        f"{max(1, round(train.global_batch / per_step)) * per_step})")
    n_micro = train.global_batch // per_step
    if par.schedule == Schedule.INTERLEAVED and n_micro % pp:
        raise PlanError(f"parallel.schedule: interleaved 1F1B needs the number of micro-batches per "
                        f"pipeline ({n_micro} = global_batch / (micro_batch·dp)) to be a multiple of "
                        f"pp={pp}; change global_batch, micro_batch or pp")
    order = tuple(a for a in par.order.split("-") if a != "ep")
    if sorted(order) != sorted(_AXES):
        raise PlanError(f"parallel.order: {par.order!r} must name each of tp, cp, dp, pp once "
                        f"(ep optional), e.g. tp-cp-ep-dp-pp")
    return Plan(tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, virtual_stages=v, schedule=par.schedule,
                sequence_parallel=par.sequence_parallel and tp > 1, zero_stage=par.zero_stage,
                recompute=par.recompute, micro_batch=train.micro_batch, global_batch=train.global_batch,
                n_micro=n_micro, precision=train.precision, order=order, n_devices=n,
                flash=train.attention != AttentionKernel.UNFUSED,
                devices_per_node=cluster.devices_per_node)
