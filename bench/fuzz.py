"""Fuzz harness: N generated scenarios (default 10,000; hypothesis, tests/property/fuzz_scenarios.py)
through the loader, one simulated step and the goodput Monte Carlo. Reports how many ran,
how many were rejected cleanly (a HwsimError naming the field: an exit 2 in the CLI), how many
rejections did not name a field, and how many crashed or hung (must be 0), with the first ones.

    python bench/fuzz.py [--examples 10000] [--seed 0]
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, given, seed as hypothesis_seed, settings  # noqa: E402

from tests.property.fuzz_scenarios import check, names_a_field, scenario_mappings  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts: collections.Counter[str] = collections.Counter()
    crashes: list[tuple[dict, str]] = []
    unnamed: list[str] = []
    reasons: collections.Counter[str] = collections.Counter()

    @hypothesis_seed(args.seed)
    @settings(max_examples=args.examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(scenario_mappings())
    def run(mapping):
        outcome, message = check(mapping)
        counts[outcome] += 1
        if outcome in ("crash", "timeout"):
            crashes.append((mapping, message))
        elif outcome == "rejected":
            reasons[message.split(":")[0] if not message.startswith("scenario:") else message.split(":")[1].strip()] += 1
            if not names_a_field(message):
                unnamed.append(message)

    start = time.perf_counter()
    run()
    elapsed = time.perf_counter() - start
    total = sum(counts.values())
    print(f"{total} scenarios in {elapsed:.0f} s: {counts['ok']} ran to a goodput result, {counts['rejected']} "
          f"rejected cleanly ({len(unnamed)} without naming a field), {counts['crash']} crashed, {counts['timeout']} "
          f"timed out (a hang: no result in 30 s)")
    print("most frequent rejections by field: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common(8)))
    kinds = collections.Counter(message.strip().splitlines()[-1] for _, message in crashes)
    for kind, n in kinds.most_common():
        print(f"\nCRASH OR HANG x{n}: {kind}")
        print("  first:", next(m for m, msg in crashes if msg.strip().splitlines()[-1] == kind))
    for message, n in collections.Counter(unnamed).most_common(5):
        print(f"\nUNNAMED REJECTION x{n}:", message)
    return 1 if counts["crash"] or counts["timeout"] or unnamed else 0


if __name__ == "__main__":
    sys.exit(main())
