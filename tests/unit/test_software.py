"""The software stack: profiles resolve with a source per value, the host thread that launches
kernels (a host-bound step takes the host's time; compile and CUDA graphs remove it), the
power limit, and the what-ifs over them."""

import copy
from dataclasses import replace

import pytest

from hwsim.config.loader import scenario_from_mapping
from hwsim.config.schema import AttentionKernel, Dtype, Framework, Recompute
from hwsim.engine.executor import simulate
from hwsim.engine.task import Stream, TaskKind
from hwsim.hardware.kernels import KernelModel
from hwsim.hardware.power import power_exponent, tensor_throughput_frac
from hwsim.hardware.topology import build_topology
from hwsim.simulate import run_step
from hwsim.software.host import load_host_costs
from hwsim.software.profiles import (HostMode, load_framework, known_frameworks, resolve_software, version_key,
                                     ProfileSettings)
from hwsim.workload.compiler import compile_step
from tests.conftest import SMALL

TINY = {"layers": 2, "hidden": 64, "heads": 2, "ffn_hidden": 256, "mlp": "gelu", "vocab": 128, "seq_len": 32}


def one_gpu(**training):
    d = copy.deepcopy(SMALL)
    d["cluster"].update(nodes=1, devices_per_node=1)
    d["cluster"].pop("inter_node")
    d["model"] = dict(TINY)
    d["parallel"] = {"tp": 1, "pp": 1, "dp": 1}
    d["training"] = {"global_batch": 2, "micro_batch": 1, "precision": "bf16", **training}
    return scenario_from_mapping(d)


def simulate_with(sc, software):
    topology = build_topology(sc.cluster)
    kernels = KernelModel(sc.cluster.accelerator, sc.training.attention.value)
    compiled = compile_step(sc, topology, kernels, fold=True, software=software)
    trace = simulate(compiled.graph, _network(topology), memory_capacity_bytes=sc.cluster.accelerator.hbm,
                     n_links=len(topology.links), initial_memory=compiled.initial_memory)
    return compiled, trace


def _network(topology):
    from hwsim.network.maxmin import MaxMinFair
    return MaxMinFair(topology.capacity_bytes_per_s)


def eager(sc, **changes):
    """An eager PyTorch stack with one host op per hwsim kernel and no per-step syncs."""
    base = resolve_software(sc)
    return replace(base, **{"framework": Framework.PYTORCH_FSDP, "layer_ops": None, "compile": False,
                            "cuda_graphs": False, "host_syncs_per_step": 0, "loss_scale_sync": False, **changes})


def test_host_bound_step_takes_the_hosts_time():
    """Every kernel of a tiny model is shorter than the next launch: the step is the host's
    dispatch time of every kernel, plus the last kernel."""
    sc = one_gpu()
    costs = load_host_costs()
    compiled, trace = simulate_with(sc, eager(sc))
    tasks = compiled.graph.tasks
    host = [i for i, t in enumerate(tasks) if t.kind is TaskKind.HOST]
    gpu = [i for i, t in enumerate(tasks) if t.kind is TaskKind.COMPUTE]
    assert host and all(tasks[i].stream is Stream.HOST for i in host)
    assert max(tasks[i].duration_s for i in gpu) < costs.forward_op_s   # really host-bound
    host_total = sum(tasks[i].duration_s for i in host)
    # one dispatch per kernel: forward ops at forward_op_s, backward nodes at backward_node_s
    n_fwd = sum(1 for i in gpu if tasks[i].category in ("fwd", "optimizer"))
    n_bwd = sum(1 for i in gpu if tasks[i].category == "bwd")
    assert host_total == pytest.approx(n_fwd * costs.forward_op_s + n_bwd * costs.backward_node_s, rel=1e-9)
    last = max(gpu, key=lambda i: trace.end_s[i])
    assert trace.makespan_s == pytest.approx(host_total + tasks[last].duration_s, rel=1e-9)


