"""Capacity planner benchmark: GPT-3 175B on 1024 A100 80GB.

`hwsim plan --from scenarios/gpt3-175b-1024xa100.yaml` as a script: the scenario's own plan,
the published Megatron-LM layout (Narayanan et al., SC'21, Table 1: TP 8, PP 8, interleaved,
full recompute), is the baseline; the planner enumerates, prunes, simulates the promising plans
and ranks them. Done when the best simulated plan's throughput is at least the baseline's and
the whole search takes under 10 minutes on a 2-core machine.

    python bench/plan_gpt3.py [--workers 2] [--max-simulations 32] [--json OUT]

Exit status 1 if the best plan is slower than the baseline or the search took over 600 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hwsim.config.loader import load_scenario  # noqa: E402
from hwsim.studies.commands import plan_report_json, print_plans  # noqa: E402
from hwsim.studies.executors import ProcessExecutor  # noqa: E402
from hwsim.studies.planner import plan_search  # noqa: E402

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "gpt3-175b-1024xa100.yaml"
LIMIT_S = 600.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-simulations", type=int, default=32)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    scenario = load_scenario(SCENARIO)
    start = time.perf_counter()
    stages: dict[str, float] = {}

    def on_event(stage: str, done: int, total: int) -> None:
        stages[stage] = time.perf_counter() - start
        if stage == "simulate":
            print(f"  simulated {done}/{total} at {stages[stage]:.0f} s", flush=True)
        else:
            print(f"  {total} plans left after enumeration, memory and dominance pruning, at "
                  f"{stages[stage]:.0f} s", flush=True)

    print(f"planning {scenario.name}: {scenario.cluster.n_devices} devices, {os.cpu_count()} CPUs, "
          f"{args.workers} workers, at most {args.max_simulations} simulations", flush=True)
    report = plan_search(scenario, max_simulations=args.max_simulations, executor=ProcessExecutor(args.workers),
                         granularity="layer", on_event=on_event)
    elapsed = time.perf_counter() - start
    print_plans(report, args.top)
    base, best = report.baseline, report.best
    sims = [r.duration_s for r in report.ranked + report.rejected]
    print(f"\ntime: {elapsed:.0f} s in all (estimates {stages.get('estimate', 0):.0f} s; {len(sims)} simulations, "
          f"{sum(sims):.0f} s of simulation, {max(sims):.1f} s the longest)")
    ok = best is not None and base is not None and base.summary is not None and \
        best.summary["tokens_per_s"] >= base.summary["tokens_per_s"] and elapsed <= LIMIT_S
    if best is not None and base is not None and base.summary is not None:
        print(f"best {best.summary['tokens_per_s']:,.0f} tokens/s vs the published Megatron layout "
              f"{base.summary['tokens_per_s']:,.0f} tokens/s ({best.summary['tokens_per_s'] / base.summary['tokens_per_s']:.2f}x); "
              f"{'PASS' if ok else 'FAIL'} (needs >= 1.00x in <= {LIMIT_S:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(plan_report_json(report), indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
