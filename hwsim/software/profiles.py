"""Framework-version profiles: what a training stack does by default, as data with sources.

A profile file, `hwsim/presets/software/<framework>.yaml`, lists the framework's profiles oldest
first; each starts at a version (`from`) and sets some of the settings below, every value with
the source it was read from (that version's code or documentation). A scenario's
`software.version` selects the last profile whose `from` is not later than it, comparing the
digits as integer tuples ("2024-12" -> (2024, 12), "25.11" -> (25, 11), "0.8.0" -> (0, 8, 0));
no version selects the newest. A setting the scenario states wins over the profile's; a setting
neither states takes hwsim's default stack (`DEFAULTS`).

The default stack (no `software` block, or `framework: custom`) is the idealised one hwsim has
always simulated: FlashAttention-2-class attention, a host that keeps ahead of the GPU, the
vocab-parallel fused loss, fused elementwise kernels and optimizer, fp32 gradient reduction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hwsim.config.schema import (AttentionKernel, Fp8Recipe, Framework, FsdpMixedPrecision, LossKind, MoeDispatcher,
                                 Recompute, ReduceDtype, ScenarioConfig, Schedule, SelectiveRecompute)
from hwsim.errors import ConfigError

__all__ = ["effective_scenario", "HostMode", "LossKind", "PlanSpace", "ReduceDtype", "SoftwareStack", "resolve_software",
           "load_framework", "known_frameworks", "version_key", "DEFAULTS"]


class HostMode(StrEnum):
    IDEAL = "ideal"        # the host is never behind the GPU (hwsim's default stack)
    EAGER = "eager"        # eager PyTorch: every op dispatched from Python, autograd in C++
    COMPILED = "compiled"  # torch.compile: no Python per op, a launcher per (fused) kernel
    GRAPHS = "graphs"      # CUDA graphs: one launch per captured graph


REDUCE_BYTES = {ReduceDtype.FP32: 4, ReduceDtype.BF16: 2, ReduceDtype.FP16: 2}


# --- the profile file, validated at the boundary ------------------------------------------

class _Closed(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _setting(kind: Any) -> Any:
    class Setting(_Closed):
        value: kind | None
        source: str = Field(min_length=3)
    return Setting


class ProfileSettings(_Closed):
    attention: _setting(AttentionKernel) | None = None
    compile: _setting(bool) | None = None
    cuda_graphs: _setting(bool) | None = None
    async_tp: _setting(bool) | None = None
    fp8_recipe: _setting(Fp8Recipe) | None = None
    fp8_output_layer: _setting(bool) | None = None
    fp8_casts: _setting(Literal["te", "torchao"]) | None = None
    selective_recompute: _setting(SelectiveRecompute) | None = None
    selective_layer_interval: _setting(int) | None = None
    fsdp_mixed_precision: _setting(FsdpMixedPrecision) | None = None
    grad_reduce_dtype: _setting(ReduceDtype) | None = None
    overlap_grad_reduce: _setting(bool) | None = None
    grad_accumulation: _setting(Literal["fused", "separate"]) | None = None
    p2p_sync: _setting(bool) | None = None
    loss: _setting(LossKind) | None = None
    fused_elementwise: _setting(bool) | None = None
    optimizer_fused: _setting(bool) | None = None
    loss_scale_sync: _setting(bool) | None = None
    overflow_check: _setting(Literal["fused", "per-tensor"]) | None = None
    host_syncs_per_step: _setting(int) | None = None
    fsdp_version: _setting(Literal[0, 1, 2]) | None = None
    moe_dispatcher: _setting(MoeDispatcher) | None = None
    expert_tensor_parallel: _setting(int) | None = None   # parallel.etp when the scenario leaves it out


class LayerOps(_Closed):
    """Ops the framework dispatches per transformer layer, counted in its code."""

    forward_kernel_ops: int = Field(ge=0)
    forward_view_ops: int = Field(0, ge=0)
    backward_nodes: int = Field(ge=0)                     # C++ autograd nodes (AccumulateGrad excluded)
    backward_python_nodes: int = Field(0, ge=0)           # nodes of Python autograd.Functions
    accumulate_grad_nodes: int = Field(0, ge=0)           # one per parameter tensor
    checkpoint_forward_extra_ops: int = Field(0, ge=0)
    checkpoint_backward_extra_ops: int = Field(0, ge=0)
    forward_host_syncs: int = Field(0, ge=0)              # blocking host<->device syncs in a layer's forward (before its MLP)
    source: str = Field(min_length=3)


class _EagerOp(_Closed):
    fwd_kernels: int = Field(ge=1)
    bwd_kernels: int = Field(ge=1)
    fwd_ratio: float = Field(gt=0)
    bwd_ratio: float = Field(gt=0)


class EagerElementwiseSpec(_Closed):
    """What eager PyTorch runs for hwsim's fused elementwise ops (hwsim.software.eager)."""

    norm: _EagerOp | None = None
    rotary: _EagerOp | None = None
    act: _EagerOp | None = None
    source: str = Field(min_length=10)