def test_compile_and_cuda_graphs_shrink_the_host_time():
    sc = one_gpu()
    costs = load_host_costs()
    steps = {}
    for name, changes in (("eager", {}), ("compiled", {"compile": True}), ("graphs", {"cuda_graphs": True})):
        compiled, trace = simulate_with(sc, eager(sc, **changes))
        tasks = compiled.graph.tasks
        host = sum(t.duration_s for t in tasks if t.kind is TaskKind.HOST)
        n_kernels = sum(1 for t in tasks if t.kind is TaskKind.COMPUTE)
        if name == "compiled":
            assert host == pytest.approx(n_kernels * costs.kernel_launch_s, rel=1e-9)
        if name == "graphs":   # one graph per layer (and embedding, head), forward and backward, per micro-batch
            n_graphs = 2 * 2 * (sc.model.layers + 2)   # 2 micro-batches x (fwd, bwd) x (layers + embedding + head)
            assert host == pytest.approx(n_graphs * costs.cuda_graph_launch_s, rel=1e-9)
        steps[name] = trace.makespan_s
    assert steps["graphs"] < steps["compiled"] < steps["eager"]


def test_ideal_host_adds_no_task_and_no_time():
    sc = one_gpu()
    custom = resolve_software(sc)
    assert custom.host_mode == HostMode.IDEAL
    compiled, trace = simulate_with(sc, custom)
    assert not any(t.kind is TaskKind.HOST for t in compiled.graph.tasks)


def test_host_sync_waits_for_the_gpu():
    """A per-step sync (loss.item(), grad-norm) makes the optimizer's launch wait for the GPU."""
    sc = one_gpu()
    compiled, trace = simulate_with(sc, eager(sc, host_syncs_per_step=1))
    tasks = compiled.graph.tasks
    sync = next(i for i, t in enumerate(tasks) if t.kind is TaskKind.HOST and t.name.startswith("host sync"))
    backward = [i for i, t in enumerate(tasks) if t.kind is TaskKind.COMPUTE and t.category == "bwd"]
    assert trace.start_s[sync] >= max(trace.end_s[i] for i in backward) - 1e-15
    assert tasks[sync].duration_s == load_host_costs().host_sync_s


def test_host_time_shows_in_breakdown_and_account():
    sc = one_gpu()
    res = run_step(scenario_from_mapping({**_dump(sc), "software": {"framework": "pytorch-fsdp"}}))
    assert res.summary["breakdown"].get("host", 0.0) > 0.5 * res.summary["step_time_s"]
    assert res.summary["host_busy_s"] > 0
    from hwsim.analysis.critical_path import Cause
    from hwsim.analysis.report import bottleneck_account
    top = bottleneck_account(res).parts[0]
    assert top.cause is Cause.HOST


def _dump(sc):
    return sc.model_dump(mode="json", exclude_none=True)


def test_power_limit_slows_tensor_core_kernels_only():
    sc = one_gpu()
    capped = sc.cluster.accelerator.model_copy(update={"power_limit": 500.0})
    frac = tensor_throughput_frac(capped)
    assert frac == pytest.approx((500 / 700) ** power_exponent())
    full, low = KernelModel(sc.cluster.accelerator), KernelModel(capped)
    big = 8192
    from hwsim.config.schema import Dtype
    g_full = full.gemm_time_s(big, big, big, Dtype.BF16) - full.launch_overhead_s
    g_low = low.gemm_time_s(big, big, big, Dtype.BF16) - low.launch_overhead_s
    assert g_low == pytest.approx(g_full / frac, rel=1e-6)
    assert low.memory_time_s(1e9) == full.memory_time_s(1e9)
    assert tensor_throughput_frac(sc.cluster.accelerator) == 1.0


def test_every_profile_value_has_a_source_and_profiles_are_ordered():
    assert known_frameworks(), "no framework profiles are shipped"
    for name in known_frameworks():
        spec = load_framework(name)
        keys = [version_key(p.from_) for p in spec.profiles]
        assert keys == sorted(keys)
        for profile in spec.profiles:
            for field in ProfileSettings.model_fields:
                setting = getattr(profile.settings, field)
                if setting is not None:
                    assert len(setting.source) >= 10, (name, profile.from_, field)
            if profile.layer_ops is not None:
                assert len(profile.layer_ops.source) >= 10


def test_scenario_settings_win_over_the_profile_and_are_attributed():
    sc = one_gpu()
    for name in known_frameworks():
        d = {**_dump(sc), "software": {"framework": name, "compile": True}}
        sw = resolve_software(scenario_from_mapping(d))
        assert sw.compile is True and sw.sources["compile"].startswith("scenario")
        assert set(sw.sources) >= {"attention", "grad_reduce_dtype", "loss"}


