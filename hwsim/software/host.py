"""The host thread that launches a rank's kernels: how long it spends per op, by how the
framework runs (eager PyTorch, torch.compile, CUDA graphs), as data with sources
(`hwsim/presets/runtime/pytorch-eager.yaml`).

Pure functions over `Work` lists: each compute work gets `host_s`, the host time to dispatch
it. The compiler turns that into tasks on the device's HOST stream that its GPU work waits
for, so a GPU that is faster than its host idles, and it shows on the timeline and in the
bottleneck account.

Per op, in eager mode (hwsim's ops are kernels; a framework runs more Python ops than that):
  * forward and recompute: a layer's forward dispatches `layer_forward_kernel_ops` ops that
    launch kernels and `layer_forward_view_ops` that do not (counted in the framework's code,
    when its profile has the counts; otherwise one op per hwsim kernel), spread over the
    layer's kernels in proportion to their number;
  * backward: the layer's autograd nodes at `backward_node_s` each (AccumulateGrad included),
    those of Python autograd.Functions at `python_backward_node_s`;
  * full recompute through a checkpoint function adds a Python backward node per layer;
  * a collective's launch (`nccl_launch_s`) is charged to the compute work that follows it.
Under torch.compile each kernel costs `kernel_launch_s`; under CUDA graphs one graph launch
per layer forward and per layer backward (Megatron-Core and Transformer Engine capture a graph
per transformer layer: `make_graphed_callables`), charged to its first kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from typing import Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hwsim.errors import ConfigError
from hwsim.software.profiles import HostMode

__all__ = ["HostCosts", "HostPlan", "load_host_costs", "with_host_time", "host_plan",
           "OPTIMIZER_OPS_PER_TENSOR"]

# torch.optim's single-tensor AdamW (torch/optim/adamw.py, _single_tensor_adamw, PyTorch 2.x)
# runs per parameter tensor: param.mul_ (weight decay), exp_avg.lerp_, exp_avg_sq.mul_,
# .addcmul_, exp_avg_sq.sqrt, / bias_correction2_sqrt, .add_(eps), param.addcdiv_: 8 kernels.
OPTIMIZER_OPS_PER_TENSOR = 8


class _Closed(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Value(_Closed):
    value: float | None = Field(ge=0)
    source: str = Field(min_length=3)


class _Values(_Closed):
    forward_op_s: _Value
    view_op_s: _Value
    backward_node_s: _Value
    python_backward_node_s: _Value
    kernel_launch_s: _Value
    cuda_graph_launch_s: _Value
    nccl_launch_s: _Value
    host_sync_s: _Value


class _RuntimeFile(_Closed):
    name: str
    description: str = ""
    values: _Values


@dataclass(frozen=True, slots=True)
class HostCosts:
    """Seconds of host CPU time per dispatched thing (see the runtime preset for sources)."""

    forward_op_s: float
    view_op_s: float
    backward_node_s: float
    python_backward_node_s: float
    kernel_launch_s: float
    cuda_graph_launch_s: float
    nccl_launch_s: float
    host_sync_s: float


@dataclass(frozen=True, slots=True)
class HostPlan:
    """How the compiler charges host time for one step."""

    mode: HostMode
    costs: HostCosts
    counts: object = None            # the profile's LayerOps (hwsim.software.profiles), or None
    checkpointed: bool = False       # full recompute through a checkpoint function
    syncs_per_step: int = 0          # device->host synchronisations before the optimizer

    def apply(self, works: Sequence, phase: str, per_layer: bool = False) -> list:
        return with_host_time(works, self.mode, self.costs, phase, self.counts if per_layer else None,
                              self.checkpointed and per_layer)


def host_plan(software, recompute_full: bool, fp16: bool) -> HostPlan | None:
    """The HostPlan of a resolved SoftwareStack (None for the ideal host)."""
    if software.host_mode == HostMode.IDEAL:
        return None
    syncs = software.host_syncs_per_step + (1 if software.loss_scale_sync and fp16 else 0)
    return HostPlan(software.host_mode, load_host_costs(), software.layer_ops, recompute_full, syncs)


@cache
def load_host_costs(name: str = "pytorch-eager") -> HostCosts:
    path = f"presets/runtime/{name}.yaml"
    try:
        data = yaml.safe_load(resources.files("hwsim").joinpath("presets", "runtime", f"{name}.yaml").read_text())
        parsed = _RuntimeFile.model_validate(data)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"{path} is missing or not valid (a bug in hwsim's data): {exc}") from None
    values = {k: getattr(parsed.values, k).value for k in _Values.model_fields}
    missing = [k for k, v in values.items() if v is None]
    if missing:
        raise ConfigError(f"{path}: no value for {', '.join(missing)} (a bug in hwsim's data)")
    return HostCosts(**values)


def with_host_time(works: Sequence, mode: HostMode, costs: HostCosts, phase: str,
                   counts=None, checkpointed: bool = False) -> list:
    """`works` (one layer's, or the embedding's, head's or optimizer's) with `host_s` set.

    `phase`: "fwd", "recompute", "bwd" or "optimizer". `counts` are the framework's per-layer
    op counts (None: one op per hwsim kernel). `checkpointed`: the layer runs under a
    checkpoint function (full recompute), which costs a Python backward node per layer."""
    works = list(works)
    compute = [i for i, w in enumerate(works) if w.comm is None]
    if mode == HostMode.IDEAL or not compute:
        return works
    n_comm = len(works) - len(compute)
    n_kernels = sum(works[i].n_kernels for i in compute)
    if mode == HostMode.GRAPHS:
        total = costs.cuda_graph_launch_s if phase in ("fwd", "bwd") else 0.0
    elif mode == HostMode.COMPILED:
        total = n_kernels * costs.kernel_launch_s + n_comm * costs.nccl_launch_s
    else:
        total = n_comm * costs.nccl_launch_s + _eager_seconds(n_kernels, phase, costs, counts, checkpointed)
    if total <= 0.0:
        return works
    out = list(works)
    for i in compute:
        out[i] = replace(works[i], host_s=works[i].host_s + total * works[i].n_kernels / n_kernels)
    return out


def _eager_seconds(n_kernels: int, phase: str, costs: HostCosts, counts,
                   checkpointed: bool) -> float:
    if phase == "optimizer":
        return n_kernels * costs.forward_op_s
    if counts is None:
        per = costs.backward_node_s if phase == "bwd" else costs.forward_op_s
        seconds = n_kernels * per
    elif phase == "bwd":
        seconds = ((counts.backward_nodes + counts.accumulate_grad_nodes) * costs.backward_node_s
                   + counts.backward_python_nodes * costs.python_backward_node_s)
    else:
        seconds = counts.forward_kernel_ops * costs.forward_op_s + counts.forward_view_ops * costs.view_op_s
    if checkpointed and phase == "recompute":
        seconds += costs.python_backward_node_s
        if counts is not None:
            seconds += counts.checkpoint_backward_extra_ops * costs.forward_op_s
    if checkpointed and phase == "fwd" and counts is not None:
        seconds += counts.checkpoint_forward_extra_ops * costs.forward_op_s
    return seconds
