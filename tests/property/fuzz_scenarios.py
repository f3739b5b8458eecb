"""Generated scenarios for the fuzz harness (tests/property/test_fuzz.py, bench/fuzz.py): a
tiny model on a small cluster, every field the loader, the simulation and the goodput path
read, drawn over valid and invalid values, the `reliability:` block included.

`check(mapping)` runs one through the loader, one simulated step and a short Monte Carlo and
says how it ended: "ok", "rejected" (a HwsimError, the user's to fix), "crash" (anything
else: a bug of ours) or "timeout" (no answer within the time limit: a hang for the user)."""

from __future__ import annotations

import copy
import math
import re
import signal
import traceback

from hypothesis import strategies as st

from tests.conftest import SMALL

__all__ = ["scenario_mappings", "check", "names_a_field"]

def _mostly(valid, invalid):
    """A value from `valid` nine times in ten, else from `invalid`."""
    return st.integers(0, 9).flatmap(lambda i: invalid if i == 0 else valid)


_BAD_TIMES = st.one_of(st.sampled_from(["0 s", "-5 min", "2 weeks", "", None, True, "1 ns", "1e300 h", math.nan,
                                        math.inf, -3.0]), st.floats(-10.0, 0.0))
TIMES = _mostly(st.one_of(st.sampled_from(["5 min", "90 s", "100000 h", "3 d", "10 h", 3600.0]),
                          st.floats(1.0, 1e10)), _BAD_TIMES)
INTERVALS = _mostly(st.one_of(st.sampled_from(["auto", "30 min", "2 h", 600]), st.floats(1.0, 1e6)), _BAD_TIMES)
RATES = _mostly(st.sampled_from(["2 TB/s", "30 GB/s", "1 GB/s", "400 Gb/s", 1e9]),
                st.sampled_from(["0 GB/s", "-1 GB/s", "5 furlongs", 0, None, math.nan]))
FITS = _mostly(st.floats(1.0, 1e7), st.one_of(st.floats(-5.0, 0.0), st.sampled_from(["x", None, math.nan, math.inf])))
COMPONENTS = _mostly(st.sampled_from(["gpu", "hbm", "nic", "switch", "host", "software", "maintenance"]),
                     st.sampled_from(["rack", "GPU", ""]))
PER = _mostly(st.sampled_from(["device", "node", "nic", "switch", "job"]), st.sampled_from(["rack", 3, None]))
JUNK = st.one_of(st.text(max_size=6), st.integers(-3, 3), st.floats(allow_nan=True), st.none(),
                 st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                 # zeros and sizes that would hang a step (issue 15: a zero bandwidth, 1.536e12 sequences)
                 st.sampled_from([0, 0.0, "0 GB/s", "0 TFLOPS", 10**6, 10**9, 1.536e12, "1.536e12", 2**70]))


@st.composite
def component_rates(draw):
    rate = {}
    if draw(st.integers(0, 3)):
        rate["mtbf" if draw(st.booleans()) else "fit"] = draw(TIMES) if draw(st.booleans()) else draw(FITS)
        if "fit" in rate and isinstance(rate["fit"], str) and rate["fit"].endswith(("h", "s", "d", "min")):
            rate["mtbf"] = rate.pop("fit")
    if draw(st.booleans()):
        rate["per"] = draw(PER)
    if draw(st.integers(0, 5)) == 0:
        rate["planned"] = draw(_mostly(st.booleans(), JUNK))
    if draw(st.integers(0, 30)) == 0:
        rate[draw(st.sampled_from(["mtbf_h", "rate"]))] = 3
    return rate


@st.composite
def reliability_blocks(draw):
    block = {}
    if draw(st.integers(0, 9)) == 0:
        block["preset"] = draw(_mostly(st.just("llama3-405b-h100"), st.sampled_from(["llama4", 3])))
    if draw(st.booleans()):
        block["components"] = draw(st.dictionaries(COMPONENTS, component_rates(), max_size=4))
    for key in ("detection", "restart"):
        if draw(st.integers(0, 3)) == 0:
            block[key] = draw(TIMES)
    if draw(st.booleans()):
        block["recovery"] = draw(_mostly(st.sampled_from(["job", "replica"]), st.just("node")))
    if draw(st.booleans()):
        ck = {}
        if draw(st.booleans()):
            ck["storage"] = draw(_mostly(st.sampled_from(["parallel-fs", "node-local-nvme"]), st.just("tape")))
        if draw(st.booleans()):
            ck["write_bandwidth"] = draw(RATES)
        if draw(st.integers(0, 3)) == 0:
            ck["read_bandwidth"] = draw(RATES)
        if draw(st.booleans()):
            ck["interval"] = draw(INTERVALS)
        if draw(st.booleans()):
            ck["mode"] = draw(_mostly(st.sampled_from(["blocking", "async"]), st.just("lazy")))
        block["checkpoint"] = ck
    if draw(st.integers(0, 3)) == 0:
        block["degraded_links"] = draw(st.lists(st.fixed_dictionaries(
            {"kind": _mostly(st.sampled_from(["nic", "nvlink"]), st.just("pcie")),
             "device": _mostly(st.integers(0, 3), st.integers(-1, 40)),
             "bandwidth_frac": _mostly(st.floats(0.05, 1.0), st.sampled_from([0.0, -0.5, 1.5, math.nan]))}),
            max_size=2))
    if draw(st.integers(0, 30)) == 0:
        block["mtbf"] = "5 h"    # a key that is not there
    return block