def test_training_attention_written_by_the_scenario_wins():
    sc = one_gpu(attention="unfused")
    d = {**_dump(sc), "software": {"framework": "torchtitan"}}
    sw = resolve_software(scenario_from_mapping(d))
    assert sw.attention == AttentionKernel.UNFUSED and "training.attention" in sw.sources["attention"]


def test_version_selects_the_last_profile_not_later_than_it():
    assert version_key("2024-12") == (2024, 12) and version_key("25.11") == (25, 11)
    assert version_key("core_r0.8.0") == (0, 8, 0)
    for name in known_frameworks():
        spec = load_framework(name)
        sc = one_gpu()
        for profile in spec.profiles:
            d = {**_dump(sc), "software": {"framework": name, "version": profile.from_}}
            assert resolve_software(scenario_from_mapping(d)).profile_from == profile.from_
        newest = resolve_software(scenario_from_mapping({**_dump(sc), "software": {"framework": name}}))
        assert newest.profile_from == spec.profiles[-1].from_


def test_what_if_software_framework_changes_the_step():
    sc = one_gpu()
    base = run_step(sc).summary["step_time_s"]
    eager_step = run_step(scenario_from_mapping(_dump(sc), ["software.framework=pytorch-fsdp"])).summary
    assert eager_step["step_time_s"] > base
    assert eager_step["software"]["host"] == "eager"


def _llama_one_gpu(**parallel):
    d = copy.deepcopy(SMALL)
    d["cluster"].update(nodes=1, devices_per_node=1)
    d["cluster"].pop("inter_node")
    d["model"] = {"layers": 4, "hidden": 256, "heads": 4, "kv_heads": 2, "ffn_hidden": 512, "mlp": "swiglu",
                  "vocab": 256, "seq_len": 128}
    d["parallel"] = {"tp": 1, "pp": 1, "dp": 1, **parallel}
    d["training"] = {"global_batch": 2, "micro_batch": 1, "precision": "bf16"}
    return scenario_from_mapping(d)


def _recompute_flop(sc, **software):
    compiled, _ = simulate_with(sc, replace(resolve_software(sc), **software))
    return sum(t.flop for t in compiled.graph.tasks if t.kind is TaskKind.COMPUTE and t.category == "recompute")


def test_op_level_selective_recompute_reruns_every_second_matmul():
    """torchtitan's op SAC: q k v o w1 w3 w2 issued in that order; k, o and w3 are re-run, attention is saved."""
    from hwsim.config.schema import SelectiveRecompute
    sc = _llama_one_gpu(recompute="selective")
    m, t = sc.model, sc.model.seq_len   # tokens per micro-batch
    hd = m.hidden // m.heads
    k_cols, o_cols, w3_cols = m.kv_heads * hd, m.hidden, m.ffn_hidden
    per_mb = 2 * t * m.hidden * (k_cols + o_cols + w3_cols)
    flop = _recompute_flop(sc, selective_recompute=SelectiveRecompute.OP)
    assert flop == pytest.approx(2 * m.layers * per_mb, rel=1e-9)   # 2 micro-batches, attention not re-run


def test_layer_selective_recompute_checkpoints_every_kth_layer():
    from hwsim.config.schema import SelectiveRecompute
    full = _recompute_flop(_llama_one_gpu(recompute="full"))
    for k, share in ((2, 0.5), (4, 0.25), (1, 1.0)):
        flop = _recompute_flop(_llama_one_gpu(recompute="selective"), selective_recompute=SelectiveRecompute.LAYER,
                               selective_layer_interval=k)
        assert flop == pytest.approx(full * share, rel=1e-9)


def test_dynamic_fp8_scaling_costs_an_amax_pass():
    sc = scenario_from_mapping({**_dump(one_gpu()), "training": {"global_batch": 2, "micro_batch": 1,
                                                                  "precision": "fp8"}})
    from hwsim.config.schema import Fp8Recipe
    times = {r: simulate_with(sc, replace(resolve_software(sc), fp8_recipe=r))[1].makespan_s
             for r in (Fp8Recipe.DELAYED, Fp8Recipe.CURRENT, Fp8Recipe.MXFP8)}
    assert times[Fp8Recipe.CURRENT] > times[Fp8Recipe.DELAYED] == times[Fp8Recipe.MXFP8]


