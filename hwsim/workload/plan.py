"""The parallel plan: checks that it is possible, derives what follows from it, and maps ranks.

Rank order follows Megatron-LM by default (`parallel.order`, fastest-varying first:
tp-cp-ep-dp-pp): tensor-parallel peers are adjacent ranks (inside a node), then context,
data, and pipeline stages outermost.

MoE parallel folding (Megatron-Core >= 0.10, Liu et al. 2025, "MoE Parallel Folding",
arXiv:2504.14960; megatron/core/parallel_state.py initialize_model_parallel): the experts have a
layout of their own over the same tp·cp·dp ranks of a pipeline stage. Megatron builds two
RankGenerators with the same `order`: the attention one with sizes (tp, cp, dp, pp) and ep = 1,
the expert one with tp -> etp (expert_tensor_parallel_size), cp -> 1, ep, dp -> edp =
tp·cp·dp / (etp·ep) (expert_data_parallel_size), pp unchanged. So with the default order a
stage's local rank r has expert-tensor rank r mod etp, expert-parallel rank (r div etp) mod ep
and expert-data rank r div (etp·ep): ep no longer has to divide dp·cp, only etp·ep has to
divide tp·cp·dp. Expert weights' gradients are reduced over the edp group.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property

from hwsim.config.schema import AttentionKernel, Dtype, Recompute, ScenarioConfig, Schedule
from hwsim.errors import PlanError

_AXES = ("tp", "cp", "dp", "pp")

# The most (micro-batch, pipeline stage) passes one step may have: pp x virtual_stages x
# micro-batches per pipeline. A folded step's task graph is linear in them (~10-33 tasks each at step
# granularity), and so are its compile and simulate time and memory. Measured on the SMALL test
# model (tests/conftest.py), folded, one process: pp=2 with 1,000 / 10,000 / 100,000
# micro-batches took 0.47 s / 4.8 s / 104 s (33k / 330k / 3.3M tasks; 2.0 GB resident at
# 100k); pp=16 x 1,000 took 5.5 s and pp=64 x 1,000 36 s: ~0.3-0.6 ms and ~600 B a pass. The
# most among the published runs (shared/validation/published_runs.yaml) is 32,768 (Megatron-LM
# SC21's GPT 1T: pp=64 x 512 micro-batches); the scenarios/ at most 768. So 131,072 passes (4x
# that) keep one step to ~1-1.5 min and ~3 GB, while a typo'd global_batch fails at once.
MAX_PIPELINE_PASSES = 131_072


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
    etp: int = 1                # expert tensor parallel (parallel folding); Megatron-Core's default is tp
    expert_order: tuple[str, ...] = ("tp", "ep", "dp", "pp")   # the expert RankGenerator's order

    @property
    def edp(self) -> int:
        """Expert-data-parallel size: the ranks holding the same experts, tp·cp·dp / (etp·ep)."""
        return self.tp * self.cp * self.dp // (self.etp * self.ep)

    @cached_property
    def _expert_strides(self) -> dict[str, int]:
        sizes = {"tp": self.etp, "ep": self.ep, "dp": self.edp, "pp": self.pp}
        strides, stride = {}, 1
        for axis in self.expert_order:
            strides[axis] = stride
            stride *= sizes[axis]
        return strides

    def expert_coords(self, rank: int) -> dict[str, int]:
        """{etp, ep, edp, pp} coordinates of `rank` in the expert layout."""
        s = self._expert_strides
        sizes = {"tp": self.etp, "ep": self.ep, "dp": self.edp, "pp": self.pp}
        names = {"tp": "etp", "ep": "ep", "dp": "edp", "pp": "pp"}
        return {names[a]: (rank // s[a]) % sizes[a] for a in self.expert_order}

    def _expert_groups(self, axis: str, stage: int) -> tuple[tuple[int, ...], ...]:
        """Groups along expert axis `axis` (tp = etp, ep, dp = edp) of pipeline stage `stage`."""
        s = self._expert_strides
        sizes = {"tp": self.etp, "ep": self.ep, "dp": self.edp}
        others = [a for a in ("tp", "ep", "dp") if a != axis]
        bases = sorted(stage * s["pp"] + sum(c * s[a] for a, c in zip(others, combo))
                       for combo in itertools.product(*(range(sizes[a]) for a in others)))
        return tuple(tuple(b + i * s[axis] for i in range(sizes[axis])) for b in bases)

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
        """Expert-parallel groups of a stage (the all-to-all's), ordered by their first rank."""
        return self._expert_groups("ep", stage)

    def etp_groups(self, stage: int) -> tuple[tuple[int, ...], ...]:
        """Expert-tensor-parallel groups of a stage (one expert's matrices split over them)."""
        return self._expert_groups("tp", stage)

    def edp_groups(self, stage: int) -> tuple[tuple[int, ...], ...]:
        """Expert-data-parallel groups of a stage: the ranks holding the same expert shards,
        which reduce the experts' gradients together."""
        return self._expert_groups("dp", stage)

    def tpep_groups(self, stage: int) -> tuple[tuple[int, ...], ...]:
        """The etp·ep ranks of a stage that share an expert-data-parallel index (Megatron's
        tp_ep group: the all-gather dispatcher gathers over it)."""
        by_edp: dict[int, list[int]] = {}
        for g in self.etp_groups(stage):
            by_edp.setdefault(self.expert_coords(g[0])["edp"], []).extend(g)
        return tuple(tuple(sorted(by_edp[k])) for k in sorted(by_edp))

    @property
    def expert_grad_shards(self) -> int:
        """Ranks that reduce (and, with ZeRO, shard) an expert's gradients: edp."""
        return self.edp

    @property
    def fp8(self) -> bool:
        return self.precision == Dtype.FP8


def framework_etp(scenario: ScenarioConfig) -> int | None:
    """The named framework version's default expert tensor parallelism (None: none named, or no experts)."""
    if scenario.model.moe is None or scenario.software is None:
        return None
    from hwsim.software.profiles import resolve_software   # the software layer reads the plan's types
    return resolve_software(scenario).expert_tensor_parallel


def resolve_plan(scenario: ScenarioConfig) -> Plan:
    """Check the plan against the model and cluster; raise PlanError with the fix."""
    par, model, train, cluster = scenario.parallel, scenario.model, scenario.training, scenario.cluster
    n = cluster.n_devices
    tp, pp, cp, ep, v = par.tp, par.pp, par.cp, par.ep, par.virtual_stages
    kv_heads = model.kv_heads or model.heads
    acc = cluster.accelerator
    if train.precision == Dtype.FP8 and not acc.peak.fp8:
        raise PlanError(f"training.precision: fp8 needs fp8 tensor cores, which {acc.name} does not have (its "
                        f"preset lists no peak.fp8); use bf16 or fp16, or an accelerator with fp8 (H100, H200, "
                        f"B200, MI300X)")
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
    # expert tensor parallelism when not written: the framework profile's (Megatron-Bridge recipes: 1),
    # else Megatron-Core's default, expert_tensor_parallel_size = tp
    etp = par.etp if par.etp is not None else (framework_etp(scenario) or tp)
    if ep > 1 and model.moe is None:
        raise PlanError(f"parallel.ep: ep={ep} but the model has no experts (model.moe); set ep: 1")
    if par.etp is not None and par.etp > 1 and model.moe is None:
        raise PlanError(f"parallel.etp: etp={par.etp} but the model has no experts (model.moe); leave etp out")
    if model.moe is not None:
        if model.moe.experts % ep:
            raise PlanError(f"parallel.ep: ep={ep} does not divide the {model.moe.experts} experts; use "
                            f"an ep that divides it")
        moe_ffn = model.moe.moe_ffn_hidden or model.ffn_hidden
        if moe_ffn % etp:
            raise PlanError(f"parallel.etp: etp={etp} does not divide the experts' hidden size {moe_ffn}; use an "
                            f"etp that divides it (etp defaults to tp when not written)")
        per_stage = tp * cp * dp
        if per_stage % (etp * ep):
            raise PlanError(f"parallel.ep: etp·ep = {etp}·{ep} = {etp * ep} must divide the tp·cp·dp = {tp}·{cp}·"
                            f"{dp} = {per_stage} ranks of a pipeline stage (MoE parallel folding lays the experts "
                            f"over them; expert-data-parallel = tp·cp·dp/(etp·ep)); change ep or etp "
                            f"(e.g. etp: 1), or dp")
    per_step = train.micro_batch * dp
    stages = pp * v    # a micro-batch passes through each (virtual) stage
    if train.global_batch // per_step * stages > MAX_PIPELINE_PASSES:
        n = train.global_batch // per_step
        raise PlanError(f"training.global_batch: {train.global_batch:,} sequences make {n:,} micro-batches per "
                        f"pipeline (global_batch / (micro_batch·dp) = {train.global_batch:,} / "
                        f"({train.micro_batch}·{dp})), times {stages} pipeline stages (pp·virtual_stages) that is "
                        f"{n * stages:,} passes, above the {MAX_PIPELINE_PASSES:,} hwsim simulates in bounded time "
                        f"and memory (a step's task graph grows with each one); lower global_batch to at most "
                        f"{max(1, MAX_PIPELINE_PASSES // stages) * per_step:,} with this micro_batch and dp, or "
                        f"raise training.micro_batch")
    if train.global_batch % per_step:
        raise PlanError(f"training.global_batch: {train.global_batch} is not a multiple of micro_batch·dp = "
                        f"{train.micro_batch}·{dp} = {per_step}; use a global_batch that is (e.g. "
                        f"{max(1, round(train.global_batch / per_step)) * per_step})")
    n_micro = train.global_batch // per_step
    if par.schedule == Schedule.INTERLEAVED and n_micro % pp:
        raise PlanError(f"parallel.schedule: interleaved 1F1B needs the number of micro-batches per "
                        f"pipeline ({n_micro} = global_batch / (micro_batch·dp)) to be a multiple of "
                        f"pp={pp}; change global_batch, micro_batch or pp")
    named = par.order.split("-")
    order = tuple(a for a in named if a != "ep")
    if sorted(order) != sorted(_AXES) or named.count("ep") > 1:
        raise PlanError(f"parallel.order: {par.order!r} must name each of tp, cp, dp, pp once "
                        f"(ep optional), e.g. tp-cp-ep-dp-pp")
    # the expert RankGenerator: the same order with cp of size 1 (dropped) and ep where the order
    # names it (Megatron's default order puts it before dp)
    with_ep = named if "ep" in named else [*named[:named.index("dp")], "ep", *named[named.index("dp"):]]
    expert_order = tuple(a for a in with_ep if a != "cp")
    if model.moe is not None and (expert_order[-1] != "pp" or order[-1] != "pp"):
        raise PlanError(f"parallel.order: {par.order!r} must keep pp outermost (last) when experts are folded "
                        f"over a stage (Megatron-Core asserts the attention and expert pipeline groups agree)")
    return Plan(tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, virtual_stages=v, schedule=par.schedule,
                sequence_parallel=par.sequence_parallel and tp > 1, zero_stage=par.zero_stage,
                recompute=par.recompute, micro_batch=train.micro_batch, global_batch=train.global_batch,
                n_micro=n_micro, precision=train.precision, order=order, n_devices=n,
                flash=train.attention != AttentionKernel.UNFUSED,
                devices_per_node=cluster.devices_per_node, etp=etp, expert_order=expert_order)
