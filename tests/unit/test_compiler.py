"""The compiler's closed forms: pipeline bubbles, FLOPs, activation and ZeRO memory, folding."""

import copy

import numpy as np
import pytest

from hwsim.config.loader import scenario_from_mapping
from hwsim.engine.task import MemKind, TaskKind
from hwsim.simulate import run_step
from hwsim.workload import ops as O
from hwsim.workload.memory import static_memory_bytes, stage_params
from hwsim.workload.shard import Shard
from tests.conftest import SMALL


def scenario(**changes):
    d = copy.deepcopy(SMALL)
    for path, value in changes.items():
        node = d
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[k]
        if value is None:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    return scenario_from_mapping(d)


def pipeline_only(schedule, v=1, m=16, pp=4):
    """Uniform stages, a network too fast to matter: the bubble is the schedule's alone."""
    return scenario(cluster__nodes=1, cluster__devices_per_node=pp, cluster__inter_node=None,
                    cluster__intra_node={"kind": "switch", "bandwidth": "1000 TB/s", "latency": 0},
                    model={"layers": 16, "hidden": 4096, "heads": 32, "ffn_hidden": 16384, "vocab": 64,
                           "seq_len": 2048},
                    parallel={"tp": 1, "pp": pp, "dp": 1, "schedule": schedule, "virtual_stages": v},
                    training={"global_batch": m, "micro_batch": 1}, simulation={"network_model": "ideal"})


@pytest.mark.parametrize("schedule, v, rel_tol", [("1f1b", 1, 0.03), ("gpipe", 1, 0.03), ("interleaved", 2, 0.06),
                                                  ("interleaved", 4, 0.10)])
def test_pipeline_bubble_matches_closed_form(schedule, v, rel_tol):
    m, pp = 16, 4
    r = run_step(pipeline_only(schedule, v, m, pp), granularity="op")
    cats = r.summary["compute_by_category_s"]
    work = sum(t for c, t in cats.items() if c != "optimizer")
    bubble = r.summary["step_time_s"] - cats["optimizer"] - work
    assert bubble / work == pytest.approx((pp - 1) / m / v, rel=rel_tol)


def test_zero_bubble_beats_1f1b():
    zb = run_step(pipeline_only("zero-bubble"), granularity="op").summary["step_time_s"]
    f1b = run_step(pipeline_only("1f1b"), granularity="op").summary["step_time_s"]
    assert zb < f1b


@pytest.mark.parametrize("recompute", ["none", "full"])
def test_forward_flops_are_a_third_of_model_flops(recompute):
    sc = scenario(parallel__recompute=recompute)
    r = run_step(sc, granularity="op")
    g, stands = r.compiled.graph, r.compiled.stands_for
    by_cat = {}
    layer_fwd = 0.0
    for t in g.tasks:
        if t.kind == TaskKind.COMPUTE:
            by_cat[t.category] = by_cat.get(t.category, 0.0) + t.flop * stands[t.devices[0]]
            if t.category == "fwd" and t.layer >= 0:
                layer_fwd += t.flop * stands[t.devices[0]]
    assert by_cat["fwd"] == pytest.approx(r.compiled.model_flop / 3, rel=1e-9)
    if recompute == "full":   # the layers' forward runs again; the logits are not recomputed
        assert by_cat["recompute"] == pytest.approx(layer_fwd, rel=1e-9)
    else:
        assert "recompute" not in by_cat
    assert r.summary["hfu"] >= r.summary["mfu"]


def test_model_flops_are_six_params_tokens_plus_attention():
    sc = scenario()
    m = sc.model
    tokens = sc.training.global_batch * m.seq_len
    n_params = O.param_count(m)
    expected = 6 * n_params * tokens
    # attention adds 6·(2·l·s·h) per token (causal halves the 12·l·s·h of full attention)
    expected += 6 * m.layers * m.seq_len * m.hidden * tokens
    flop = O.model_flop_per_step(m, sc.training.global_batch)
    embedding = 6 * m.vocab * m.hidden * tokens   # the input embedding does no matmul
    assert flop == pytest.approx(expected - embedding, rel=0.02)