def test_fp32_upcast_loss_moves_more_bytes_and_holds_more_memory():
    from hwsim.config.schema import LossKind
    from hwsim.workload import ops as O
    from hwsim.workload.shard import Shard
    sc = one_gpu()
    sh = Shard(micro_batch=1, seq_len=sc.model.seq_len, tp=1, cp=1, ep=1, sequence_parallel=False, dtype_bytes=2,
               fp8=False)
    fused, upcast = (O.head_ops(sc.model, sh, k.value) for k in (LossKind.FUSED, LossKind.FP32_UPCAST))
    logits = sc.model.seq_len * sc.model.vocab
    mem = lambda ops: sum(o.bytes_moved for o in ops if o.kind == O.OpKind.MEMORY and "norm" not in o.name)  # noqa: E731
    assert mem(fused.forward) == logits * (2 + 2 + 4) and mem(upcast.forward) == logits * (2 + 4 + 8)
    assert mem(fused.backward) == logits * 6 and mem(upcast.backward) == logits * (4 + 12 + 6)
    assert O.head_transient_bytes(sc.model, sh, "fp32-upcast") == logits * (2 + 8)


def test_fsdp2_copies_gathered_parameters_out():
    d = _dump(_llama_one_gpu(zero_stage=3))
    d["cluster"]["devices_per_node"] = 2
    d["parallel"]["dp"] = 2
    sc = scenario_from_mapping(d)
    for version, expect in ((2, True), (1, False)):
        compiled, _ = simulate_with(sc, replace(resolve_software(sc), fsdp_version=version))
        copies = [t for t in compiled.graph.tasks if t.category == "fsdp"]
        assert bool(copies) == expect
        if expect:   # one copy-out per gather, reading and writing the gathered bytes
            gathers = [t for t in compiled.graph.tasks if t.name.startswith("zero3 gather")]
            assert len(copies) == len(gathers) and all(c.bytes_moved == 2 * g.bytes_moved
                                                             for c, g in zip(copies, gathers))


def test_async_tp_hides_tp_collectives_behind_their_gemms():
    d = _dump(_llama_one_gpu(tp=4, sequence_parallel=True))
    d["cluster"]["devices_per_node"] = 4
    d["model"].update(hidden=2048, heads=16, kv_heads=4, ffn_hidden=8192, seq_len=2048)
    sc = scenario_from_mapping(d)
    base = resolve_software(sc)
    on_c, on = simulate_with(sc, replace(base, async_tp=True))
    off_c, off = simulate_with(sc, replace(base, async_tp=False))
    assert on.makespan_s < off.makespan_s
    # the same collectives and kernels run, only their overlap changes
    kinds = lambda c: sorted((t.name, t.kind.value) for t in c.graph.tasks)  # noqa: E731
    assert kinds(on_c) == kinds(off_c)


def test_async_tp_under_rowwise_fp8_fuses_only_matmul_then_reduce_scatter():
    """pytorch#149990: with rowwise scales torch's async TP fuses the GEMM->reduce-scatter pairs
    but not the all-gather->GEMM pairs."""
    from hwsim.workload import ops as O
    from hwsim.workload.work import Work, overlap_tp_with_gemms
    works = [Work("ag", "fwd", comm=(O.Collective.ALL_GATHER.value, "tp", 1e6)), Work("qkv", "fwd", 1e-3),
             Work("wo", "fwd", 1e-3), Work("rs", "fwd", comm=(O.Collective.REDUCE_SCATTER.value, "tp", 1e6))]
    both = overlap_tp_with_gemms(works, {"qkv", "wo"})
    assert [w.overlapped for w in both if w.comm] == [True, True]
    rs_only = overlap_tp_with_gemms(works, {"qkv", "wo"}, fuse_all_gathers=False)
    assert [(w.name, w.overlapped) for w in rs_only if w.comm] == [("ag", False), ("rs", True)]
    # end to end: the same fp8 step exposes more tp communication under rowwise than tensorwise
    d = _dump(_llama_one_gpu(tp=4, sequence_parallel=True))
    d["cluster"]["devices_per_node"] = 4
    d["cluster"]["accelerator"] = "h100-sxm"
    d["model"].update(hidden=2048, heads=16, kv_heads=4, ffn_hidden=8192, seq_len=2048)
    d["training"]["precision"] = "fp8"
    d["software"] = {"framework": "torchtitan", "version": "2025-06", "compile": True, "async_tp": True}
    exposed = {}
    for recipe in ("tensorwise", "rowwise"):
        sc = scenario_from_mapping({**d, "software": {**d["software"], "fp8_recipe": recipe}})
        exposed[recipe] = run_step(sc).summary["breakdown"]["exposed_comm.tp"]
    assert exposed["rowwise"] > exposed["tensorwise"]


