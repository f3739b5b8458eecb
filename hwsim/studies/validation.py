"""Validation against published training runs (SCENARIO_FORMAT.md, "Validation records").

Every record's scenario is simulated with the same hardware model; the predicted step time
is compared with the published one. Nothing here is fitted to the records.
"""

from __future__ import annotations

import statistics
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hwsim.config.loader import read_yaml, scenario_from_mapping
from hwsim.errors import ConfigError, HwsimError


@dataclass(frozen=True)
class RecordResult:
    id: str
    tags: tuple[str, ...]
    published_step_time_s: float | None
    predicted_step_time_s: float | None = None
    error: float | None = None            # (predicted - published) / published
    reason: str | None = None             # why it could not be simulated
    summary: dict[str, Any] = field(default_factory=dict, compare=False)
    published_peak_memory_bytes: float | None = None


def load_records(path: str | Path) -> list[dict[str, Any]]:
    data = read_yaml(path)
    if not isinstance(data, list):
        raise ConfigError(f"{path}: a validation file is a YAML list of records (id, source, scenario, "
                          f"published); got {type(data).__name__}")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict) or "id" not in rec or "scenario" not in rec:
            raise ConfigError(f"{path}: record {i} needs at least `id` and `scenario` keys")
    return data


def simulate_record(record: dict[str, Any], overrides: tuple[str, ...] = ()) -> RecordResult:
    from hwsim.simulate import run_step  # late import: worker processes

    published = (record.get("published") or {})
    pub_step = published.get("step_time_s")
    base = dict(id=str(record["id"]), tags=tuple(record.get("tags") or ()), published_step_time_s=pub_step,
                published_peak_memory_bytes=published.get("peak_memory_bytes"))
    try:
        scenario = scenario_from_mapping(record["scenario"], overrides, origin=f"record {record['id']}")
        result = run_step(scenario)
    except HwsimError as exc:
        return RecordResult(**base, reason=str(exc))
    predicted = result.summary["step_time_s"]
    err = (predicted - pub_step) / pub_step if pub_step else None
    keep = {k: result.summary[k] for k in ("step_time_s", "mfu", "hfu", "peak_memory_bytes", "breakdown",
                                            "fits_in_memory", "n_tasks", "granularity")}
    return RecordResult(**base, predicted_step_time_s=predicted, error=err, summary=keep)


def run_validation(records: list[dict[str, Any]], workers: int = 1,
                   progress: Callable[[RecordResult], None] | None = None,
                   overrides: tuple[str, ...] = ()) -> list[RecordResult]:
    """Simulate every record (with `overrides` applied to each: a what-if over the whole set)."""
    out: list[RecordResult] = []
    if workers <= 1:
        for rec in records:
            r = simulate_record(rec, overrides)
            out.append(r)
            if progress:
                progress(r)
        return out
    # the longest records first (devices x micro-batches is a good proxy), so that no worker
    # starts a long one at the end; results come back in the file's order
    order = sorted(range(len(records)), key=lambda i: -_cost_proxy(records[i]))
    results: dict[int, RecordResult] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(simulate_record, records[i], overrides): i for i in order}
        for future in as_completed(futures):
            r = future.result()
            results[futures[future]] = r
            if progress:
                progress(r)
    return [results[i] for i in range(len(records))]


def _cost_proxy(record: dict[str, Any]) -> float:
    try:
        sc = record["scenario"]
        layers = float(sc["model"]["layers"]) if isinstance(sc["model"], dict) else 100.0
        batch = float(sc["training"]["global_batch"]) / float(sc["training"].get("micro_batch", 1))
        return layers * batch * float(sc["parallel"].get("pp", 1))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return 0.0


def error_stats(errors: list[float]) -> dict[str, float]:
    if not errors:
        return {"n": 0}
    abs_e = sorted(abs(e) for e in errors)
    p90 = abs_e[min(len(abs_e) - 1, int(round(0.9 * (len(abs_e) - 1))))]
    return {"n": len(errors), "mape": statistics.fmean(abs_e), "median_ape": statistics.median(abs_e),
            "p90_ape": p90, "mean_signed_error": statistics.fmean(errors)}


def validation_report(results: list[RecordResult]) -> dict[str, Any]:
    simulated = [r for r in results if r.error is not None]
    tags = sorted({t for r in results for t in r.tags})
    per_tag = {}
    for t in tags:
        errs = [r.error for r in simulated if t in r.tags]
        n_all = sum(1 for r in results if t in r.tags)
        per_tag[t] = {**error_stats(errs), "records": n_all}
    overall = error_stats([r.error for r in simulated])
    memory = [(r.id, r.summary.get("peak_memory_bytes"), r.published_peak_memory_bytes) for r in simulated
              if r.published_peak_memory_bytes]
    return {
        "mape": overall.get("mape"),
        "overall": overall,
        "simulated": len(simulated),
        "total": len(results),
        "per_tag": per_tag,
        "records": [{"id": r.id, "predicted_step_time_s": r.predicted_step_time_s,
                     "published_step_time_s": r.published_step_time_s, "error": r.error,
                     "tags": list(r.tags), "mfu": r.summary.get("mfu"),
                     "breakdown": r.summary.get("breakdown")} for r in simulated],
        "unsupported": [{"id": r.id, "reason": r.reason} for r in results if r.error is None],
        "peak_memory": [{"id": i, "predicted_bytes": p, "published_bytes": q, "error": (p - q) / q}
                        for i, p, q in memory],
    }
