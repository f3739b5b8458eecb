"""Suggestions that are promises: each change the advice names is simulated before it is printed.

A `Suggestion` is a set of field overrides, written exactly as `hwsim run --set` takes them,
and a few words on what it does. `simulate_suggestions` runs each one as a what-if of the same
step (same fold and granularity as the step it advises on), so the printed step time and peak
memory equal those of `hwsim run SCENARIO --set ...`. `worthwhile` keeps only the changes the
device, plan and named framework version support (the what-if resolves, and the version's
plan space offers it), that fit in memory, and that are faster.

What stays fixed: the cluster's device count always, and the tokens per step (global batch
× sequence length) unless the caller allows a batch change: the global batch is a
convergence choice, not a free knob.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shlex
from dataclasses import dataclass, replace
from typing import Any

from hwsim import units
from hwsim.analysis.critical_path import Cause, PathPart
from hwsim.config.schema import Recompute, Schedule

__all__ = ["Suggestion", "Outcome", "candidates", "simulate_suggestions", "worthwhile", "outcome_words",
           "FASTER_ACCELERATOR", "MIN_GAIN_FRAC"]

# A change is printed only if it shortens the step by at least this much (below it, the
# prediction is within the model's own noise and the change is not worth a user's trial).
MIN_GAIN_FRAC = 0.01
# The next generation of the same vendor's training accelerator, among hwsim's presets (a
# what-if of the same cluster with other devices; its links and node stay as they are).
FASTER_ACCELERATOR = {
    "v100-sxm-32gb": "a100-sxm-80gb", "a100-sxm-40gb": "a100-sxm-80gb", "a100-sxm-80gb": "h100-sxm",
    "h100-pcie": "h100-sxm", "h100-sxm": "b200", "h200": "b200", "l40s": "h100-sxm", "mi300x": "mi325x",
    "tpu-v4": "tpu-v5p",
}
_MAX_PER_PART = 3


@dataclass(frozen=True)
class Suggestion:
    words: str                        # what the change does, in a few words
    overrides: tuple[str, ...]        # as `hwsim run --set` takes them

    @property
    def flags(self) -> str:
        return " ".join(f"--set {shlex.quote(o)}" for o in self.overrides)


@dataclass(frozen=True)
class Outcome:
    suggestion: Suggestion
    step_time_s: float | None = None
    peak_memory_bytes: float | None = None
    fits: bool = False
    rejected: str = ""               # why the what-if could not run (the plan error), else ""
    capacity_bytes: float | None = None   # the what-if's device memory (the device may change)
    global_batch: int | None = None       # the what-if's samples per step (changes only if allowed)
    peak_at_least: bool = False           # stopped at its first overflow: peak_memory_bytes is a lower bound
    not_offered: bool = False             # valid, but the named framework version cannot run it

    def time_per_sample_s(self) -> float | None:
        """Step time per sample: what a batch change is judged by (a larger batch takes a
        longer step, and is faster only if each sample costs less)."""
        return None if self.step_time_s is None or not self.global_batch else self.step_time_s / self.global_batch


def candidates(part: PathPart, result, allow_batch_change: bool = False) -> list[Suggestion]:
    """The changes that could shorten `part`, for this device and plan (not yet simulated)."""
    sc, plan = result.compiled.scenario, result.compiled.plan
    acc, cluster, train = sc.cluster.accelerator, sc.cluster, sc.training
    out: list[Suggestion] = []
    add = lambda words, *ov: out.append(Suggestion(words, tuple(ov)))  # noqa: E731
    dp_set = result.scenario.parallel.dp is not None   # an explicit dp must follow pp/tp changes
    faster = None if cluster.groups else FASTER_ACCELERATOR.get(acc.name)   # mixed: the groups name the devices
    if part.cause is Cause.COMPUTE:
        if not plan.fp8 and acc.peak.fp8:
            add("fp8 matrix multiplies", "training.precision=fp8")
        if faster:
            add(f"the same cluster with {faster} devices", f"cluster.accelerator={faster}")
    elif part.cause is Cause.RECOMPUTE:
        if plan.recompute == Recompute.FULL:
            add("recompute only attention", "parallel.recompute=selective")
        add("no recompute", "parallel.recompute=none")
        if plan.zero_stage < 1 and plan.dp > 1:
            add("no recompute, optimizer state sharded over dp", "parallel.recompute=none", "parallel.zero_stage=1")
    elif part.cause is Cause.BUBBLE:
        _bubble_candidates(add, sc, plan, dp_set, allow_batch_change)
    elif part.cause is Cause.COMM:
        _comm_candidates(add, part, sc, plan, dp_set)
    elif part.cause is Cause.OVERHEAD or part.cause is Cause.HOST:
        sw = result.compiled.software   # a version that cannot capture graphs is refused in _what_if
        if result.scenario.software is not None and sw is not None and not sw.cuda_graphs:
            add("CUDA graphs (one launch per captured layer)", "software.cuda_graphs=true")
        mb = 2 * plan.micro_batch
        if train.global_batch % (mb * plan.dp) == 0 and (train.global_batch // (mb * plan.dp)) >= plan.pp:
            add("twice the work per kernel launch, same batch", f"training.micro_batch={mb}")
    elif part.cause is Cause.MEMORY_BOUND:
        if faster:
            add(f"the same cluster with {faster} devices (more HBM bandwidth)", f"cluster.accelerator={faster}")
    elif part.cause is Cause.OPTIMIZER:
        if plan.zero_stage == 0 and plan.dp > 1:
            add(f"a distributed optimizer (sharded over dp={plan.dp})", "parallel.zero_stage=1")
    return out


def _bubble_candidates(add, sc, plan, dp_set: bool, allow_batch_change: bool) -> None:
    p, m, v = plan.pp, plan.n_micro, plan.virtual_stages
    if plan.micro_batch > 1:
        add("more, smaller micro-batches (same batch)", "training.micro_batch=1")
    layers_per_stage = sc.model.layers // p
    if plan.schedule in (Schedule.ONE_F_ONE_B, Schedule.GPIPE) and layers_per_stage >= 2 and m % p == 0:
        add("interleaved 1F1B, 2 chunks per device", "parallel.schedule=interleaved", "parallel.virtual_stages=2")
    elif plan.schedule == Schedule.INTERLEAVED and layers_per_stage >= 2 * v and m % p == 0:
        add(f"{2 * v} chunks per device", f"parallel.virtual_stages={2 * v}")
    if plan.schedule != Schedule.ZERO_BUBBLE:
        add("a zero-bubble schedule", "parallel.schedule=zero-bubble", "parallel.virtual_stages=1")
    if p >= 2:
        pp_over = (f"parallel.pp={p // 2}",) + ((f"parallel.dp={plan.dp * 2}",) if dp_set else ())
        vv = (("parallel.virtual_stages=1", "parallel.schedule=1f1b") if p // 2 == 1 else ())
        add("half the pipeline stages, twice the data-parallel ranks", *pp_over, *vv)
    if allow_batch_change:
        add("four times the global batch (a different training run: more tokens per step)",
            f"training.global_batch={plan.global_batch * 4}")


def _comm_candidates(add, part: PathPart, sc, plan, dp_set: bool) -> None:
    cluster = sc.cluster
    on_network = part.tier in ("network", "nic", "ici")
    if on_network and cluster.inter_node is not None:
        nic = cluster.inter_node.nic_bandwidth * units.BITS_PER_BYTE
        faster_link = ("twice the NIC bandwidth", f"cluster.inter_node.nic_bandwidth={_gbit(2 * nic)}")
    else:
        faster_link = ("twice the intra-node bandwidth",
                       f"cluster.intra_node.bandwidth={_gbyte(2 * cluster.intra_node.bandwidth)}")
    if part.kind == "dp":
        if not sc.parallel.overlap_grad_reduce:
            add("overlap the gradient reduction with the backward", "parallel.overlap_grad_reduce=true")
        else:
            add("4x larger gradient buckets", f"parallel.dp_bucket={int(4 * sc.parallel.dp_bucket)}")
        if plan.zero_stage == 3:
            add("ZeRO-1 (no parameter gathers per micro-batch)", "parallel.zero_stage=1")
    elif part.kind == "tp":
        if not plan.sequence_parallel and plan.tp > 1:
            add("sequence parallelism", "parallel.sequence_parallel=true")
        if plan.tp > 1:
            t = plan.tp // 2
            over = (f"parallel.tp={t}", f"parallel.pp={plan.pp * 2}")
            if sc.model.layers % (plan.pp * 2 * plan.virtual_stages) == 0:
                add("half the tensor-parallel size, twice the pipeline stages", *over)
            add("half the tensor-parallel size, twice the data-parallel ranks", f"parallel.tp={t}",
                *((f"parallel.dp={plan.dp * 2}",) if dp_set else ()))
    if on_network and cluster.shared is not None and cluster.shared.placement.value != "packed":
        add("this job packed on the fewest leaves", "cluster.shared.placement=packed")
    add(*faster_link)


def _gbit(bits_per_s: float) -> str:
    return f"{bits_per_s / 1e9:g} Gb/s"


def _gbyte(bytes_per_s: float) -> str:
    return f"{bytes_per_s / 1e9:g} GB/s"


def simulate_suggestions(result, suggestions: list[Suggestion]) -> list[Outcome]:
    """Each suggestion as a what-if of the same step, simulated once per result (cached on
    result.what_ifs); several at once run in worker processes, one per core."""
    cache: dict[tuple[str, ...], Outcome] = result.what_ifs
    todo = list(dict.fromkeys(s.overrides for s in suggestions if s.overrides not in cache))
    if todo:
        base = result.scenario.model_dump(mode="json", exclude_unset=True)   # what the user wrote: a framework profile still fills the rest
        already = _not_offered(result.scenario)[1]   # what the user chose: a what-if does not answer for it
        jobs = [(base, ov, result.compiled.folded, result.compiled.granularity.value, already) for ov in todo]
        workers = min(len(jobs), os.cpu_count() or 1)
        if workers > 1 and "fork" in mp.get_all_start_methods():
            with mp.get_context("fork").Pool(workers) as pool:
                found = pool.map(_what_if, jobs, chunksize=1)
        else:
            found = [_what_if(job) for job in jobs]
        cache.update(zip(todo, found))
    return [replace(cache[s.overrides], suggestion=s) for s in suggestions]


def _what_if(job: tuple[dict[str, Any], tuple[str, ...], bool, str, tuple[str, ...]]) -> Outcome:
    """One what-if: the scenario with the overrides, as `hwsim run --set` would load it. It is
    refused when the framework version named does not offer something the overrides add; what
    the base scenario already asks for that the framework lacks (`already`) is the user's choice."""
    from hwsim.config.loader import scenario_from_mapping
    from hwsim.engine.memory import OutOfMemoryStop
    from hwsim.errors import HwsimError
    from hwsim.simulate import run_step   # late import: simulate imports the analysis package

    base, overrides, fold, granularity, already = job
    placeholder = Suggestion("", overrides)
    try:
        sc = scenario_from_mapping(base, overrides, origin="what-if")
        framework, missing = _not_offered(sc)
        added = [m for m in missing if m not in already]
        if added:   # the framework version named cannot run it: not a change the user can make
            return Outcome(placeholder, rejected=f"{framework} does not offer {', '.join(added)}", not_offered=True)
        # a change that does not fit is never printed: stop at its first overflow (the level then
        # is a lower bound of its peak)
        r = run_step(sc, fold=fold, granularity=granularity, stop_at_oom=True)
    except HwsimError as exc:
        return Outcome(placeholder, rejected=str(exc))
    except OutOfMemoryStop as stop:
        return Outcome(placeholder, None, stop.finding.level_bytes, False, capacity_bytes=stop.finding.capacity_bytes,
                       global_batch=sc.training.global_batch, peak_at_least=True)
    s = r.summary
    return Outcome(placeholder, s["step_time_s"], s["peak_memory_bytes"], bool(s["fits_in_memory"]),
                   capacity_bytes=s["memory_capacity_bytes"], global_batch=sc.training.global_batch)