def test_gradient_reduction_after_the_backward_when_not_overlapped():
    d = _dump(_llama_one_gpu())
    d["cluster"]["devices_per_node"] = 4
    d["parallel"]["dp"] = 4
    d["training"]["global_batch"] = 8
    results = {}
    for overlap in (True, False):
        sc = scenario_from_mapping({**d, "parallel": {**d["parallel"], "overlap_grad_reduce": overlap,
                                                      "dp_bucket": "1 KB"}})   # a bucket per layer
        compiled, trace = simulate_with(sc, resolve_software(sc))
        tasks = compiled.graph.tasks
        reduces = [i for i, t in enumerate(tasks) if t.name.startswith("dp grad")]
        last_bwd = max(trace.end_s[i] for i, t in enumerate(tasks) if t.category == "bwd")
        results[overlap] = (len(reduces), min(trace.start_s[i] for i in reduces), last_bwd, trace.makespan_s)
    n_off, start_off, bwd_off, _ = results[False]
    assert n_off == 1 and start_off >= bwd_off - 1e-15          # one reduction, after the last backward
    assert results[True][1] < results[True][2]                   # overlapped: starts during the backward
    assert results[False][3] >= results[True][3]


def test_eager_elementwise_runs_the_frameworks_kernels_unless_compiled():
    d = {**_dump(_llama_one_gpu()), "software": {"framework": "torchtitan", "version": "2024-12", "compile": False}}
    sc = scenario_from_mapping(d)
    spec = resolve_software(sc).unfused_elementwise
    assert spec is not None and spec.norm.fwd_kernels > 1
    eager, _ = simulate_with(sc, resolve_software(sc))
    compiled, _ = simulate_with(sc, replace(resolve_software(sc), compile=True))
    norm = lambda c: [t for t in c.graph.tasks if t.name == "attn_norm"]  # noqa: E731
    assert norm(eager)[0].bytes_moved == pytest.approx(spec.norm.fwd_ratio * norm(compiled)[0].bytes_moved)
    assert norm(eager)[0].duration_s > norm(compiled)[0].duration_s


def test_p2p_sync_makes_the_host_wait_for_each_pipeline_transfer():
    d = _dump(_llama_one_gpu(pp=2))
    d["cluster"]["devices_per_node"] = 2
    d["training"]["global_batch"] = 4
    sc = scenario_from_mapping(d)
    base = eager(sc)
    synced, trace = simulate_with(sc, replace(base, p2p_sync=True))
    plain, _ = simulate_with(sc, replace(base, p2p_sync=False))
    tasks = synced.graph.tasks
    syncs = [i for i, t in enumerate(tasks) if t.name.startswith("p2p sync after send")]
    sends = [i for i, t in enumerate(tasks) if t.name.startswith("send ")]
    assert syncs and not any(t.name.startswith("p2p sync") for t in plain.graph.tasks)
    for i in syncs:   # every sync starts after a send it waited for has ended
        assert any(trace.end_s[j] <= trace.start_s[i] + 1e-15 for j in synced.graph.preds[i] if j in sends)


def test_report_lists_the_software_settings_with_their_sources():
    from hwsim.analysis.report import report_markdown
    res = run_step(scenario_from_mapping({**_dump(one_gpu()), "software": {"framework": "megatron-lm",
                                                                           "version": "2021-04"}}))
    md = report_markdown(res)
    assert "## Software stack" in md and "megatron-lm 2021-04 (profile from 2021-04)" in md
    for name, source in res.summary["software_sources"].items():
        assert f"| {name} |" in md
    assert "p2p_communication.py" in md        # a source, not only a value


