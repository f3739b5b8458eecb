"""The bottleneck account in words: what limits the step and what would move it.

`bottleneck_account(result)` runs the critical path (critical_path.py) over a StepResult;
`advice(part, result)` says in plain words what each part is and which changes shorten it, each
simulated before it is printed (suggest.py: the `--set` flags, the predicted step time and peak
memory);
`report_markdown` (report.md) and `report_text` (the terminal) put the summary, the ranked
account and the busiest device's breakdown together.

The pipeline-bubble estimates use the idealized bubble fraction of Narayanan et al., SC'21
("Efficient Large-Scale Language Model Training on GPU Clusters Using Megatron-LM", §2.2):
(p−1)/m of the ideal time for 1F1B, (p−1)/(v·m) for interleaved 1F1B with v chunks per
device; as a fraction of the step, (p−1)/(v·m + p−1).
"""

from __future__ import annotations

from typing import Any

from hwsim import units
from hwsim.analysis.critical_path import (HOST_TIER, NO_TIER, Cause, PathAccount, PathPart, account_path,
                                         critical_path)
from hwsim.analysis.suggest import candidates, outcome_words, rejected_words, simulate_suggestions, worthwhile

__all__ = ["bottleneck_account", "advice", "report_markdown", "report_text", "bubble_fraction",
           "TIER_WORDS"]

TIER_WORDS = {
    "nvlink": "intra-node links (NVLink)", "pcie": "PCIe links", "nic": "NIC links",
    "network": "inter-node network", "ici": "torus links (ICI)", HOST_TIER: "host links (PCIe/C2C)",
    NO_TIER: "links",
}
_KIND_WORDS = {
    "tp": "tensor-parallel communication", "cp": "context-parallel communication (ring attention)",
    "ep": "expert-parallel all-to-all", "pp": "pipeline send/recv",
    "dp": "data-parallel communication (gradient reduction, parameter gathers)",
    "copy": "host-device copies (offload)",
}
_CAUSE_WORDS = {
    Cause.COMPUTE: "compute-bound kernels (matrix multiplies, attention)",
    Cause.MEMORY_BOUND: "memory-bound kernels (norms, activations, softmax, elementwise)",
    Cause.OVERHEAD: "kernel overhead (small kernels: launch cost, low efficiency)",
    Cause.RECOMPUTE: "activation recompute",
    Cause.OPTIMIZER: "optimizer step",
    Cause.BUBBLE: "pipeline bubble (waiting on other stages)",
    Cause.HOST: "host-bound (the GPU waits for its CPU thread to dispatch kernels, or for a sync)",
    Cause.IDLE: "idle",
}
_WORDS_MIN_FRAC = 0.01   # parts below 1% of the step are in the table, not in the words
_LATENCY_BOUND_FRAC = 0.5
_UNEVEN_FRAC = 0.03      # a path bubble this far above the ideal one is explained as imbalance


def bottleneck_account(result) -> PathAccount:
    """The critical path of a StepResult, split into causes (critical_path.account_path)."""
    compiled, trace = result.compiled, result.trace
    steps = critical_path(compiled.graph, trace)
    return account_path(steps, trace, compiled.topology, compiled.stage_of, result.summary["peak_flop_per_s"],
                        compiled.scenario.cluster.accelerator.hbm_bandwidth, compiled.plan)


def bubble_fraction(pp: int, n_micro: int, virtual_stages: int = 1) -> float:
    """Idealized pipeline bubble as a fraction of the step: (p−1)/(v·m + p−1)."""
    return (pp - 1) / (virtual_stages * n_micro + pp - 1) if pp > 1 else 0.0


def part_label(part: PathPart) -> str:
    if part.cause is Cause.COMM:
        return f"exposed {part.kind} communication on {TIER_WORDS.get(part.tier, part.tier)}"
    return _CAUSE_WORDS[part.cause]


def _pct(seconds: float, step_s: float) -> str:
    return f"{seconds / step_s:.1%}" if step_s > 0 else "n/a"