class PlanSpace(_Closed):
    """The parallel plans a framework version can run (read in its code); a field left out is
    not restricted."""

    tp: bool | None = None
    pp: bool | None = None
    cp: bool | None = None
    ep: bool | None = None
    sequence_parallel: bool | None = None
    zero_stages: tuple[Literal[0, 1, 2, 3], ...] | None = None
    schedules: tuple[Schedule, ...] | None = None
    recompute: tuple[Recompute, ...] | None = None
    cuda_graphs: bool | None = None     # whether the version can capture CUDA graphs at all
    source: str = Field(min_length=10)

    def violations(self, plan) -> list[str]:
        """What of `plan` (hwsim.workload.plan.Plan) this framework cannot run."""
        out = []
        for axis in ("tp", "pp", "cp", "ep"):
            if getattr(self, axis) is False and getattr(plan, axis) > 1:
                out.append(f"parallel.{axis}={getattr(plan, axis)} (no {axis} parallelism)")
        if self.sequence_parallel is False and plan.sequence_parallel:
            out.append("parallel.sequence_parallel (not offered)")
        if self.zero_stages is not None and plan.zero_stage not in self.zero_stages:
            out.append(f"parallel.zero_stage={plan.zero_stage} (offers {list(self.zero_stages)})")
        if self.schedules is not None and plan.pp > 1 and plan.schedule not in self.schedules:
            out.append(f"parallel.schedule={plan.schedule.value} (offers {[x.value for x in self.schedules]})")
        if self.recompute is not None and plan.recompute not in self.recompute:
            out.append(f"parallel.recompute={plan.recompute.value} (offers {[x.value for x in self.recompute]})")
        return out

    def software_violations(self, software) -> list[str]:
        """What of the resolved stack `software` this framework version cannot do."""
        return (["software.cuda_graphs (no CUDA-graph capture)"]
                if self.cuda_graphs is False and software.cuda_graphs else [])


class Profile(_Closed):
    from_: str = Field(alias="from")
    code: str = ""
    settings: ProfileSettings = ProfileSettings()
    layer_ops: LayerOps | None = None
    eager_elementwise: EagerElementwiseSpec | None = None
    plan_space: PlanSpace | None = None


class FrameworkFile(_Closed):
    framework: Framework
    description: str = ""
    profiles: tuple[Profile, ...] = Field(min_length=1)


# --- hwsim's default stack ----------------------------------------------------------------

DEFAULT_SOURCE = "hwsim's default stack (neither the scenario nor a framework profile sets it)"

DEFAULTS: dict[str, Any] = {
    "attention": AttentionKernel.FLASH,
    "compile": False,
    "cuda_graphs": False,
    "async_tp": False,
    "fp8_recipe": Fp8Recipe.DELAYED,
    "fp8_output_layer": True,
    "fp8_casts": "te",
    "selective_recompute": SelectiveRecompute.ATTENTION,
    "selective_layer_interval": 2,
    "fsdp_mixed_precision": None,
    "grad_reduce_dtype": ReduceDtype.FP32,
    "overlap_grad_reduce": True,
    "grad_accumulation": "fused",
    "p2p_sync": False,
    "loss": LossKind.FUSED,
    "fused_elementwise": True,
    "optimizer_fused": True,
    "loss_scale_sync": False,
    "overflow_check": "fused",
    "host_syncs_per_step": 0,
    "fsdp_version": 0,
    # hwsim's default stack dispatches MoE tokens with an all-to-all (as hwsim always has; Megatron-Core's
    # own TransformerConfig default is "allgather"); expert_tensor_parallel None: etp = tp, Megatron-Core's
    # default (transformer_config.py expert_tensor_parallel_size None -> tensor_model_parallel_size)
    "moe_dispatcher": MoeDispatcher.ALLTOALL,
    "expert_tensor_parallel": None,
}
SCENARIO_SETTINGS = ("compile", "async_tp", "fp8_recipe", "selective_recompute", "fsdp_mixed_precision",
                     "cuda_graphs", "grad_reduce_dtype", "loss", "optimizer_fused", "loss_scale_sync",
                     "host_syncs_per_step", "fsdp_version", "moe_dispatcher")


def version_key(version: str) -> tuple[int, ...]:
    """'2024-12' -> (2024, 12); '25.11' -> (25, 11); 'core_r0.8.0' -> (0, 8, 0)."""
    return tuple(int(x) for x in re.findall(r"\d+", version))


def _dir():
    return resources.files("hwsim").joinpath("presets", "software")