def test_host_advice_prints_the_simulated_effect_of_cuda_graphs():
    from hwsim import units
    from hwsim.analysis.critical_path import Cause
    from hwsim.analysis.report import advice, bottleneck_account
    d = {**_dump(one_gpu()), "software": {"framework": "megatron-core"}}   # mcore has enable_cuda_graph
    res = run_step(scenario_from_mapping(d))
    host = next(p for p in bottleneck_account(res).parts if p.cause is Cause.HOST)
    text = advice(host, res)
    graphs = run_step(scenario_from_mapping(d, ["software.cuda_graphs=true"])).summary["step_time_s"]
    assert f"(--set software.cuda_graphs=true): simulated {units.fmt_time(graphs)} per step" in text
    assert graphs < res.summary["step_time_s"]


def test_host_advice_never_offers_cuda_graphs_to_megatron_deepspeed():
    # DeepSpeed 0.9.5's training engine has no CUDA-graph capture (only its inference engine does)
    from hwsim.analysis.critical_path import Cause
    from hwsim.analysis.report import advice, bottleneck_account
    res = run_step(scenario_from_mapping({**_dump(one_gpu()), "software": {"framework": "megatron-deepspeed"}}))
    host = next(p for p in bottleneck_account(res).parts if p.cause is Cause.HOST)
    text = advice(host, res)
    assert "(--set software.cuda_graphs=true)" not in text
    assert "megatron-deepspeed does not offer software.cuda_graphs" in text


def test_output_layer_outside_fp8_runs_its_gemm_in_16_bits():
    d = _dump(_llama_one_gpu())
    d["training"]["precision"] = "fp8"
    d["model"].update(hidden=4096, heads=32, kv_heads=8, ffn_hidden=14336, vocab=128256, seq_len=4096, layers=1)
    sc = scenario_from_mapping(d)
    logits = {}
    for flag in (True, False):
        compiled, _ = simulate_with(sc, replace(resolve_software(sc), fp8_output_layer=flag))
        logits[flag] = next(t.duration_s for t in compiled.graph.tasks if t.name == "logits" and t.kind is TaskKind.COMPUTE)
    assert logits[False] > logits[True]


def test_deepspeed_fp16_overflow_check_reads_every_gradient_tensor_back():
    from hwsim.workload.memory import stage_param_tensors
    sc = scenario_from_mapping({**_dump(one_gpu(precision="fp16")), "software": {"framework": "megatron-deepspeed"}})
    compiled, trace = simulate_with(sc, resolve_software(sc))
    tasks = compiled.graph.tasks
    checks = [i for i, t in enumerate(tasks) if t.name.startswith("overflow check t")]
    reads = [i for i, t in enumerate(tasks) if t.name.startswith("overflow check read")]
    assert len(checks) == len(reads) == stage_param_tensors(sc.model, 1, 0)
    for c, r in zip(checks, reads):   # the host waits for each tensor's check before the next
        assert trace.start_s[r] >= trace.end_s[c] - 1e-15
    bf16 = scenario_from_mapping({**_dump(one_gpu()), "software": {"framework": "megatron-deepspeed"}})
    assert not any(t.name.startswith("overflow check") for t in simulate_with(bf16, resolve_software(bf16))[0].graph.tasks)


def test_presets_software_lists_every_framework_profile():
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-m", "hwsim.cli", "presets", "software"], capture_output=True,
                         text=True, timeout=120, env={"COLUMNS": "200", "PATH": ""})
    assert res.returncode == 0, res.stderr
    for name in known_frameworks():
        assert name in res.stdout
        for profile in load_framework(name).profiles:
            assert profile.from_ in res.stdout


