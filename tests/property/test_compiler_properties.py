"""Random valid plans on a small model: every plan the checker accepts compiles and simulates,
and the step's invariants hold (each task once and after its predecessors, the breakdown adds
up to the step time, MFU ≤ HFU < 1, folded = unfolded)."""

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from hwsim.config.loader import scenario_from_mapping
from hwsim.errors import PlanError
from hwsim.simulate import run_step
from hwsim.workload.plan import resolve_plan
from tests.conftest import SMALL


@st.composite
def plans(draw):
    d = copy.deepcopy(SMALL)
    d["cluster"]["nodes"] = 2
    moe = draw(st.booleans())
    d["model"] = {"layers": 4, "hidden": 256, "heads": 8, "kv_heads": draw(st.sampled_from([8, 4, 2])),
                  "ffn_hidden": 512, "mlp": draw(st.sampled_from(["gelu", "swiglu"])), "vocab": 1024,
                  "seq_len": 256}
    if moe:
        d["model"]["moe"] = {"experts": 4, "top_k": 2}
    tp = draw(st.sampled_from([1, 2]))
    pp = draw(st.sampled_from([1, 2, 4]))
    cp = draw(st.sampled_from([1, 2]))
    schedule = draw(st.sampled_from(["gpipe", "1f1b", "interleaved", "zero-bubble"])) if pp > 1 else "1f1b"
    v = 2 if schedule == "interleaved" else 1
    d["parallel"] = {"tp": tp, "pp": pp, "cp": cp, "schedule": schedule, "virtual_stages": v,
                     "ep": draw(st.sampled_from([1, 2])) if moe else 1,
                     "sequence_parallel": draw(st.booleans()), "zero_stage": draw(st.integers(0, 3)),
                     "recompute": draw(st.sampled_from(["none", "selective", "full"]))}
    d["training"] = {"global_batch": draw(st.sampled_from([16, 32])), "micro_batch": draw(st.sampled_from([1, 2])),
                     "precision": draw(st.sampled_from(["bf16", "fp8"])),
                     "attention": draw(st.sampled_from(["flash", "unfused"]))}
    if draw(st.booleans()):   # a named software stack: host thread, syncs, recompute variants, ...
        d["software"] = {"framework": draw(st.sampled_from(["megatron-lm", "megatron-deepspeed", "torchtitan",
                                                             "llm-foundry", "nemo", "pytorch-fsdp"])),
                         "compile": draw(st.booleans()), "cuda_graphs": draw(st.booleans()),
                         "async_tp": draw(st.booleans()),
                         "selective_recompute": draw(st.sampled_from(["attention", "op", "layer"])),
                         "fp8_recipe": draw(st.sampled_from(["delayed", "current", "rowwise", "mxfp8"]))}
    return d


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans())
def test_every_accepted_plan_simulates_with_its_invariants(d):
    sc = scenario_from_mapping(d)
    try:
        resolve_plan(sc)
    except PlanError:
        assume(False)
    r = run_step(sc, granularity="op")
    tr, g, s = r.trace, r.compiled.graph, r.summary
    assert np.all(tr.end_s >= tr.start_s) and np.all(tr.start_s >= 0)
    for i, preds in enumerate(g.preds):
        for p in preds:
            assert tr.start_s[i] >= tr.end_s[p] - 1e-12
    assert sum(s["breakdown"].values()) == pytest.approx(s["step_time_s"], rel=1e-9)
    for stream_tasks in g.stream_order().values():   # a stream (the host thread too) runs one task at a time
        ivs = sorted((tr.start_s[t], tr.end_s[t]) for t in stream_tasks)
        assert all(b[0] >= a[1] - 1e-12 for a, b in zip(ivs, ivs[1:]))
    assert 0 < s["mfu"] <= s["hfu"] < 1
    for mem in tr.memory.values():
        assert mem.levels_bytes.min() >= -1e-3
    full = run_step(sc, fold=False, granularity="op").summary
    assert full["step_time_s"] == pytest.approx(s["step_time_s"], rel=0.03)