@pytest.mark.parametrize("recompute", ["none", "selective", "full"])
def test_activation_memory_matches_korthikanti(recompute):
    sc = scenario(cluster__nodes=1, cluster__devices_per_node=1, cluster__inter_node=None,
                  parallel={"tp": 1, "pp": 1, "dp": 1, "recompute": recompute},
                  training={"global_batch": 1, "micro_batch": 1})
    r = run_step(sc, granularity="op")
    mem = r.trace.memory[0]
    acts = mem.level_bytes(MemKind.ACTIVATIONS)
    shard = Shard(micro_batch=1, seq_len=sc.model.seq_len)
    per_layer = O.layer_activation_bytes(sc.model, shard, sc.parallel.recompute)
    layers = sc.model.layers * per_layer
    head = O.head_activation_bytes(sc.model, shard) + O.head_transient_bytes(sc.model, shard)
    full = O.layer_activation_bytes(sc.model, shard, type(sc.parallel.recompute)("none"))
    transient = full - per_layer if recompute == "full" else 0.0
    # peak activations: all layers' kept tensors + either the loss's (its kept fp32 softmax and
    # the 16-bit logits or their gradient while it runs) or one layer's recomputed activations
    # (recomputed one layer at a time)
    assert acts.max() == pytest.approx(layers + max(head, transient), rel=1e-9)
    assert acts[-1] == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize("zero", [0, 1, 2, 3])
def test_zero_static_memory(zero):
    sc = scenario(parallel={"tp": 1, "pp": 1, "dp": 16, "zero_stage": zero})
    r = run_step(sc, granularity="op")
    psi = stage_params(sc.model, 1, 0)
    init = r.compiled.initial_memory[0]
    n = 16
    w = 2 * psi / (n if zero >= 3 else 1)
    g = 2 * psi / (n if zero >= 2 else 1)
    o = 12 * psi / (n if zero >= 1 else 1)
    assert init[MemKind.WEIGHTS] == pytest.approx(w)
    assert init[MemKind.GRADIENTS] == pytest.approx(g)
    assert init[MemKind.OPTIMIZER] == pytest.approx(o)
    assert static_memory_bytes(psi, zero, n, sc.training.precision)[MemKind.OPTIMIZER] == pytest.approx(o)


FOLD_CASES = [
    dict(cluster__nodes=8, parallel={"tp": 8, "pp": 2, "dp": 4, "schedule": "1f1b"},
         training={"global_batch": 16, "micro_batch": 1}),
    dict(cluster__nodes=8, parallel={"tp": 2, "pp": 2, "dp": 16, "zero_stage": 1, "sequence_parallel": True},
         training={"global_batch": 64, "micro_batch": 1}),
    dict(cluster__nodes=8, parallel={"tp": 4, "pp": 1, "dp": 16, "zero_stage": 3},
         training={"global_batch": 32, "micro_batch": 1}),
    dict(cluster__nodes=8, parallel={"tp": 2, "pp": 4, "dp": 8, "schedule": "1f1b"},
         training={"global_batch": 32, "micro_batch": 1}),
]
# Interleaved: the last stage sends forward to stage 0 and backward to the stage before it; a
# folded hop must carry its own pairs for each (these once shared transfers and differed by ~1%).
INTERLEAVED_CASE = dict(cluster__nodes=8, parallel={"tp": 2, "pp": 4, "dp": 8, "schedule": "interleaved",
                                                    "virtual_stages": 2},
                        training={"global_batch": 32, "micro_batch": 1})
FOLD_CASES.append(INTERLEAVED_CASE)


@pytest.mark.parametrize("case", FOLD_CASES)
def test_folded_and_unfolded_agree(case):
    sc = scenario(**case)
    assert sc.cluster.n_devices == 64
    folded = run_step(sc, fold=True, granularity="layer").summary
    full = run_step(sc, fold=False, granularity="layer").summary
    assert full["simulated_devices"] == 64 and folded["simulated_devices"] < 64
    assert folded["step_time_s"] == pytest.approx(full["step_time_s"], rel=1e-9)
    assert folded["peak_memory_bytes"] == pytest.approx(full["peak_memory_bytes"], rel=1e-6)


@pytest.mark.parametrize("case", FOLD_CASES[:2])
def test_granularities_agree(case):
    sc = scenario(**case)
    times = [run_step(sc, granularity=g).summary["step_time_s"] for g in ("op", "layer", "step")]
    assert times[1] == pytest.approx(times[0], rel=1e-9)
    assert times[2] == pytest.approx(times[0], rel=0.01)