def test_plan_space_names_what_a_framework_cannot_run():
    from hwsim.software.profiles import PlanSpace
    from hwsim.workload.plan import resolve_plan
    space = PlanSpace(cp=False, zero_stages=(0,), recompute=("none", "full"), source="a test plan space")
    d = _dump(_llama_one_gpu(recompute="selective"))
    d["cluster"]["devices_per_node"] = 4
    d["parallel"].update(dp=2, cp=2, zero_stage=1)
    d["training"]["global_batch"] = 4
    plan = resolve_plan(scenario_from_mapping(d))
    bad = space.violations(plan)
    assert any("parallel.cp=2" in b for b in bad) and any("zero_stage=1" in b for b in bad)
    assert any("recompute=selective" in b for b in bad)
    d["parallel"].update(cp=1, dp=4, zero_stage=0, recompute="full")
    assert space.violations(resolve_plan(scenario_from_mapping(d))) == []


def test_planner_ranks_only_plans_the_framework_offers():
    from hwsim.studies.planner import SearchSpace, plan_search
    d = _dump(_llama_one_gpu())
    d["cluster"]["devices_per_node"] = 4
    d["parallel"].update(dp=4)
    d["training"]["global_batch"] = 8
    d["software"] = {"framework": "megatron-lm", "version": "2021-04"}   # plain data parallel only
    sc = scenario_from_mapping(d)
    report = plan_search(sc, SearchSpace(micro_batch=(1,), recompute=(Recompute.NONE,)), max_simulations=3)
    assert report.counts.get("framework", 0) > 0
    offered = resolve_software(sc).plan_space
    assert report.ranked and all(r.candidate.zero_stage in offered.zero_stages
                                 for r in report.ranked if r is not report.baseline)
    # Megatron-LM 2021 had no sequence parallelism: its tp plans are enumerated without it
    from hwsim.studies.planner import enumerate_candidates
    tp_plans = [c for c in enumerate_candidates(sc, SearchSpace(micro_batch=(1,))) if c.tp > 1]
    assert tp_plans and not any(c.sequence_parallel for c in tp_plans)