def _per_sample(result) -> float:
    return result.summary["step_time_s"] / result.compiled.plan.global_batch


def _gain(result, o: Outcome) -> float:
    """The what-if's time per sample relative to the step's (−0.2: 20% less time per sample;
    with the batch unchanged, the same as the step time's change)."""
    return o.time_per_sample_s() / _per_sample(result) - 1


def _not_offered(sc) -> tuple[str, tuple[str, ...]]:
    """(framework, what of `sc` the framework version it names does not offer); ('', ()) when
    none is named or its plan space is unknown."""
    from hwsim.software.profiles import effective_scenario, resolve_software
    from hwsim.workload.plan import resolve_plan

    sw = resolve_software(sc)
    if sw is None or sw.plan_space is None:
        return "", ()
    missing = sw.plan_violations(resolve_plan(effective_scenario(sc, sw))) + sw.plan_space.software_violations(sw)
    return sw.framework.value, tuple(missing)


def worthwhile(result, outcomes: list[Outcome]) -> tuple[list[Outcome], list[Outcome]]:
    """(changes to print: they run, fit and take less time per sample, best first; the others)."""
    good = [o for o in outcomes if not o.rejected and o.fits and o.time_per_sample_s() is not None
            and _gain(result, o) < -MIN_GAIN_FRAC]
    good.sort(key=lambda o: _gain(result, o))
    return good[:_MAX_PER_PART], [o for o in outcomes if o not in good[:_MAX_PER_PART]]


