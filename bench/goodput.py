"""Goodput timing: `hwsim goodput` on Llama 3 405B / 16,384 H100 over 15.6T tokens must finish
in under a minute on one core (issue 14). Times the whole command in a subprocess pinned to one
CPU (numpy and BLAS limited to one thread), and, in process, its two parts: the simulated step
(folded) and the Monte Carlo.

    python bench/goodput.py [--scenario scenarios/llama3-405b-16384xh100.yaml] [--runs 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
os.environ.update(ONE_THREAD)

from hwsim.config.loader import load_scenario  # noqa: E402
from hwsim.reliability.goodput import build_goodput_model, run_goodput  # noqa: E402

LIMIT_S = 60.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default=str(REPO / "scenarios" / "llama3-405b-16384xh100.yaml"))
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    scenario = load_scenario(args.scenario)
    start = time.perf_counter()
    model = build_goodput_model(scenario)
    step_s = time.perf_counter() - start
    start = time.perf_counter()
    result = run_goodput(model, args.runs, args.seed)
    mc_s = time.perf_counter() - start

    pin = ["taskset", "-c", str(min(os.sched_getaffinity(0)))] if hasattr(os, "sched_getaffinity") else []
    with tempfile.TemporaryDirectory() as out:
        command = [*pin, sys.executable, "-m", "hwsim.cli", "goodput", args.scenario, "--runs", str(args.runs),
                   "--seed", str(args.seed), "--out", out]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ, **ONE_THREAD})
        cli_s = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stderr)
        return 1
    s = result.summary
    print(f"{s['name']}: {s['tokens']:.3g} tokens, {s['devices']:,} devices, {args.runs} runs, seed {args.seed}")
    print(f"  simulated step (folded)   {step_s:6.2f} s   step time {s['step_time_s']:.3f} s")
    print(f"  Monte Carlo               {mc_s:6.2f} s   ({s['interruptions_per_day']['mean']:.2f} interruptions/day,"
          f" {s['effective_training_time']['mean']:.1%} effective, {s['time_to_train_days']['mean']:.1f} days)")
    print(f"  hwsim goodput (1 core)    {cli_s:6.2f} s   (limit {LIMIT_S:.0f} s: {'PASS' if cli_s < LIMIT_S else 'FAIL'};"
          f" import, simulation, Monte Carlo, parquet and plot)")
    return 0 if cli_s < LIMIT_S else 1


if __name__ == "__main__":
    sys.exit(main())