def _bubble_words(result, part_seconds: float, share: str) -> str:
    plan = result.compiled.plan
    p, m, v = plan.pp, plan.n_micro, plan.virtual_stages
    now = bubble_fraction(p, m, v)
    step = result.summary["step_time_s"]
    excess = (part_seconds / step - now) if step > 0 else 0.0
    uneven = (f"; the {excess:.0%} beyond the ideal is uneven stages (embedding and logits on the first "
              f"and last stage) and waits on other stages' communication" if excess > _UNEVEN_FRAC else "")
    own = result.summary["breakdown"].get("pipeline_bubble")
    busiest = (f"; the busiest device itself idles {own / step:.1%} of the step in its bubble"
               if own is not None and step > 0 else "")
    return (f"pipeline bubble on the critical path: {share} of the step waits on other pipeline stages (pp={p}, "
            f"{m} micro-batches, {plan.schedule.value}{f', v={v}' if v > 1 else ''}: the ideal bubble is "
            f"{now:.0%}{uneven}{busiest})")


def _comm_words(part: PathPart, result, share: str) -> str:
    where = TIER_WORDS.get(part.tier, part.tier)
    util = (f" at {part.link_utilization_frac:.0%} utilization"
            if part.link_utilization_frac is not None else "")
    head = (f"{_KIND_WORDS.get(part.kind, part.kind + ' communication')} is exposed for "
            f"{units.fmt_time(part.seconds, 3)} ({share} of the step) on the {where}{util}")
    notes = []
    if part.seconds > 0 and part.latency_s / part.seconds >= _LATENCY_BOUND_FRAC:
        notes.append(f"it is mostly fixed latency ({units.fmt_time(part.latency_s, 3)}): fewer, larger messages "
                     f"would help")
    if part.kind == "dp":
        compute_s = result.summary["breakdown"].get("compute", 0.0)
        if part.seconds > compute_s:
            notes.append(f"it is longer than all the compute it could hide behind "
                         f"({units.fmt_time(compute_s, 3)} on the busiest device), so no overlap can hide it")
        sw = result.compiled.software
        if (not result.compiled.scenario.parallel.overlap_grad_reduce and sw is not None
                and sw.framework.value != "custom" and "scenario" not in sw.sources.get("overlap_grad_reduce", "")):
            notes.append(f"{sw.framework.value} reduces after the backward (its profile's overlap_grad_reduce)")
    if part.kind == "tp" and part.tier in ("network", "nic", "ici"):
        notes.append(f"tp={result.compiled.plan.tp} spans nodes")
    return head + "".join(f"; {n}" for n in notes)


def _describe(part: PathPart, result) -> str:
    """What the part is and how much of the step it takes, with the numbers that explain it
    (facts only: the changes that would move it are simulated in `advice`)."""
    sc, plan, summary = result.compiled.scenario, result.compiled.plan, result.summary
    share = _pct(part.seconds, summary["step_time_s"])
    took = f"{units.fmt_time(part.seconds, 3)} ({share} of the step)"
    if part.cause is Cause.BUBBLE:
        return _bubble_words(result, part.seconds, share)
    if part.cause is Cause.COMM:
        return _comm_words(part, result, share)
    if part.cause is Cause.COMPUTE:
        on = summary.get("mixed", {}).get("slow_accelerator", sc.cluster.accelerator.name)   # mixed: the slow part's
        return (f"compute-bound kernels take {took} of the critical path at {summary['mfu']:.0%} MFU on "
                f"{on} ({plan.precision.value})")
    if part.cause is Cause.MEMORY_BOUND:
        return (f"memory-bound kernels (norms, activations, softmax, elementwise) take {took} at "
                f"{units.fmt_rate(sc.cluster.accelerator.hbm_bandwidth)} of HBM bandwidth")
    if part.cause is Cause.OVERHEAD:
        return (f"small kernels take {took}, several times their roofline time (launch cost and low "
                f"efficiency dominate)")
    if part.cause is Cause.RECOMPUTE:
        return (f"activation recompute ({plan.recompute.value}) re-runs forward work for {took} (peak memory "
                f"{units.fmt_bytes(summary['peak_memory_bytes'], precision=3)} of "
                f"{units.fmt_bytes(summary['memory_capacity_bytes'], precision=3)})")
    if part.cause is Cause.HOST:
        sw = result.compiled.software
        mode = f" ({sw.framework.value}, {sw.host_mode.value} dispatch)" if sw is not None else ""
        return f"the GPU waits for its host thread{mode} for {took}"
    if part.cause is Cause.OPTIMIZER:
        return f"the optimizer step takes {took}: it is memory-bound"
    return f"nothing on the critical path runs for {took} (idle): look at the timeline for what the devices wait on"


