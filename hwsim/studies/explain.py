"""Why the planner's best plan wins: plain words for a `PlanReport` — the best plan's numbers,
what changes from the baseline and the runner-up and what each change does, the parts of the
step that moved, and what the search pruned.
"""

from __future__ import annotations

from hwsim.config.schema import Recompute
from hwsim.studies.planner import _NO_PLAN, Candidate, PlanReport
from hwsim.units import GiB, fmt_time

__all__ = ["explain"]

_RECOMPUTE_COST = {Recompute.NONE: 0, Recompute.SELECTIVE: 1, Recompute.FULL: 2}


def _why(a: Candidate, b: Candidate) -> list[str]:
    """Plain words for what changes from plan a to plan b."""
    out = []
    if a.recompute != b.recompute:
        less = _RECOMPUTE_COST[b.recompute] < _RECOMPUTE_COST[a.recompute]
        out.append(f"recompute {a.recompute.value} → {b.recompute.value}: " +
                   ("the backward re-runs less of the forward" if less else "keeps less activation memory"))
    if a.virtual_stages != b.virtual_stages:
        out.append(f"virtual stages {a.virtual_stages} → {b.virtual_stages}: " +
                   ("the pipeline bubble shrinks as (pp−1)/v" if b.virtual_stages > a.virtual_stages
                    else "fewer pipeline hops per micro-batch"))
    if a.micro_batch != b.micro_batch:
        out.append(f"micro-batch {a.micro_batch} → {b.micro_batch}: " +
                   ("larger kernels run closer to peak, fewer pipeline steps" if b.micro_batch > a.micro_batch
                    else "more micro-batches per step fill the pipeline bubble"))
    if a.zero_stage != b.zero_stage:
        out.append(f"ZeRO stage {a.zero_stage} → {b.zero_stage} (sharded over dp: 1 the optimizer state, "
                   f"2 also the gradients, 3 also the weights, gathered per layer)")
    for name, field_, what in (("tensor parallelism", "tp", "the per-layer collectives and GEMM shapes"),
                               ("pipeline depth", "pp", "the bubble and the memory per stage"),
                               ("context parallelism", "cp", "the attention ring and the tokens per device"),
                               ("expert parallelism", "ep", "the all-to-all and the experts per device")):
        if getattr(a, field_) != getattr(b, field_):
            out.append(f"{name} {getattr(a, field_)} → {getattr(b, field_)}: changes {what}")
    if a.schedule != b.schedule:
        out.append(f"schedule {a.schedule.value} → {b.schedule.value}")
    return ["  " + line for line in out]


def explain(report: PlanReport) -> list[str]:
    best = report.best
    if best is None:
        return ["no simulated plan fits in memory" + (" within the budget" if report.rejected else "")]
    s = best.summary
    lines = [f"best: {best.candidate.label}: {s['tokens_per_s']:,.0f} tokens/s, step {fmt_time(s['step_time_s'], 4)}, "
             f"MFU {s['mfu']:.1%}, peak memory {s['peak_memory_bytes'] / GiB:.1f} of "
             f"{s['memory_capacity_bytes'] / GiB:.1f} GiB"]
    others = [("baseline", report.baseline)] if report.baseline is not None and report.baseline is not best else []
    if len(report.ranked) > 1:
        others.append(("runner-up", report.ranked[1]))
    for name, other in others:
        if other.summary is None:
            label = "the scenario's own plan" if other.candidate is _NO_PLAN else other.candidate.label
            lines.append(f"the {name} ({label}) could not be simulated: {other.error}")
            continue
        gain = other.summary["step_time_s"] / s["step_time_s"] - 1
        lines.append(f"{gain:+.1%} throughput over the {name} {other.candidate.label}"
                     + ("" if other.fits else " (which does not fit in memory)"))
        lines += _why(other.candidate, best.candidate)
        deltas = sorted(((k, s["breakdown"].get(k, 0.0) - other.summary["breakdown"].get(k, 0.0))
                         for k in set(s["breakdown"]) | set(other.summary["breakdown"])), key=lambda kv: kv[1])
        moved = [f"{k} {'+' if d > 0 else '−'}{fmt_time(abs(d), 3)}" for k, d in deltas
                 if abs(d) > 1e-3 * s["step_time_s"]]
        if moved:
            lines.append("  time per step by part (best − " + name + "): " + ", ".join(moved))
    c = report.counts
    framework = (f"{c['framework']} not offered by the framework, " if c.get("framework") else "")
    lines.append(f"searched {c.get('enumerated', 0)} plans: {c.get('invalid', 0)} invalid, {framework}"
                 f"{c.get('over_memory_estimate', 0)} over memory (estimate), {c.get('dominated', 0)} dominated, "
                 f"{c.get('simulated', 0)} simulated, {c.get('pruned_by_bound', 0)} pruned by the lower bound, "
                 f"{c.get('not_simulated_limit', 0)} left unsimulated by the limit")
    return lines
