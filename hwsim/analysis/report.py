"""The bottleneck account in words: what limits the step and what would move it.

`bottleneck_account(result)` runs the critical path (critical_path.py) over a StepResult;
`advice(part, result)` says in plain words what each part is and what would shorten it, with
the scenario's own numbers (the field to change, its value now, a value to try);
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
from hwsim.config.schema import Recompute, Schedule

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


def _bubble_advice(result, part_seconds: float, share: str) -> str:
    sc, plan = result.compiled.scenario, result.compiled.plan
    p, m, v = plan.pp, plan.n_micro, plan.virtual_stages
    now = bubble_fraction(p, m, v)
    ideas = []
    more = 4 * m
    ideas.append(f"raise micro-batches per step from {m} to {more} (training.global_batch "
                 f"{plan.global_batch} → {plan.global_batch * 4}) for an ideal bubble of "
                 f"{bubble_fraction(p, more, v):.0%}")
    if plan.micro_batch > 1:
        ideas.append(f"or keep the batch and lower training.micro_batch from {plan.micro_batch} to 1 "
                     f"({m * plan.micro_batch} micro-batches, ideal bubble "
                     f"{bubble_fraction(p, m * plan.micro_batch, v):.0%})")
    layers_per_stage = sc.model.layers // p
    if plan.schedule in (Schedule.ONE_F_ONE_B, Schedule.GPIPE) and layers_per_stage >= 2 and m % p == 0:
        ideas.append(f"or interleave with v=2 (parallel.schedule: interleaved, virtual_stages: 2; "
                     f"ideal bubble {bubble_fraction(p, m, 2):.0%})")
    elif plan.schedule == Schedule.INTERLEAVED and layers_per_stage >= 2 * v and m % p == 0:
        ideas.append(f"or more chunks per device (virtual_stages {v} → {2 * v}; ideal bubble "
                     f"{bubble_fraction(p, m, 2 * v):.0%})")
    if plan.schedule != Schedule.ZERO_BUBBLE:
        ideas.append("or a zero-bubble schedule (parallel.schedule: zero-bubble)")
    if p > 2:
        ideas.append(f"or fewer stages (pp {p} → {p // 2}) if memory allows")
    step = result.summary["step_time_s"]
    excess = (part_seconds / step - now) if step > 0 else 0.0
    uneven = (f"; the {excess:.0%} beyond the ideal is uneven stages (embedding and logits on the first "
              f"and last stage) and waits on other stages' communication" if excess > _UNEVEN_FRAC else "")
    return (f"pipeline bubble is {share} of the step (pp={p}, {m} micro-batches, {plan.schedule.value}"
            f"{f', v={v}' if v > 1 else ''}: the ideal bubble is {now:.0%}{uneven}): " + ", ".join(ideas) + ".")


def _comm_advice(part: PathPart, result, share: str) -> str:
    sc, plan = result.compiled.scenario, result.compiled.plan
    cluster = sc.cluster
    where = TIER_WORDS.get(part.tier, part.tier)
    util = (f" at {part.link_utilization_frac:.0%} utilization"
            if part.link_utilization_frac is not None else "")
    head = (f"{_KIND_WORDS.get(part.kind, part.kind + ' communication')} is exposed for "
            f"{units.fmt_time(part.seconds, 3)} ({share} of the step) on the {where}{util}")
    latency_bound = part.seconds > 0 and part.latency_s / part.seconds >= _LATENCY_BOUND_FRAC
    on_network = part.tier in ("network", "nic", "ici")
    if part.kind == "copy":
        return (f"{head}: keep more in device memory, or a faster host link (cluster.accelerator."
                f"host_bandwidth, now {units.fmt_rate(cluster.accelerator.host_bandwidth)}).")
    faster = (f"a faster network (cluster.inter_node.nic_bandwidth, now "
              f"{units.fmt_rate(cluster.inter_node.nic_bandwidth * units.BITS_PER_BYTE).replace('B/s', 'b/s')})"
              if on_network and cluster.inter_node is not None else
              f"faster intra-node links (cluster.intra_node.bandwidth, now "
              f"{units.fmt_rate(cluster.intra_node.bandwidth)})")
    ideas: list[str] = []
    if latency_bound:
        ideas.append(f"it is mostly fixed latency ({units.fmt_time(part.latency_s, 3)}): fewer, larger messages")
    if part.kind == "dp":
        compute_s = result.summary["breakdown"].get("compute", 0.0)
        if part.seconds > compute_s:
            ideas.append(f"it is longer than all the compute it could hide behind "
                         f"({units.fmt_time(compute_s, 3)} on the busiest device), so no overlap can hide it; "
                         f"fewer data-parallel ranks across nodes or a larger batch per rank")
        else:
            if not sc.parallel.overlap_grad_reduce:
                sw = result.compiled.software
                who = (f"; {sw.framework.value} reduces after the backward, so this needs a stack that overlaps it"
                       if sw is not None and sw.framework.value != "custom" and
                       "scenario" not in sw.sources.get("overlap_grad_reduce", "") else "")
                ideas.append(f"overlap the reduction with the backward (parallel.overlap_grad_reduce: true{who})")
            else:
                ideas.append(f"larger buckets overlap it better (parallel.dp_bucket, now "
                             f"{units.fmt_bytes(sc.parallel.dp_bucket, binary=False, precision=3)})")
        if plan.zero_stage == 3 and plan.pp == 1:
            ideas.append("ZeRO-3 gathers parameters every micro-batch: zero_stage 1 or 2 if memory allows")
        ideas.append(f"{faster} shortens it")
    elif part.kind == "tp":
        if on_network:
            ideas.append(f"tp={plan.tp} spans nodes: keep tp within a node (tp ≤ {cluster.devices_per_node})")
        if not plan.sequence_parallel and plan.tp > 1:
            ideas.append("enable sequence parallelism (parallel.sequence_parallel: true)")
        if plan.tp > 2:
            ideas.append(f"a smaller tp (now {plan.tp}) with more pp or dp")
        ideas.append(faster)
    elif part.kind == "cp":
        ideas += [f"keep cp within a node (cp={plan.cp})",
                  "longer sequences per rank so that the ring overlaps attention", faster]
    elif part.kind == "ep":
        ideas += [f"keep the all-to-all within a node (ep={plan.ep}, {cluster.devices_per_node} devices "
                  f"per node)", "fewer experts per token (model.moe.top_k)", faster]
    elif part.kind == "pp":
        ideas += [f"fewer, larger sends (training.micro_batch, now {plan.micro_batch})", faster]
    else:
        ideas.append(faster)
    said = "; ".join(ideas[:-1]) + ("; or " if len(ideas) > 1 else "") + ideas[-1]
    return f"{head}: {said}."


def advice(part: PathPart, result) -> str:
    """One paragraph: what the part is, its share of the step, and what would move it."""
    sc, plan, summary = result.compiled.scenario, result.compiled.plan, result.summary
    step = summary["step_time_s"]
    share = _pct(part.seconds, step)
    acc = sc.cluster.accelerator
    took = f"{units.fmt_time(part.seconds, 3)} ({share} of the step)"
    if part.cause is Cause.BUBBLE:
        return _bubble_advice(result, part.seconds, share)
    if part.cause is Cause.COMM:
        return _comm_advice(part, result, share)
    if part.cause is Cause.COMPUTE:
        fp8 = "" if plan.fp8 else f" or fp8 (training.precision, now {plan.precision.value})"
        return (f"compute-bound kernels take {took} of the critical path at {summary['mfu']:.0%} MFU: "
                f"this is compute-bound; a faster accelerator (now {acc.name}){fp8} moves it.")
    if part.cause is Cause.MEMORY_BOUND:
        return (f"memory-bound kernels (norms, activations, softmax, elementwise) take {took}: fused kernels "
                f"or more HBM bandwidth (now {units.fmt_rate(acc.hbm_bandwidth)}) move it.")
    if part.cause is Cause.OVERHEAD:
        return (f"small kernels take {took}, several times their roofline time (launch cost and low "
                f"efficiency dominate): larger micro-batches (training.micro_batch, now {plan.micro_batch}), "
                f"less model parallelism, or fused kernels / CUDA graphs amortize it.")
    if part.cause is Cause.RECOMPUTE:
        peak, cap = summary["peak_memory_bytes"], summary["memory_capacity_bytes"]
        lighter = "selective" if plan.recompute == Recompute.FULL else "none"
        return (f"activation recompute ({plan.recompute.value}) re-runs forward work for {took}: "
                f"parallel.recompute: {lighter} removes most of it if memory allows (peak "
                f"{units.fmt_bytes(peak, precision=3)} of {units.fmt_bytes(cap, precision=3)}).")
    if part.cause is Cause.HOST:
        return _host_advice(result, took)
    if part.cause is Cause.OPTIMIZER:
        shard = ("" if plan.zero_stage >= 1 or plan.dp == 1 else
                 f"; a distributed optimizer (parallel.zero_stage: 1) shards it over the dp={plan.dp} ranks")
        return f"the optimizer step takes {took}: it is memory-bound{shard}."
    return (f"nothing on the critical path runs for {took} (idle): look at the timeline for what the "
            f"devices wait on.")


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
                    pictures: tuple[str, ...] = ()) -> str:
    """report.md: summary, the ranked bottleneck account (adds up to the step time), the
    account in words, and the busiest device's breakdown."""
    account = account or bottleneck_account(result)
    summary = result.summary
    step = summary["step_time_s"]
    lines = [f"# {summary['name']}: where the time goes", "", "## Summary", "",
             "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in _summary_rows(summary)]
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
    lines += [f"{i}. {advice(part, result)}" for i, part in enumerate(_words_parts(account, step), 1)]
    lines += ["", f"## Time on the busiest device (device {summary['breakdown_device']})", "",
              "Every instant of that device's step, by what it was doing (compute first, then "
              "exposed communication, then waiting).", "", "| part | time | share |", "| --- | --- | --- |"]
    for key, seconds in sorted(summary["breakdown"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {key} | {units.fmt_time(seconds)} | {_pct(seconds, step)} |")
    lines += _software_lines(summary)
    if pictures:
        lines += ["", "## Pictures", ""] + [f"![{name}]({name})" for name in pictures]
    return "\n".join(lines) + "\n"


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


def report_text(result, account: PathAccount | None = None) -> str:
    """The account for a terminal: a few summary lines and the ranked causes in words."""
    account = account or bottleneck_account(result)
    summary = result.summary
    step = summary["step_time_s"]
    lines = [f"{summary['name']}: step {units.fmt_time(step)}, {summary['tokens_per_s']:,.0f} tokens/s, "
             f"MFU {summary['mfu']:.1%}, peak memory {units.fmt_bytes(summary['peak_memory_bytes'])} of "
             f"{units.fmt_bytes(summary['memory_capacity_bytes'])}"
             f"{'' if summary['fits_in_memory'] else ' (DOES NOT FIT)'}",
             "What limits the step (critical path, largest first):"]
    for i, part in enumerate(_words_parts(account, step), 1):
        lines.append(f"  {i}. [{_pct(part.seconds, step):>6}] {advice(part, result)}")
    rest = [p for p in _ranked(account) if p not in _words_parts(account, step)]
    if rest:
        lines.append("  (below 1% each: " + ", ".join(f"{p.key} {_pct(p.seconds, step)}" for p in rest) + ")")
    return "\n".join(lines)


def _host_advice(result, took: str) -> str:
    """Host-bound time: what the host does, and the software change that removes it, simulated
    (a what-if of the same step) so that the printed effect is hwsim's own prediction."""
    sw = result.compiled.software
    if sw is None:
        return f"the host thread holds the critical path for {took}."
    mode = sw.host_mode.value
    head = f"the GPU waits for its host thread ({sw.framework.value}, {mode} dispatch) for {took}"
    if mode == "graphs":
        return f"{head}: fewer host synchronisations per step would shorten it."
    setting = "cuda_graphs"   # one launch per captured layer graph removes per-op dispatch
    step = result.summary["step_time_s"]
    what_if = _simulate_software_what_if(result, setting)
    effect = (f"hwsim predicts {units.fmt_time(what_if)} per step with it ({(what_if - step) / step:+.0%})"
              if what_if is not None else "it could not be simulated")
    return (f"{head}: a stack that captures CUDA graphs (software.{setting}: true; {effect}) removes most of it "
            f"if your framework offers it ({sw.framework.value}'s profile sets cuda_graphs: {sw.cuda_graphs}); "
            f"larger micro-batches (training.micro_batch, now {result.compiled.plan.micro_batch}) give each launch "
            f"more GPU work.")


def _simulate_software_what_if(result, setting: str) -> float | None:
    """Step time with software.<setting>: true, simulated once per result (the terminal report
    and report.md both print this advice)."""
    cache = getattr(result, "what_ifs", None)
    if cache is not None and setting in cache:
        return cache[setting]
    step_s = _run_software_what_if(result, setting)
    if cache is not None:
        cache[setting] = step_s
    return step_s


def _run_software_what_if(result, setting: str) -> float | None:
    from hwsim.errors import HwsimError
    from hwsim.simulate import run_step   # a what-if of the same step (late import: simulate uses this module)

    sc = result.compiled.scenario
    software = (sc.software.model_copy(update={setting: True}) if sc.software is not None else None)
    if software is None:
        return None
    try:
        return run_step(sc.model_copy(update={"software": software}), fold=result.compiled.folded,
                        granularity=result.compiled.granularity).summary["step_time_s"]
    except HwsimError:
        return None