def outcome_words(result, o: Outcome) -> str:
    """`--set a=b` (what it does): the simulated step time, its change and the peak memory."""
    step = result.summary["step_time_s"]
    cap = o.capacity_bytes or result.summary["memory_capacity_bytes"]
    if o.global_batch == result.compiled.plan.global_batch:
        change = f"{(o.step_time_s - step) / step:+.0%}"
    else:
        change = f"{o.global_batch} samples per step, {_gain(result, o):+.0%} time per sample"
    return (f"{o.suggestion.words} ({o.suggestion.flags}): simulated {units.fmt_time(o.step_time_s)} per step "
            f"({change}), peak {units.fmt_bytes(o.peak_memory_bytes, precision=3)} of "
            f"{units.fmt_bytes(cap, precision=3)}")


def rejected_words(result, others: list[Outcome]) -> str:
    """Why the other simulated changes are not suggested (one short clause each)."""
    words = []
    for o in others:
        flags = " ".join(o.suggestion.overrides)
        if o.not_offered:
            words.append(f"{flags}: {o.rejected}")
        elif o.rejected:
            words.append(f"{flags} is not a valid plan here")
        elif not o.fits:
            at_least = "≥ " if o.peak_at_least else ""
            words.append(f"{flags} does not fit ({at_least}{units.fmt_bytes(o.peak_memory_bytes, precision=3)})")
        elif o.time_per_sample_s() is not None and _gain(result, o) >= -MIN_GAIN_FRAC:
            words.append(f"{flags} is not faster ({units.fmt_time(o.step_time_s)})")
    return "; ".join(words)