def prepare_advice(result, parts: list[PathPart], allow_batch_change: bool = False) -> None:
    """Simulate the changes for all these parts in one batch (in parallel), before their words."""
    simulate_suggestions(result, [s for p in parts for s in candidates(p, result, allow_batch_change)])


def advice(part: PathPart, result, allow_batch_change: bool = False) -> str:
    """One paragraph: what the part is, its share of the step, and the changes that move it,
    each simulated as a what-if of this step (suggest.py) so that every printed effect is
    hwsim's own prediction for the change: only changes that run, fit and are faster."""
    head = _describe(part, result)
    outcomes = simulate_suggestions(result, candidates(part, result, allow_batch_change))
    good, others = worthwhile(result, outcomes)
    tried = rejected_words(result, others)
    if good:
        said = "; or ".join(outcome_words(result, o) for o in good)
        return f"{head}. What moves it: {said}" + (f" (also simulated, not suggested: {tried})." if tried else ".")
    if tried:
        return f"{head}. No change hwsim tried moves it ({tried})."
    return f"{head}."


def _summary_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    plan = summary["plan"]
    rows = [
        ("devices", f"{summary['devices']} (simulated {summary['simulated_devices']}"
                    f"{', folded' if summary['folded'] else ''}; {summary['n_tasks']:,} tasks, "
                    f"{summary['granularity']} level)"),
        ("plan", f"tp={plan['tp']} pp={plan['pp']} dp={plan['dp']} cp={plan['cp']} ep={plan['ep']} "
                 f"{plan['schedule']}{' v=' + str(plan['virtual_stages']) if plan['virtual_stages'] > 1 else ''} "
                 f"zero={plan['zero_stage']} recompute={plan['recompute']}; "
                 f"{summary['micro_batches']} micro-batches"),
        ("step time", units.fmt_time(summary["step_time_s"])),
        ("throughput", f"{summary['tokens_per_s']:,.0f} tokens/s ({summary['tokens_per_s_per_device']:,.0f} "
                       f"per device)"),
        ("model TFLOP/s per device", f"{summary['tflops_per_device']:.1f}"),
        ("MFU / HFU", f"{summary['mfu']:.1%} / {summary['hfu']:.1%}"),
        ("peak memory", f"{units.fmt_bytes(summary['peak_memory_bytes'])} of "
                        f"{units.fmt_bytes(summary['memory_capacity_bytes'])} "
                        f"({'fits' if summary['fits_in_memory'] else 'DOES NOT FIT'})"),
    ]
    for oom in summary.get("oom_findings", [])[:3]:
        rows.append(("out of memory", f"device {oom['device']} at {units.fmt_time(oom['time_s'])}: "
                                      f"{units.fmt_bytes(oom['level_bytes'])} after {oom['task']!r}"))
    return rows


def _ranked(account: PathAccount) -> list[PathPart]:
    return [p for p in account.parts if p.seconds > 0.0]


