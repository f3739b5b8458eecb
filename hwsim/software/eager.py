"""Elementwise ops as eager PyTorch runs them when nothing fuses them (no torch.compile, no
fused kernels in the framework): hwsim's fused norm, rotary and activation kernels become the
several kernels the framework's code launches, moving more bytes. The counts per framework are
data in its profile (`eager_elementwise`, counted in its code). Pure functions over `Work`s."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

__all__ = ["EagerOp", "EagerElementwise", "unfuse"]


@dataclass(frozen=True, slots=True)
class EagerOp:
    fwd_kernels: int
    bwd_kernels: int
    fwd_ratio: float     # eager forward bytes / hwsim's fused forward bytes
    bwd_ratio: float


@dataclass(frozen=True, slots=True)
class EagerElementwise:
    norm: EagerOp | None = None
    rotary: EagerOp | None = None
    act: EagerOp | None = None

    def of(self, name: str) -> EagerOp | None:
        base = name.removesuffix(".bwd")
        if base.endswith("norm"):
            return self.norm
        if base == "rotary":
            return self.rotary
        if base.endswith("_act"):
            return self.act
        return None


def unfuse(works: Sequence, spec: EagerElementwise | None, kernels) -> list:
    """`works` with each fused norm / rotary / activation kernel replaced by its eager
    equivalent: the bytes scaled by the framework's ratio, one launch overhead per kernel."""
    if spec is None:
        return list(works)
    out = []
    for w in works:
        op = spec.of(w.name) if w.comm is None else None
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