def test_step_granularity_keeps_blocking_tp_collectives_with_many_micro_batches():
    """Without sequence parallelism a tensor-parallel all-reduce ends every forward step and
    blocks the next compute; at step granularity a stage step's collectives are one task after
    its compute, so the next step (which starts with a pipeline receive) must still wait for it.
    Many micro-batches in the 1F1B steady state make a lost wait show."""
    sc = scenario(cluster__nodes=2, parallel={"tp": 4, "pp": 4, "dp": 1, "schedule": "interleaved",
                                              "virtual_stages": 2},
                  training={"global_batch": 64, "micro_batch": 1})
    layer, step = (run_step(sc, granularity=g).summary for g in ("layer", "step"))
    assert step["step_time_s"] == pytest.approx(layer["step_time_s"], rel=0.01)
    assert step["breakdown"]["exposed_comm.tp"] == pytest.approx(layer["breakdown"]["exposed_comm.tp"], rel=0.05)


def test_same_input_same_trace():
    sc = scenario()
    a, b = run_step(sc), run_step(sc)
    assert a.trace.fingerprint() == b.trace.fingerprint()
    assert np.array_equal(a.trace.start_s, b.trace.start_s)


def test_every_compiled_task_runs_once_after_its_predecessors():
    r = run_step(scenario(parallel={"tp": 2, "pp": 2, "dp": 4, "zero_stage": 3}), granularity="op")
    tr, g = r.trace, r.compiled.graph
    assert np.all(np.isfinite(tr.start_s)) and np.all(tr.end_s >= tr.start_s)
    for i, preds in enumerate(g.preds):
        for p in preds:
            assert tr.start_s[i] >= tr.end_s[p] - 1e-12


def test_breakdown_adds_up_to_step_time():
    s = run_step(scenario()).summary
    assert sum(s["breakdown"].values()) == pytest.approx(s["step_time_s"], rel=1e-9)
    assert 0 < s["mfu"] <= s["hfu"] < 1


def test_oom_is_a_finding_not_a_crash():
    s = run_step(scenario(cluster__accelerator__hbm="1 GB")).summary
    assert s["fits_in_memory"] is False and s["oom_findings"]


def test_unfused_attention_is_slower_and_keeps_the_scores():
    flash = run_step(scenario(), granularity="op").summary
    unfused = run_step(scenario(training__attention="unfused"), granularity="op").summary
    assert unfused["step_time_s"] > flash["step_time_s"]
    assert unfused["peak_memory_bytes"] > flash["peak_memory_bytes"]
    assert unfused["mfu"] < flash["mfu"]


@pytest.mark.parametrize("granularity", ["op", "step"])
def test_zero3_under_pp_gathers_once_and_reduces_once_per_step(granularity):
    """FSDP under pipeline parallelism (torchtitan + torch.distributed.pipelining) keeps each
    stage's parameters gathered across micro-batches and reduce-scatters the accumulated fp32
    gradients once; without pp, ZeRO-3 gathers again for every micro-batch."""
    sc = scenario(parallel={"tp": 1, "pp": 2, "dp": 8, "zero_stage": 3},
                  training={"global_batch": 64, "micro_batch": 2})        # 4 micro-batches
    r = run_step(sc, granularity=granularity)
    g = r.compiled.graph
    stage0 = [t for t in g.tasks if 0 in t.devices]
    gathers = [t for t in stage0 if t.kind is TaskKind.COLLECTIVE and t.name.startswith("zero3 gather")]
    reduces = [t for t in stage0 if t.kind is TaskKind.COLLECTIVE and t.name.startswith("zero3 grad reduce")]
    assert {t.micro_batch for t in gathers} == {0}                   # the first micro-batch only
    assert len(reduces) == sc.model.layers // 2                      # one per layer of the stage
    assert {t.micro_batch for t in reduces} == {r.summary["micro_batches"] - 1}
    # memory: the stage's layers stay gathered (bf16) and their fp32 gradients unsharded
    lw_params = sum(t.mem_bytes for t in stage0 if t.kind is TaskKind.ALLOC and t.name.startswith("unsharded grads"))
    gathered = sum(t.mem_bytes for t in stage0 if t.kind is TaskKind.ALLOC and t.name.startswith("gathered"))
    freed = sum(t.mem_bytes for t in stage0 if t.kind is TaskKind.FREE and t.mem_kind is not MemKind.ACTIVATIONS)
    n_layer_params = lw_params / 4
    assert gathered == pytest.approx(2 * n_layer_params)
    assert freed == pytest.approx(gathered + lw_params)
    no_pp = run_step(scenario(parallel={"tp": 1, "pp": 1, "dp": 16, "zero_stage": 3},
                              training={"global_batch": 64, "micro_batch": 2}), granularity="op").compiled.graph
    per_mb = [t for t in no_pp.tasks if t.name.startswith("zero3 gather") and 0 in t.devices]
    assert len({t.micro_batch for t in per_mb}) == 2                 # 64 / (16 x 2) micro-batches, each gathers