def report_markdown(result, account: PathAccount | None = None,
                    pictures: tuple[str, ...] = (), allow_batch_change: bool = False) -> str:
    """report.md: summary, the ranked bottleneck account (adds up to the step time), the
    account in words, and the busiest device's breakdown."""
    account = account or bottleneck_account(result)
    summary = result.summary
    step = summary["step_time_s"]
    lines = [f"# {summary['name']}: where the time goes", "", "## Summary", "",
             "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in _summary_rows(summary)]
    if _cluster_notes(summary):
        lines += ["", *_cluster_notes(summary)]
    lines += ["", "## Bottleneck account (critical path)", "",
              f"The chain of tasks that set the step time, walked back from the last task to end "
              f"(each task waited for its last dependency or for the task before it on its stream). "
              f"Its time, split by cause; it adds up to the step time. Time the path spends on "
              f"pipeline stages other than stage {account.reference_stage} (where it spends the "
              f"most) is counted as pipeline bubble.", "",
              *([f"At {summary['granularity']} granularity consecutive kernels are fused into one task, so "
                 f"the compute-bound / memory-bound split classifies each fused task by its total "
                 f"arithmetic intensity.", ""] if summary["granularity"] != "op" else []),
              "| rank | cause | time | share of step | key |", "| --- | --- | --- | --- | --- |"]
    for i, part in enumerate(_ranked(account), 1):
        lines.append(f"| {i} | {part_label(part)} | {units.fmt_time(part.seconds)} | "
                     f"{_pct(part.seconds, step)} | `{part.key}` |")
    lines.append(f"| | **total** | **{units.fmt_time(account.total_s)}** | "
                 f"**{_pct(account.total_s, step)}** | step time {units.fmt_time(step)} |")
    lines += ["", "### In words", ""]
    prepare_advice(result, _words_parts(account, step), allow_batch_change)
    lines += [f"{i}. {advice(part, result, allow_batch_change)}" for i, part in enumerate(_words_parts(account, step), 1)]
    lines += ["", f"## Time on the busiest device (device {summary['breakdown_device']})", "",
              "Every instant of that device's step, by what it was doing (compute first, then "
              "exposed communication, then waiting).", "", "| part | time | share |", "| --- | --- | --- |"]
    for key, seconds in sorted(summary["breakdown"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {key} | {units.fmt_time(seconds)} | {_pct(seconds, step)} |")
    lines += _software_lines(summary)
    if pictures:
        lines += ["", "## Pictures", ""] + [f"![{name}]({name})" for name in pictures]
    return "\n".join(lines) + "\n"


def _cluster_notes(summary: dict[str, Any]) -> list[str]:
    """A mixed cluster's slow part and a shared fabric's placement (hwsim.hardware.groups, .shared)."""
    return [summary[key]["words"] for key in ("mixed", "shared_fabric") if summary.get(key)]


def _software_lines(summary: dict[str, Any]) -> list[str]:
    """The software settings the step was simulated with, each with its source, and the host
    thread's share: what the framework, not the hardware, costs."""
    sw, sources = summary.get("software"), summary.get("software_sources") or {}
    if not sw:
        return []
    step = summary["step_time_s"]
    host_wait = summary["breakdown"].get("host", 0.0)
    named = ("hwsim's default stack (the scenario names no framework: an idealised, well-tuned stack)"
             if sw["framework"] == "custom" else
             f"{sw['framework']}{' ' + sw['version'] if sw.get('version') else ''}"
             f"{' (profile from ' + sw['profile'] + ')' if sw.get('profile') else ''}")
    lines = ["", "## Software stack", "",
             f"{named}; host dispatch: {sw['host']}. "
             f"The host thread was busy {units.fmt_time(summary.get('host_busy_s', 0.0))}; the GPU waited for it "
             f"{units.fmt_time(host_wait)} ({_pct(host_wait, step)} of the step).", "",
             "| setting | value | source |", "| --- | --- | --- |"]
    if summary.get("software_plan_violations"):
        lines[-3:-3] = [f"**{sw['framework']} cannot run this plan**: "
                        f"{'; '.join(summary['software_plan_violations'])}. The step is simulated with its "
                        f"costs all the same, as a what-if.", ""]
    for name, source in sources.items():
        value = sw.get(name, "counted in the framework's code")
        lines.append(f"| {name} | {value} | {source.replace('|', '/')} |")
    return lines


def _words_parts(account: PathAccount, step: float) -> list[PathPart]:
    ranked = _ranked(account)
    big = [p for p in ranked if step > 0 and p.seconds / step >= _WORDS_MIN_FRAC]
    return big or ranked[:1]


def report_text(result, account: PathAccount | None = None, allow_batch_change: bool = False) -> str:
    """The account for a terminal: a few summary lines and the ranked causes in words."""
    account = account or bottleneck_account(result)
    summary = result.summary
    step = summary["step_time_s"]
    lines = [f"{summary['name']}: step {units.fmt_time(step)}, {summary['tokens_per_s']:,.0f} tokens/s, "
             f"MFU {summary['mfu']:.1%}, peak memory {units.fmt_bytes(summary['peak_memory_bytes'])} of "
             f"{units.fmt_bytes(summary['memory_capacity_bytes'])}"
             f"{'' if summary['fits_in_memory'] else ' (DOES NOT FIT)'}",
             *_cluster_notes(summary),
             "What limits the step (critical path, largest first):"]
    prepare_advice(result, _words_parts(account, step), allow_batch_change)
    for i, part in enumerate(_words_parts(account, step), 1):
        lines.append(f"  {i}. [{_pct(part.seconds, step):>6}] {advice(part, result, allow_batch_change)}")
    rest = [p for p in _ranked(account) if p not in _words_parts(account, step)]
    if rest:
        lines.append("  (below 1% each: " + ", ".join(f"{p.key} {_pct(p.seconds, step)}" for p in rest) + ")")
    return "\n".join(lines)
