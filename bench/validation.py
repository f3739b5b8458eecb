"""Accuracy against published training runs, per framework, and what each software mechanism
changes (mechanism off vs on). A benchmark, not a pass/fail test: it prints the tables the
README quotes.

    python bench/validation.py                 # both shipped files (hwsim validate --builtin public, vtrain), all ablations
    python bench/validation.py --no-ablations  # the accuracy tables only
    python bench/validation.py --json out.json

Each ablation applies one `--set` override to every record (a what-if over the whole file) and
reports the MAPE and mean signed error with the mechanism switched off, beside the full model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hwsim.studies.validation import load_records, run_validation  # noqa: E402

from hwsim.data import builtin_validation_file  # noqa: E402

FILES = {"published_runs.yaml": "public", "vtrain_single.yaml": "vtrain"}   # the copies of ../shared/validation
SOURCE_TAGS = ("dgxc-benchmarking-25.02", "megatron-readme-2020", "narayanan-sc21", "llm-foundry", "torchtitan",
               "megatron-bridge-perf", "nemo-long-sequence", "vtrain")

# mechanism -> the override that switches it off (hwsim's default stack for that mechanism)
ABLATIONS = {
    "whole software stack (hwsim default stack)": ["software.framework=custom"],
    "host thread (dispatch, launches, syncs)": ["simulation.host_model=false"],
    "attention kernel of the framework": ["training.attention=flash"],
    "power limit": ["cluster.accelerator.power_limit=null"],
    "loss implementation": ["software.loss=fused-vocab-parallel"],
    "gradient reduce dtype": ["software.grad_reduce_dtype=fp32"],
    "fp8 recipe (amax passes)": ["software.fp8_recipe=delayed"],
    "FSDP2 copy-out": ["software.fsdp_version=1"],
}


def _stats(errors: list[float]) -> dict[str, float]:
    if not errors:
        return {"n": 0}
    a = sorted(abs(e) for e in errors)
    return {"n": len(errors), "mape": statistics.fmean(a), "median": statistics.median(a),
            "p90": a[min(len(a) - 1, int(round(0.9 * (len(a) - 1))))], "signed": statistics.fmean(errors)}


def evaluate(records: list[dict], overrides: tuple[str, ...], workers: int) -> dict:
    results = run_validation(records, workers=workers, overrides=overrides)
    framework = {r["id"]: ((r["scenario"].get("software") or {}).get("framework", "none")) for r in records}
    ok = [r for r in results if r.error is not None]
    groups: dict[str, list[float]] = {}
    for r in ok:
        groups.setdefault(f"framework {framework[r.id]}", []).append(r.error)
        for tag in SOURCE_TAGS:
            if tag in r.tags:
                groups.setdefault(f"source {tag}", []).append(r.error)
    memory = [((r.summary.get("peak_memory_bytes") or 0) - r.published_peak_memory_bytes)
              / r.published_peak_memory_bytes for r in ok if r.published_peak_memory_bytes]
    return {"overall": _stats([r.error for r in ok]), "coverage": len(ok) / max(len(results), 1),
            "groups": {k: _stats(v) for k, v in sorted(groups.items())},
            "peak_memory": _stats(memory),
            "unsupported": [(r.id, r.reason) for r in results if r.error is None]}


def _row(name: str, s: dict) -> str:
    if not s.get("n"):
        return f"| {name} | 0 | | | |"
    return f"| {name} | {s['n']} | {s['mape']:.1%} | {s['signed']:+.1%} | {s['p90']:.1%} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-ablations", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out = {}
    for name, builtin in FILES.items():
        path = builtin_validation_file(builtin)
        records = load_records(path)
        t0 = time.perf_counter()
        full = evaluate(records, (), args.workers)
        o = full["overall"]
        print(f"\n## {name}: {o['n']} of {len(records)} simulated (coverage {full['coverage']:.0%}), "
              f"MAPE {o['mape']:.1%}, median {o['median']:.1%}, p90 {o['p90']:.1%}, mean signed {o['signed']:+.1%} "
              f"({time.perf_counter() - t0:.0f} s)")
        if full["peak_memory"].get("n"):
            m = full["peak_memory"]
            print(f"peak memory vs published ({m['n']} records): MAPE {m['mape']:.1%}, signed {m['signed']:+.1%}, "
                  f"worst {m['p90']:.1%} (p90)")
        print("\n| group | records | MAPE | mean signed | p90 |\n|---|---|---|---|---|")
        for g, s in full["groups"].items():
            print(_row(g, s))
        for rid, why in full["unsupported"]:
            print(f"not simulated: {rid}: {why[:160]}")
        entry = {"full": full, "ablations": {}}
        if not args.no_ablations:
            print("\nMechanism off vs on (MAPE / mean signed error with the mechanism off; on: "
                  f"{o['mape']:.1%} / {o['signed']:+.1%})\n")
            print("| mechanism switched off | override | MAPE | mean signed | groups it moves most |\n|---|---|---|---|---|")
            for mech, ov in ABLATIONS.items():
                off = evaluate(records, tuple(ov), args.workers)
                moved = sorted(((abs(off["groups"][g]["mape"] - s["mape"]), g, off["groups"][g]["mape"], s["mape"])
                                for g, s in full["groups"].items() if g in off["groups"] and s.get("n")),
                               reverse=True)[:3]
                moved_txt = "; ".join(f"{g}: {a:.1%} off vs {b:.1%} on" for d, g, a, b in moved if d > 0.0005) or "none"
                oo = off["overall"]
                print(f"| {mech} | `{' '.join(ov)}` | {oo['mape']:.1%} | {oo['signed']:+.1%} | {moved_txt} |")
                entry["ablations"][mech] = off
        out[name] = entry
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