@cache
def known_frameworks() -> tuple[str, ...]:
    folder = _dir()
    if not folder.is_dir():
        return ()
    return tuple(sorted(p.name[:-len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml")))


@cache
def load_framework(name: str) -> FrameworkFile | None:
    if name not in known_frameworks():
        return None
    path = f"presets/software/{name}.yaml"
    try:
        data = yaml.safe_load(_dir().joinpath(f"{name}.yaml").read_text())
        parsed = FrameworkFile.model_validate(data)
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"{path} is not a valid framework profile (a bug in hwsim's data): {exc}") from None
    if parsed.framework.value != name:
        raise ConfigError(f"{path} names framework {parsed.framework.value!r}; the file name must match")
    keys = [version_key(p.from_) for p in parsed.profiles]
    if keys != sorted(keys):
        raise ConfigError(f"{path}: profiles must be listed oldest first (their `from` versions)")
    return parsed


# --- resolution ---------------------------------------------------------------------------

@dataclass(frozen=True)
class SoftwareStack:
    """Every setting hwsim simulates a step with, and where each came from."""

    framework: Framework
    version: str | None
    profile_from: str | None          # the profile selected, by its `from` version
    attention: AttentionKernel
    compile: bool
    cuda_graphs: bool
    async_tp: bool
    fp8_recipe: Fp8Recipe
    fp8_output_layer: bool            # the logits GEMM runs in FP8 too under training.precision: fp8
    fp8_casts: str                    # te | torchao: how the fp8 GEMMs get their operands (hwsim.workload.work)
    selective_recompute: SelectiveRecompute
    selective_layer_interval: int
    fsdp_mixed_precision: FsdpMixedPrecision | None
    grad_reduce_dtype: ReduceDtype
    overlap_grad_reduce: bool
    grad_accumulation: str            # fused (in the weight-gradient GEMM) | separate (an add kernel per micro-batch)
    p2p_sync: bool                    # the host waits for the GPU after every pipeline send/recv
    loss: LossKind
    fused_elementwise: bool
    optimizer_fused: bool
    loss_scale_sync: bool
    overflow_check: str               # fp16 inf/nan check: fused (one pass) | per-tensor (a host read per tensor)
    host_syncs_per_step: int
    fsdp_version: int
    moe_dispatcher: MoeDispatcher = MoeDispatcher.ALLTOALL
    expert_tensor_parallel: int | None = None   # the etp a plan gets when parallel.etp is not written; None: tp
    layer_ops: LayerOps | None = None           # None: one host op per hwsim kernel
    eager_elementwise: EagerElementwiseSpec | None = None
    plan_space: Any = None            # PlanSpace, or None: any plan
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    host_model: bool = True           # simulation.host_model: False keeps the host ahead (an ablation)

    @property
    def host_mode(self) -> HostMode:
        if self.framework == Framework.CUSTOM or not self.host_model:
            return HostMode.IDEAL
        if self.cuda_graphs:
            return HostMode.GRAPHS
        return HostMode.COMPILED if self.compile else HostMode.EAGER

    @property
    def unfused_elementwise(self):
        """The eager elementwise kernels to simulate, or None when they are fused (the framework
        fuses them, or torch.compile does)."""
        if self.fused_elementwise or self.compile or self.framework == Framework.CUSTOM:
            return None
        return self.eager_elementwise

    def plan_violations(self, plan) -> list[str]:
        """What of `plan` this framework version cannot run (empty: it can, or unknown)."""
        return self.plan_space.violations(plan) if self.plan_space is not None else []

    @property
    def grad_reduce_bytes(self) -> int:
        return REDUCE_BYTES[self.grad_reduce_dtype]

    @property
    def grad_accumulation_bytes(self) -> float:
        """HBM bytes per parameter and micro-batch of a separate gradient-accumulation add: read
        the new 16-bit gradient, read and write the accumulation buffer (in the reduce dtype);
        0 when the weight-gradient GEMM accumulates in place."""
        return 0.0 if self.grad_accumulation == "fused" else 2.0 + 2.0 * self.grad_reduce_bytes

    def settings(self) -> dict[str, Any]:
        """Setting -> value (JSON-friendly), for summaries and reports."""
        out: dict[str, Any] = {"framework": self.framework.value, "version": self.version,
                               "profile": self.profile_from, "host": self.host_mode.value}
        for name in DEFAULTS:
            value = getattr(self, name)
            out[name] = value.value if isinstance(value, StrEnum) else value
        return out


def resolve_software(scenario: ScenarioConfig) -> SoftwareStack:
    """The settings of `scenario`'s stack: the scenario's own, else its framework version's
    profile, else hwsim's default stack. `training.attention`, when the scenario writes it,
    wins over the profile's attention."""
    sw = scenario.software
    framework = sw.framework if sw is not None else Framework.CUSTOM
    version = sw.version if sw is not None else None
    values: dict[str, Any] = dict(DEFAULTS)
    sources = {k: DEFAULT_SOURCE for k in DEFAULTS}
    profile_from = None
    layer_ops = None
    eager = None
    plan_space = None
    spec = load_framework(framework.value) if framework != Framework.CUSTOM else None
    if spec is not None:
        profile = _select(spec, version)
        profile_from = profile.from_
        if profile.plan_space is not None:
            plan_space = profile.plan_space
            sources["plan_space"] = f"{framework.value} profile from {profile.from_}: {plan_space.source}"
        if profile.eager_elementwise is not None:
            eager = profile.eager_elementwise
            sources["eager_elementwise"] = f"{framework.value} profile from {profile.from_}: {eager.source}"
        if profile.layer_ops is not None:
            layer_ops = profile.layer_ops
            sources["layer_ops"] = f"{framework.value} profile from {profile.from_}: {profile.layer_ops.source}"
        for name in ProfileSettings.model_fields:
            setting = getattr(profile.settings, name)
            if setting is not None and setting.value is not None:
                values[name] = setting.value
                sources[name] = f"{framework.value} profile from {profile.from_}: {setting.source}"
    if sw is not None:
        for name in SCENARIO_SETTINGS:
            value = getattr(sw, name)
            if value is not None:
                values[name] = value
                sources[name] = "scenario (software." + name + ")"
    mp = values["fsdp_mixed_precision"]
    if mp is not None and not (sw is not None and sw.grad_reduce_dtype is not None):
        # Composer's FSDP mixed precision decides the reduce dtype (mosaicml 0.16.4,
        # composer/trainer/mosaic_fsdp_utils.py get_mixed_precision: DEFAULT reduces in fp32, PURE in the
        # autocast dtype, FULL in fp32)
        values["grad_reduce_dtype"] = ReduceDtype.BF16 if mp == FsdpMixedPrecision.PURE else ReduceDtype.FP32
        sources["grad_reduce_dtype"] = (f"from fsdp_mixed_precision={mp.value} ({sources['fsdp_mixed_precision']}); "
                                        f"mosaicml 0.16.4 composer/trainer/mosaic_fsdp_utils.py get_mixed_precision: "
                                        f"DEFAULT reduce_dtype fp32, PURE the autocast dtype, FULL fp32")
    if "overlap_grad_reduce" in scenario.parallel.model_fields_set:
        values["overlap_grad_reduce"] = scenario.parallel.overlap_grad_reduce
        sources["overlap_grad_reduce"] = "scenario (parallel.overlap_grad_reduce)"
    if "attention" in scenario.training.model_fields_set:
        values["attention"] = scenario.training.attention
        sources["attention"] = "scenario (training.attention)"
    elif not _has_figures(scenario, values["attention"]):
        # the profile's kernel class has figures on some architectures only (flash3: Hopper)
        sources["attention"] += (f" On this accelerator hwsim has no {values['attention'].value} figures, so the "
                                 f"FlashAttention-2-class ones stand in.")
        values["attention"] = AttentionKernel.FLASH
    return SoftwareStack(framework=framework, version=version, profile_from=profile_from, sources=sources,
                         layer_ops=layer_ops, eager_elementwise=eager, plan_space=plan_space,
                         host_model=scenario.simulation.host_model,
                         **values)


def _select(spec: FrameworkFile, version: str | None) -> Profile:
    if version is None or not version_key(version):
        return spec.profiles[-1]
    key = version_key(version)
    chosen = spec.profiles[0]
    for profile in spec.profiles:
        if version_key(profile.from_) <= key:
            chosen = profile
    return chosen


def effective_scenario(scenario: ScenarioConfig, software: SoftwareStack) -> ScenarioConfig:
    """`scenario` with the fields its software decides written in (the attention kernel, whether
    the gradient reduction overlaps the backward), so that the plan and the kernel model see
    what the framework runs."""
    if scenario.training.attention != software.attention:
        training = scenario.training.model_copy(update={"attention": software.attention})
        scenario = scenario.model_copy(update={"training": training})
    if scenario.parallel.overlap_grad_reduce != software.overlap_grad_reduce:
        parallel = scenario.parallel.model_copy(update={"overlap_grad_reduce": software.overlap_grad_reduce})
        scenario = scenario.model_copy(update={"parallel": parallel})
    return scenario


def _has_figures(scenario: ScenarioConfig, attention: AttentionKernel) -> bool:
    from hwsim.hardware.kernels import load_profile, profile_name_for
    profile = load_profile(profile_name_for(scenario.cluster.accelerator))
    return {AttentionKernel.FLASH3: profile.attention_flash3 is not None,
            AttentionKernel.FLASH_TRITON: profile.attention_triton is not None}.get(attention, True)
