"""The Megatron-Bridge records as they are, and as if they stated their published architectures.

The records (scenario format v1.1) cannot state MLA (DeepSeek-V3), an explicit head dimension
(Qwen3: 128; gpt-oss: 64), gpt-oss's alternating 128-token sliding window and sinks, or
DeepSeek-V3's multi-token-prediction layer; hwsim models all of them (`model.mla`,
`model.head_dim`, `model.sliding_window`, `model.mtp_layers`) and ships them in its model
presets, each field with the published config it comes from. This what-if replaces a record's
inline model with the preset whose layers and hidden size it has (sequence length kept; one MTP
layer only where the record says the run had it) and prints both errors. Nothing is fitted: the
presets are the models' published configs.

    python bench/mbridge_architectures.py [VALIDATION_FILE]     (default: hwsim's public set)
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PRESETS = ("deepseek-v3", "gpt-oss-120b", "qwen3-235b-a22b", "qwen3-30b-a3b")
TAG = "megatron-bridge-perf"


def _preset(model: dict, presets: dict[str, dict]) -> tuple[str | None, dict | None]:
    for name, p in presets.items():
        if p["layers"] == model["layers"] and p["hidden"] == model["hidden"]:
            return name, p
    return None, None


def _with_architecture(record: dict, preset: dict) -> dict:
    model = {k: v for k, v in preset.items() if k not in ("name", "description", "sources")}
    model["seq_len"] = record["scenario"]["model"]["seq_len"]
    if "mtp_layers" in model:   # the run's own statement (Megatron-Bridge's table: "w/ MTP" or "w/o MTP")
        model["mtp_layers"] = 1 if "w-mtp" in record["id"] else 0
    return dict(record["scenario"], model=model)


def main() -> None:
    from hwsim.config.loader import scenario_from_mapping
    from hwsim.data import builtin_validation_file
    from hwsim.simulate import run_step

    path = Path(sys.argv[1]) if len(sys.argv) > 1 else builtin_validation_file("public")
    records = [r for r in yaml.safe_load(path.read_text()) if TAG in r.get("tags", [])]
    presets = {n: yaml.safe_load((REPO / "hwsim" / "presets" / "models" / f"{n}.yaml").read_text())
               for n in PRESETS}
    rows = []
    for r in records:
        published = r["published"]["step_time_s"]
        as_recorded = run_step(scenario_from_mapping(r["scenario"])).summary["step_time_s"] / published - 1
        name, preset = _preset(r["scenario"]["model"], presets)
        stated = as_recorded if preset is None else (
            run_step(scenario_from_mapping(_with_architecture(r, preset))).summary["step_time_s"] / published - 1)
        rows.append((r["id"], name or "-", as_recorded, stated))
    print(f"| record | preset | error as recorded | with the published architecture |\n|---|---|---|---|")
    for rid, name, a, b in rows:
        print(f"| {rid} | {name} | {a:+.1%} | {b:+.1%} |")
    for i, label in ((2, "as recorded"), (3, "with the published architectures")):
        errors = [row[i] for row in rows]
        print(f"{label}: {len(rows)} records, MAPE {statistics.mean(abs(e) for e in errors):.1%}, "
              f"mean signed {statistics.mean(errors):+.1%}, worst {max(abs(e) for e in errors):.1%}")


if __name__ == "__main__":
    main()
