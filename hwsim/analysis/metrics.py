"""The step's summary: step time, throughput, FLOP rates, MFU/HFU, memory, breakdown, and
time-to-train / cost / energy when the scenario gives a token budget. Pure: reads a compiled
step and its trace."""

from __future__ import annotations

from typing import Any

from hwsim.config.schema import Dtype
from hwsim.engine.task import Stream, TaskKind
from hwsim.engine.trace import Trace
from hwsim.hardware.kernels import KernelModel
from hwsim.analysis.breakdown import step_breakdown
from hwsim.units import TFLOP

SECONDS_PER_HOUR = 3600.0
SECONDS_PER_DAY = 86400.0
JOULES_PER_MWH = 3.6e9


def summarize(compiled, trace: Trace, kernels: KernelModel) -> dict[str, Any]:
    sc, plan = compiled.scenario, compiled.plan
    step = trace.makespan_s
    n = plan.n_devices
    tokens = plan.global_batch * sc.model.seq_len
    peak_dtype = Dtype.FP8 if plan.fp8 else plan.precision
    peak = kernels.peak_flop_per_s(peak_dtype)
    hw_flop = 0.0
    for t in compiled.graph.tasks:
        if t.kind == TaskKind.COMPUTE:
            hw_flop += t.flop * compiled.stands_for[t.devices[0]]
    model_flop = compiled.model_flop
    peak_by_device = trace.peak_memory_bytes()
    peaks = [peak_by_device[d] for d in compiled.simulated]
    capacity = sc.cluster.accelerator.hbm
    device, breakdown, compute_by_category = step_breakdown(trace, compiled.simulated, plan.pp > 1)
    summary: dict[str, Any] = {
        "name": sc.name,
        "step_time_s": step,
        "tokens_per_step": tokens,
        "tokens_per_s": tokens / step,
        "tokens_per_s_per_device": tokens / step / n,
        "tflops_per_device": model_flop / step / n / TFLOP,
        "hardware_tflops_per_device": hw_flop / step / n / TFLOP,
        "mfu": model_flop / step / n / peak,
        "hfu": hw_flop / step / n / peak,
        "peak_flop_per_s": peak,
        "model_flop_per_step": model_flop,
        "peak_memory_bytes": max(peaks),
        "memory_capacity_bytes": capacity,
        "fits_in_memory": max(peaks) <= capacity,
        "oom_findings": [{"device": f.device, "time_s": f.time_s, "level_bytes": f.level_bytes,
                          "capacity_bytes": f.capacity_bytes, "task": f.task_name} for f in trace.oom_findings],
        "devices": n,
        "simulated_devices": len(compiled.simulated),
        "folded": compiled.folded,
        "granularity": compiled.granularity.value,
        "n_tasks": len(compiled.graph.tasks),
        "micro_batches": plan.n_micro,
        "breakdown_device": device,
        "breakdown": breakdown,
        "compute_by_category_s": compute_by_category,
        "software": compiled.software.settings() if compiled.software is not None else None,
        "software_sources": dict(compiled.software.sources) if compiled.software is not None else None,
        "host_busy_s": _host_busy_s(trace, device),
        "software_plan_violations": (compiled.software.plan_violations(plan) if compiled.software is not None
                                     else []),
        "plan": {"tp": plan.tp, "pp": plan.pp, "dp": plan.dp, "cp": plan.cp, "ep": plan.ep,
                 "virtual_stages": plan.virtual_stages, "schedule": plan.schedule.value,
                 "zero_stage": plan.zero_stage, "recompute": plan.recompute.value,
                 "sequence_parallel": plan.sequence_parallel},
    }
    acc = sc.cluster.accelerator
    if sc.training.tokens:
        steps = sc.training.tokens / tokens
        seconds = steps * step
        device_hours = seconds * n / SECONDS_PER_HOUR
        summary["time_to_train"] = {
            "tokens": sc.training.tokens, "steps": steps, "days": seconds / SECONDS_PER_DAY,
            "device_hours": device_hours, "cost_usd": device_hours * acc.price_per_hour,
            "energy_mwh": (acc.power_limit or acc.tdp) * n * seconds / JOULES_PER_MWH,
            "energy_note": "devices at their power limit (TDP if none) for the whole run (an upper bound; no "
                           "host, network or cooling)",
        }
    return summary


def _host_busy_s(trace: Trace, device: int) -> float:
    """Seconds the device's host thread spent dispatching and syncing (0 for an ideal host)."""
    iv = trace.stream_intervals().get((device, Stream.HOST))
    return float((iv[1] - iv[0]).sum()) if iv is not None else 0.0