def test_run_says_when_the_framework_cannot_run_the_plan(tmp_path):
    import subprocess
    import sys
    import yaml as _yaml
    d = _dump(_llama_one_gpu())
    d["cluster"]["devices_per_node"] = 2
    d["parallel"].update(dp=2, zero_stage=1)
    d["software"] = {"framework": "torchtitan", "version": "2024-12"}   # FSDP2: zero 0, 2, 3
    path = tmp_path / "s.yaml"
    path.write_text(_yaml.safe_dump(d))
    res = subprocess.run([sys.executable, "-m", "hwsim.cli", "run", str(path)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert "cannot run this plan" in " ".join(res.stderr.split()) and "zero_stage=1" in res.stderr


def test_torchao_casts_both_operands_of_every_fp8_gemm():
    from hwsim.workload import ops as O
    from hwsim.workload.plan import resolve_plan
    from hwsim.workload.shard import Shard
    from hwsim.workload.work import TORCHAO_CAST_BYTES, TORCHAO_ROWWISE_POSTSCALE_BYTES, time_ops
    d = _dump(_llama_one_gpu())
    d["training"]["precision"] = "fp8"
    sc = scenario_from_mapping(d)
    plan, kernels = resolve_plan(sc), KernelModel(sc.cluster.accelerator)
    sh = Shard(micro_batch=1, seq_len=sc.model.seq_len, tp=1, cp=1, ep=1, sequence_parallel=False, dtype_bytes=2,
               fp8=True)
    gemms = [o for o in O.layer_backward_ops(sc.model, sh, False) if o.kind == O.OpKind.GEMM]
    for op in gemms:
        (m, n, k), b = op.gemm, op.gemm_batch
        base = kernels.gemm_time_s(m, n, k, Dtype.FP8, batch=b)
        tensorwise = time_ops([op], kernels, plan, "bwd", "tensorwise", fp8_casts="torchao")[0].duration_s
        rowwise = time_ops([op], kernels, plan, "bwd", "rowwise", fp8_casts="torchao")[0].duration_s
        assert tensorwise == pytest.approx(base + kernels.memory_time_s(TORCHAO_CAST_BYTES * (m * k + k * n) * b))
        assert rowwise == pytest.approx(tensorwise + kernels.memory_time_s(TORCHAO_ROWWISE_POSTSCALE_BYTES * m * n * b))


def test_compare_shows_each_variants_software():
    from hwsim.analysis.compare import compare_summaries
    d = {**_dump(one_gpu()), "software": {"framework": "torchtitan", "version": "2024-12"}}
    a = run_step(scenario_from_mapping(d)).summary
    b = run_step(scenario_from_mapping(d, ["software.compile=true"])).summary
    table = compare_summaries(["eager", "compiled"], [a, b])
    row = next(line for line in table.splitlines() if line.startswith("| software |"))
    assert "host eager" in row and "host compiled" in row


def test_separate_gradient_accumulation_adds_every_micro_batch():
    from hwsim.workload.shard import layer_param_count
    sc = _llama_one_gpu()
    fused, _ = simulate_with(sc, replace(resolve_software(sc), grad_accumulation="fused"))
    sep_sw = replace(resolve_software(sc), grad_accumulation="separate")
    separate, _ = simulate_with(sc, sep_sw)
    adds = [t for t in separate.graph.tasks if t.name == "grad_accumulate"]
    assert not any(t.name == "grad_accumulate" for t in fused.graph.tasks)
    n_micro = sc.training.global_batch // sc.training.micro_batch
    assert len(adds) == sc.model.layers * n_micro
    per_layer = layer_param_count(sc.model, False, 1, 1) * (2 + 2 * sep_sw.grad_reduce_bytes)
    assert all(t.bytes_moved == pytest.approx(per_layer) for t in adds)


def test_megatron_deepspeed_layer_forward_blocks_on_the_gpu_before_its_mlp():
    """Megatron-DeepSpeed's ParallelTransformerLayer.forward builds moe_loss and mlp_bias with
    torch.tensor(0.0, device=...) before its MLP: two blocking H2D copies (cudaStreamSynchronize),
    in the forward and again in the full-recompute forward. The MLP's first GEMM is launched only
    after the attention half has finished on the GPU, plus 2 x host_sync_s."""
    sc = scenario_from_mapping({**_dump(one_gpu(precision="fp16")), "software": {"framework": "megatron-deepspeed"},
                                "parallel": {"tp": 1, "pp": 1, "dp": 1, "recompute": "full"}})
    software = resolve_software(sc)
    assert software.layer_ops.forward_host_syncs == 2
    compiled, trace = simulate_with(sc, software)
    tasks = compiled.graph.tasks
    syncs = [i for i, t in enumerate(tasks) if t.name == "host sync before mlp_up"]
    assert len(syncs) == 2 * sc.model.layers * 2          # 2 layers x 2 micro-batches x (fwd + recompute)
    for s in syncs:
        assert tasks[s].duration_s == pytest.approx(2 * load_host_costs().host_sync_s)
        layer, mb = tasks[s - 1].layer, tasks[s - 1].micro_batch
        attn = [i for i, t in enumerate(tasks[:s]) if t.kind is TaskKind.COMPUTE and t.layer == layer
                and t.micro_batch == mb and t.name == "mlp_norm"]
        assert attn and trace.start_s[s] >= trace.end_s[attn[-1]] - 1e-15
    plain = eager(sc)   # a stack without the counts: no such sync
    assert not any(t.name.startswith("host sync before") for t in simulate_with(sc, plain)[0].graph.tasks)


def test_a_what_if_is_refused_only_for_what_it_adds_that_the_framework_lacks():
    # The user ran megatron-deepspeed with CUDA graphs on (it offers none): every what-if inherits that
    # choice, and must not be refused for it; one that adds another missing feature still is.
    from hwsim.analysis.suggest import Suggestion, simulate_suggestions
    d = {**_dump(one_gpu(global_batch=4)), "parallel": {"tp": 1, "pp": 1, "dp": 1, "recompute": "full"},
         "software": {"framework": "megatron-deepspeed", "cuda_graphs": True}}
    res = run_step(scenario_from_mapping(d))
    allowed = Suggestion("no recompute", ("parallel.recompute=none",))
    new_gap = Suggestion("selective recompute", ("parallel.recompute=selective",))
    ok, refused = simulate_suggestions(res, [allowed, new_gap])
    assert not ok.not_offered and ok.step_time_s is not None
    assert ok.step_time_s == run_step(scenario_from_mapping(d, list(allowed.overrides))).summary["step_time_s"]
    assert refused.not_offered and refused.rejected.startswith("megatron-deepspeed does not offer")
    assert "recompute" in refused.rejected and "cuda_graphs" not in refused.rejected