PATHS = st.sampled_from([("cluster", "nodes"), ("cluster", "devices_per_node"), ("model", "layers"),
                         ("parallel", "tp"), ("parallel", "pp"), ("training", "global_batch"),
                         ("training", "tokens"), ("training", "precision"), ("cluster", "inter_node", "nic_bandwidth"),
                         ("reliability",), ("reliability", "checkpoint"), ("reliability", "components", "gpu"),
                         ("cluster", "accelerator", "price_per_hour"), ("cluster", "accelerator", "host_bandwidth"),
                         ("cluster", "intra_node", "bandwidth"), ("cluster", "accelerator", "hbm_bandwidth"),
                         ("cluster", "accelerator", "hbm"), ("cluster", "accelerator", "peak", "bf16"),
                         ("training", "micro_batch"), ("model", "mtp_layers")])


@st.composite
def scenario_mappings(draw):
    """A tiny model on up to 4 nodes with a plan that divides the cluster (mostly), a token
    budget (mostly), a reliability block (mostly), and now and then junk at one path."""
    d = copy.deepcopy(SMALL)
    nodes, dpn = draw(st.integers(1, 4)), draw(st.sampled_from([1, 2, 4, 8]))
    layers = draw(st.integers(1, 4))
    d["cluster"].update(nodes=nodes, devices_per_node=dpn)
    d["cluster"]["inter_node"]["nics_per_node"] = draw(st.sampled_from([1, 2, 8]))
    d["cluster"]["inter_node"]["kind"] = draw(st.sampled_from(["fat-tree", "rail-optimized", "torus"]))
    d["model"].update(layers=layers, hidden=draw(st.sampled_from([256, 512])), heads=8, ffn_hidden=1024,
                      vocab=1024, seq_len=draw(st.sampled_from([128, 256])))
    tp = draw(st.sampled_from([t for t in (1, 2, 4, 8) if dpn % t == 0]))
    pp = draw(st.sampled_from([p for p in (1, 2, 4) if (nodes * dpn // tp) % p == 0 and p <= layers]))
    dp, mb = nodes * dpn // (tp * pp), draw(st.sampled_from([1, 2]))
    d["parallel"] = {"tp": tp, "pp": pp, "zero_stage": draw(st.integers(0, 3)) if dp > 1 else 0,
                     "schedule": draw(st.sampled_from(["1f1b", "gpipe"]))}
    d["training"] = {"global_batch": dp * mb * draw(st.integers(1, 4)), "micro_batch": mb,
                     "precision": draw(st.sampled_from(["bf16", "fp32", "fp8"])),
                     "tokens": draw(_mostly(st.sampled_from([1e8, 2e9, 3e10]), st.sampled_from([-1.0, 0, None])))}
    d["cluster"]["accelerator"]["price_per_hour"] = draw(st.sampled_from([0.0, 2.0, 6.155]))
    if draw(st.integers(0, 4)):
        d["reliability"] = draw(reliability_blocks())
    if draw(st.integers(0, 9)) == 0:   # junk at one path
        path, value = draw(PATHS), draw(JUNK)
        node = d
        for part in path[:-1]:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        node[path[-1]] = value
    return d


_BLOCKS = r"(cluster|model|parallel|training|reliability|software|simulation)"
_FIELD = re.compile(rf"\b{_BLOCKS}\.[A-Za-z_]|^(scenario: )?{_BLOCKS}\b")


def names_a_field(message: str) -> bool:
    """A rejection names the field it is about: a dotted scenario path, or the block it opens with."""
    return bool(_FIELD.search(message))


class _TooSlow(Exception):
    pass


def _alarm(signum, frame):
    raise _TooSlow


def check(mapping, runs: int = 2, time_limit_s: float = 30.0) -> tuple[str, str]:
    """("ok" | "rejected" | "crash" | "timeout", message): the loader, one simulated step
    (folded), the goodput model and `runs` Monte Carlo runs, within `time_limit_s` (a timeout is
    a hang for the user: a finding like a crash)."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, time_limit_s)
    try:
        return _check(mapping, runs)
    except _TooSlow:
        return "timeout", f"no result within {time_limit_s:g} s"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, previous)


def _check(mapping, runs: int) -> tuple[str, str]:
    from hwsim.config.loader import scenario_from_mapping
    from hwsim.errors import HwsimError
    from hwsim.reliability.goodput import build_goodput_model, run_goodput
    from hwsim.reliability.links import run_degraded_step
    from hwsim.reliability.spec import resolve_reliability
    from hwsim.simulate import run_step

    try:
        scenario = scenario_from_mapping(mapping)
        spec = resolve_reliability(scenario.reliability)
        step = (run_degraded_step(scenario, spec.degraded_links) if spec.degraded_links else run_step(scenario))
        model = build_goodput_model(scenario, step_time_s=step.summary["step_time_s"])
        summary = run_goodput(model, runs=runs, seed=0).summary
        if not all(math.isfinite(summary[k]["mean"]) for k in ("time_to_train_days", "effective_training_time")):
            return "crash", f"non-finite goodput: {summary['time_to_train_days']}"
        if not 0.0 < summary["effective_training_time"]["mean"] <= 1.0:
            return "crash", f"effective training time out of (0, 1]: {summary['effective_training_time']}"
        return "ok", ""
    except HwsimError as exc:
        return "rejected", str(exc)
    except _TooSlow:
        raise
    except Exception:  # noqa: BLE001 - the harness's whole point: anything else is a bug of ours
        return "crash", traceback.format_exc()
