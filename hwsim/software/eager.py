"""Elementwise ops as eager PyTorch runs them when nothing fuses them (no torch.compile, no
fused kernels in the framework): hwsim's fused norm, rotary and activation kernels become the
several kernels the framework's code launches, moving more bytes. The counts per framework are
data in its profile (`eager_elementwise`, counted in its code). Pure functions over `Work`s."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

__all__ = ["eager_op_of", "unfuse"]


def eager_op_of(spec, name: str):
    """The eager entry (norm, rotary or act) of `spec` that hwsim's op `name` stands for."""
    base = name.removesuffix(".bwd")
    if base.endswith("norm"):
        return spec.norm
    if base == "rotary":
        return spec.rotary
    if base.endswith("_act"):
        return spec.act
    return None


def unfuse(works: Sequence, spec, kernels) -> list:
    """`works` with each fused norm / rotary / activation kernel replaced by its eager
    equivalent: the bytes scaled by the framework's ratio, one launch overhead per kernel.
    `spec`: the profile's `eager_elementwise` (hwsim.software.profiles.EagerElementwiseSpec),
    or None when they stay fused."""
    if spec is None:
        return list(works)
    out = []
    for w in works:
        op = eager_op_of(spec, w.name) if w.comm is None else None
        if op is None:
            out.append(w)
            continue
        bwd = w.name.endswith(".bwd")
        ratio, n = (op.bwd_ratio, op.bwd_kernels) if bwd else (op.fwd_ratio, op.fwd_kernels)
        n = max(n, 1)
        n_bytes = w.bytes_moved * ratio
        duration = kernels.memory_time_s(n_bytes) + (n - 1) * kernels.launch_overhead_s
        out.append(replace(w, bytes_moved=n_bytes, duration_s=duration, n_kernels=n))
    return out
