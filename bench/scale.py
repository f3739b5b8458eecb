"""Scale benchmarks (issue: a 16,384-GPU step in seconds).

Prints wall time and peak memory of one simulated step for:
  - GPT-3 175B on 1024 A100 (TP8 PP8 DP16, GBS 1536), folded and unfolded;
  - Llama-3 405B on 16,384 H100 (TP8 PP16 DP128, GBS 2048, seq 8192), folded, and the same
    layout on 131,072 H100 (DP1024, GBS 16384);
  - a 100-configuration screening run (hwsim.studies.screen: closed form, summary only) over
    GPT-3 plans on 1024 A100 (tp x pp x interleaving x micro-batch).
Each case runs in its own subprocess so that its peak RSS is its own.

    python bench/scale.py [--skip-unfolded] [--only NAME]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def one_case(name: str) -> dict:
    from hwsim.config.loader import load_scenario
    from hwsim.simulate import run_step

    t0 = time.perf_counter()
    if name == "gpt3-folded":
        s = run_step(load_scenario(ROOT / "scenarios/gpt3-175b-1024xa100.yaml"), fold=True).summary
        out = {"step_time_s": s["step_time_s"], "tasks": s["n_tasks"], "granularity": s["granularity"]}
    elif name == "gpt3-unfolded":
        s = run_step(load_scenario(ROOT / "scenarios/gpt3-175b-1024xa100.yaml"), fold=False).summary
        out = {"step_time_s": s["step_time_s"], "tasks": s["n_tasks"], "granularity": s["granularity"]}
    elif name == "llama405b-16k-folded":
        s = run_step(load_scenario(ROOT / "scenarios/llama3-405b-16384xh100.yaml"), fold=True).summary
        out = {"step_time_s": s["step_time_s"], "tasks": s["n_tasks"], "granularity": s["granularity"]}
    elif name == "llama405b-131k-folded":
        sc = load_scenario(ROOT / "scenarios/llama3-405b-16384xh100.yaml",
                           ["cluster.nodes=16384", "parallel.dp=1024", "training.global_batch=16384"])
        s = run_step(sc, fold=True).summary
        out = {"devices": s["devices"], "step_time_s": s["step_time_s"], "tasks": s["n_tasks"],
               "granularity": s["granularity"]}
    elif name == "screen-100":
        from hwsim.config.loader import load_scenario as ls
        from hwsim.studies.screen import screen
        base = ROOT / "scenarios/gpt3-175b-1024xa100.yaml"
        plans = [(tp, pp, v, mb) for tp in (2, 4, 8) for pp in (2, 4, 8, 16) for v in (1, 2, 3, 4)
                 for mb in (1, 2, 4)][:100]
        from hwsim.errors import HwsimError
        scenarios = []
        for tp, pp, v, mb in plans:
            sched = "interleaved" if v > 1 else "1f1b"
            scenarios.append(ls(base, [f"parallel.tp={tp}", f"parallel.pp={pp}", f"parallel.dp={1024 // (tp * pp)}",
                                       f"parallel.virtual_stages={v}", f"parallel.schedule={sched}",
                                       f"training.micro_batch={mb}"]))
        screen(scenarios[0])   # the cluster's topology and kernel tables are built once per study
        ok = 0
        t0 = time.perf_counter()   # time the screening, not the loading of 100 YAML files
        for sc in scenarios:
            try:
                screen(sc)
                ok += 1
            except HwsimError:     # an impossible plan is screened out too
                pass
        wall = time.perf_counter() - t0
        out = {"configs": len(plans), "valid_plans_screened": ok, "configs_per_s": len(plans) / wall,
               "valid_plans_per_s": ok / wall}
    else:
        raise SystemExit(f"unknown case {name}")
    out["wall_s"] = time.perf_counter() - t0
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--only")
    ap.add_argument("--skip-unfolded", action="store_true")
    args = ap.parse_args()
    if args.case:
        print(json.dumps(one_case(args.case)))
        return
    cases = ["gpt3-folded", "llama405b-16k-folded", "llama405b-131k-folded", "screen-100", "gpt3-unfolded"]
    if args.skip_unfolded:
        cases.remove("gpt3-unfolded")
    if args.only:
        cases = [args.only]
    for name in cases:
        res = subprocess.run([sys.executable, __file__, "--case", name], capture_output=True, text=True)
        if res.returncode:
            print(f"{name}: failed\n{res.stderr[-2000:]}")
            continue
        print(f"{name:24s} {res.stdout.strip()}", flush=True)


if __name__ == "__main__":
    main()
