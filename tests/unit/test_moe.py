"""MoE parallel folding, the dispatchers' traffic, MLA and sliding-window op counts, and NVLink
domains spanning nodes."""

from __future__ import annotations

import math

import pytest

from hwsim.config.loader import scenario_from_mapping
from hwsim.config.schema import ClusterConfig, ModelConfig
from hwsim.errors import ConfigError, PlanError
from hwsim.hardware.topology import build_topology
from hwsim.network.collectives import CollectiveOp, collective_transfers
from hwsim.workload import moe as M
from hwsim.workload import ops as O
from hwsim.workload.plan import resolve_plan
from hwsim.workload.shard import Shard, is_windowed_layer, layer_param_split


def _scenario(tp=1, cp=1, dp=None, pp=1, ep=1, etp=None, n=16, experts=16, order=None, **extra):
    par = {"tp": tp, "cp": cp, "pp": pp, "ep": ep}
    if dp is not None:
        par["dp"] = dp
    if etp is not None:
        par["etp"] = etp
    if order is not None:
        par["order"] = order
    return scenario_from_mapping({
        "cluster": {"accelerator": "h100-sxm", "nodes": max(1, n // 8), "devices_per_node": min(n, 8),
                    "intra_node": {"bandwidth": "450 GB/s"},
                    "inter_node": {"nic_bandwidth": "400 Gb/s", "nics_per_node": 8}},
        "model": {"layers": 4, "hidden": 256, "heads": 8, "ffn_hidden": 1024, "mlp": "swiglu", "vocab": 1000,
                  "seq_len": 512, "moe": {"experts": experts, "top_k": 2, "moe_ffn_hidden": 256}},
        "parallel": par, "training": {"global_batch": 64}, **extra})


def _deep(**kw):
    sc = _scenario(**kw)
    model = sc.model.model_copy(update={"layers": 16})
    return sc.model_copy(update={"model": model})


# --- folding arithmetic ------------------------------------------------------------------------

def test_folded_groups_tp2_dp4_ep4_etp1():
    """tp=2, dp=4 (8 ranks a stage), ep=4, etp=1: ep no longer divides dp·cp's 4 ranks per tp rank
    the old way; Megatron's expert generator (order tp-ep-dp-pp, sizes etp=1, ep=4, edp=2) puts ep
    on consecutive ranks, crossing the tp pairs."""
    plan = resolve_plan(_scenario(tp=2, ep=4, etp=1, n=8))
    assert (plan.tp, plan.dp, plan.etp, plan.ep, plan.edp) == (2, 4, 1, 4, 2)
    assert plan.ep_groups(0) == ((0, 1, 2, 3), (4, 5, 6, 7))
    assert plan.etp_groups(0) == tuple((r,) for r in range(8))
    assert plan.edp_groups(0) == ((0, 4), (1, 5), (2, 6), (3, 7))
    # the attention layout is unchanged: tp pairs of adjacent ranks
    assert plan.groups("tp") == ((0, 1), (2, 3), (4, 5), (6, 7))


def test_folded_groups_etp_equal_tp_is_the_old_layout():
    """etp = tp (Megatron-Core's default): the ep groups are the dp ranks sharing a tp rank."""
    plan = resolve_plan(_scenario(tp=2, ep=2, n=8))
    assert (plan.etp, plan.edp) == (2, 2)
    assert plan.ep_groups(0) == ((0, 2), (1, 3), (4, 6), (5, 7))
    assert plan.etp_groups(0) == ((0, 1), (2, 3), (4, 5), (6, 7))
    assert plan.edp_groups(0) == ((0, 4), (1, 5), (2, 6), (3, 7))
    assert plan.tpep_groups(0) == ((0, 1, 2, 3), (4, 5, 6, 7))


def test_folded_groups_with_cp_and_pp():
    """tp=2 cp=2 dp=2 pp=2 (16 ranks), ep=4 etp=2: stage 1 is stage 0 shifted by 8; ep strides by 2."""
    plan = resolve_plan(_scenario(tp=2, cp=2, pp=2, ep=4, etp=2, n=16))
    assert (plan.dp, plan.edp) == (2, 1)
    assert plan.ep_groups(0) == ((0, 2, 4, 6), (1, 3, 5, 7))
    assert plan.ep_groups(1) == ((8, 10, 12, 14), (9, 11, 13, 15))
    assert plan.etp_groups(1) == ((8, 9), (10, 11), (12, 13), (14, 15))
    assert plan.edp_groups(0) == tuple((r,) for r in range(8))


def test_every_rank_in_exactly_one_group_of_each_kind():
    plan = resolve_plan(_scenario(tp=2, cp=1, pp=2, ep=8, etp=1, n=32))
    stage = set(plan.stage_ranks(1))
    for groups, size in ((plan.ep_groups(1), 8), (plan.etp_groups(1), 1), (plan.edp_groups(1), 2)):
        members = [r for g in groups for r in g]
        assert sorted(members) == sorted(stage) and all(len(g) == size for g in groups)


def test_qwen3_235b_record_layout_is_accepted():
    """The H100 record: tp=2 pp=8 dp=16 ep=32 on 256 GPUs. Megatron-Bridge sets etp=1, so
    etp·ep = 32 = tp·dp: one ep group per stage, edp 1."""
    plan = resolve_plan(_deep(tp=2, pp=8, ep=32, etp=1, n=256, experts=128))
    assert (plan.dp, plan.ep, plan.edp) == (16, 32, 1)
    assert plan.ep_groups(0) == (tuple(range(32)),)


@pytest.mark.parametrize("kwargs, field, fix", [
    (dict(tp=2, ep=8, etp=2, n=8), "parallel.ep", "etp: 1"),          # etp·ep = 16 does not divide 8
    (dict(tp=1, ep=3, n=8, experts=12), "parallel.ep", "change ep"),   # 3 does not divide the 8 ranks
    (dict(tp=1, ep=1, etp=3, n=8), "parallel.etp", "divides"),         # etp 3 does not divide moe_ffn 256
    (dict(tp=1, ep=32, n=8), "parallel.ep", "experts"),                # ep does not divide the 16 experts
])
def test_bad_folding_names_the_field_and_the_fix(kwargs, field, fix):
    with pytest.raises(PlanError) as err:
        resolve_plan(_scenario(**kwargs))
    assert field in str(err.value) and fix in str(err.value)


def test_unknown_dispatcher_is_a_config_error():
    with pytest.raises(ConfigError, match="software.moe_dispatcher"):
        M.rank_tokens(100, 8, 2, 2, 1, "ring")
    with pytest.raises(ConfigError, match="moe_dispatcher"):
        _scenario(software={"framework": "megatron-core", "moe_dispatcher": "ring"})


def test_framework_default_etp():
    """Megatron-Bridge's recipes set etp=1; without a framework etp follows tp (Megatron-Core)."""
    assert resolve_plan(_scenario(tp=2, ep=2, n=8)).etp == 2
    bridge = _scenario(tp=2, ep=2, n=8, software={"framework": "megatron-bridge"})
    assert resolve_plan(bridge).etp == 1


# --- the all-to-all traffic ------------------------------------------------------------------

def test_expected_destination_ranks_closed_form():
    # 8 experts on 4 ranks (2 each), top-2: P(rank gets none) = C(6,2)/C(8,2) = 15/28
    assert M.expected_destination_ranks(8, 2, 4) == pytest.approx(4 * (1 - 15 / 28))
    assert M.expected_destination_ranks(8, 2, 1) == pytest.approx(1.0)
    assert M.expected_destination_ranks(256, 8, 256) == pytest.approx(8.0)     # one expert per rank


@pytest.mark.parametrize("dispatcher, per_pair", [("alltoall", 100 * 2 / 4), ("allgather", 100.0),
                                                   ("flex", 100 * 4 * (1 - 15 / 28) / 4)])
def test_a2a_traffic_matrix(dispatcher, per_pair):
    mat = M.a2a_traffic_matrix(100, 14336.0, experts=8, top_k=2, ep=4, dispatcher=dispatcher)
    assert len(mat) == 4 and all(len(row) == 4 for row in mat)
    assert all(x == pytest.approx(per_pair * 14336.0) for row in mat for x in row)
    # balanced: what a rank sends equals what it receives
    assert sum(mat[0]) == pytest.approx(sum(row[0] for row in mat))


def test_dispatch_collectives_match_the_traffic_matrix():
    """The alltoall dispatcher's all-to-all carries the matrix's row sum per rank (nccl-tests
    convention: the whole send buffer), and the direct algorithm sends S/n to each peer."""
    sc = _scenario(tp=1, ep=4, n=8)
    b, s, h = 2, 512, 256
    sh = Shard(b, s, ep=4)
    ops = {o.name: o for o in O.layer_forward_ops(sc.model, sh, True)}
    row = M.a2a_traffic_matrix(b * s, h * 2, experts=16, top_k=2, ep=4)[0]
    assert ops["moe_dispatch"].comm == ("all-to-all", "ep", pytest.approx(sum(row)))
    topo = build_topology(sc.cluster)
    # the flows (the fused all-to-all sends them as they are; NCCL's loads its NVSwitch port more,
    # at the tier's lower all-to-all efficiency: test_collectives)
    (t,) = collective_transfers(topo, CollectiveOp.ALL_TO_ALL_FUSED, [(0, 1, 2, 3)], sum(row))
    assert dict(t.link_bytes)[topo.link_id(0, "n0.nvswitch")] == pytest.approx(3 * row[1])


def test_etp_gathers_and_splits_the_expert_columns():
    sc = _scenario(tp=2, ep=2, etp=2, n=8)
    sh = Shard(2, 512, tp=2, ep=2, etp=2, sequence_parallel=True)
    ops = {o.name: o for o in O.layer_forward_ops(sc.model, sh, True)}
    routed = 2 * 512 / 2
    assert ops["moe_etp_ag"].comm == ("all-gather", "etp", routed * 2 * 2 * 256 * 2)
    m, n, k = ops["expert_gate_up"].gemm
    assert (n, k) == (2 * 256 // 2, 256) and ops["expert_gate_up"].gemm_batch == 8
    # FLOPs per rank do not depend on etp: etp times the rows, 1/etp of the columns
    one = {o.name: o for o in O.layer_forward_ops(sc.model, Shard(2, 512, tp=2, ep=2, etp=1,
                                                                 sequence_parallel=True), True)}
    assert ops["expert_gate_up"].flop == pytest.approx(one["expert_gate_up"].flop)


def test_allgather_and_flex_dispatchers():
    sc = _scenario(tp=1, ep=4, n=8)
    # flex: DeepEP-style fused kernels, not NCCL's all-to-all (their own link efficiency)
    for disp, coll in (("allgather", ("all-gather", "tpep")), ("flex", ("all-to-all-fused", "ep")),
                       ("alltoall", ("all-to-all", "ep"))):
        ops = {o.name: o for o in O.layer_forward_ops(sc.model, Shard(2, 512, ep=4, dispatcher=disp), True)}
        assert ops["moe_dispatch"].comm[:2] == coll
        bwd = {o.name for o in O.layer_backward_ops(sc.model, Shard(2, 512, ep=4, dispatcher=disp), True)}
        assert "moe_dispatch.bwd" in bwd and "moe_combine.bwd" in bwd


def test_capacity_factor_and_imbalance_scale_the_busiest_rank():
    base = M.rank_tokens(1000, 64, 8, 8, 1, "alltoall")
    assert base.received == base.sent == 8000 and base.per_expert == 8000 / 8
    skew = M.rank_tokens(1000, 64, 8, 8, 1, "alltoall", imbalance=1.5)
    assert skew.received == 12000 and skew.sent == 8000
    capped = M.rank_tokens(1000, 64, 8, 8, 1, "alltoall", imbalance=3.0, capacity_factor=1.25)
    assert capped.received == 10000


# --- parameters under expert data parallelism ----------------------------------------------

def test_expert_params_split_from_dense():
    m = _scenario().model
    dense, expert = layer_param_split(m, True, tp=1, ep=4, etp=1)
    assert expert == 16 // 4 * 3 * 256 * 256
    assert dense + expert == O.layer_param_count(m, True, 1, 4, etp=1)
    assert layer_param_split(m, False)[1] == 0.0


def test_expert_optimizer_state_is_sharded_over_edp():
    """ZeRO-1 shards dense state over dp·cp and expert state over edp (Megatron's expert
    distributed optimizer): with ep=8 over dp=8, edp=1 keeps the whole expert state."""
    from hwsim.engine.task import MemKind
    from hwsim.workload.memory import moe_static_memory_bytes
    out = moe_static_memory_bytes(1000.0, 800.0, 1, 8, 1, __import__("hwsim.config.schema").config.schema.Dtype.BF16)
    assert out[MemKind.OPTIMIZER] == 12 * 1000 / 8 + 12 * 800


# --- MLA and sliding windows -----------------------------------------------------------------

MLA = ModelConfig(layers=2, hidden=7168, heads=128, kv_heads=128, ffn_hidden=18432, mlp="swiglu", vocab=1000,
                  seq_len=4096, mla={"q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
                                     "qk_rope_head_dim": 64, "v_head_dim": 128})


def test_mla_flops_and_bytes_by_hand():
    """DeepSeek-V3's attention, b=1, s=4096, tp=1, bf16, by hand:
    q_down 2·s·7168·1536, q_up 2·s·1536·128·192, kv_down 2·s·7168·576, kv_up 2·s·512·128·256,
    o 2·s·128·128·7168; the core 2·s²·128·(192+128)·½ (causal) forward."""
    s = 4096
    ops = {o.name: o for o in O.layer_forward_ops(MLA, Shard(1, s), False)}
    assert ops["q_down"].flop == 2 * s * 7168 * 1536
    assert ops["q_up"].flop == 2 * s * 1536 * 128 * 192
    assert ops["kv_down"].flop == 2 * s * 7168 * (512 + 64)
    assert ops["kv_up"].flop == 2 * s * 512 * 128 * (128 + 128)
    assert ops["attn_proj"].flop == 2 * s * 128 * 128 * 7168
    assert ops["attn"].flop == 2 * s * s * 128 * (192 + 128) * 0.5
    # bytes of the kv up-projection: read the latent (s·512) and the weight (512·32768), write s·32768, bf16
    assert ops["kv_up"].bytes_moved == 2 * (s * 512 + 512 * 128 * 256 + s * 128 * 256)
    # the attention core keeps Q, K (d_qk) and V (d_v) per head, and the fp32 logsumexp
    assert ops["attn"].saved_bytes == 2 * s * 128 * (2 * 192 + 128) + 4 * s * 128
    # parameters: 187.1M of attention matrices + the two latent norms
    dense, _ = layer_param_split(MLA, False)
    attn = 7168 * 1536 + 1536 * 128 * 192 + 7168 * 576 + 512 * 128 * 256 + 128 * 128 * 7168
    assert dense == attn + 1536 + 512 + 2 * 7168 + 3 * 7168 * 18432


def test_mla_model_flops_are_the_op_sum():
    sh = Shard(1, 4096)
    per_mb = sum(o.model_flop for i in range(MLA.layers) for o in (*O.layer_forward_ops(MLA, sh, False),
                                                                  *O.layer_backward_ops(MLA, sh, False)))
    per_mb += sum(o.model_flop for part in (*O.embedding_ops(MLA, sh), *O.head_ops(MLA, sh)) for o in part)
    assert per_mb == pytest.approx(O.model_flop_per_step(MLA, 1))


def test_mla_tp_splits_the_up_projections_only():
    ops = {o.name: o for o in O.layer_forward_ops(MLA, Shard(1, 4096, tp=8), False)}
    assert ops["q_down"].gemm[1] == 1536 and ops["kv_down"].gemm[1] == 576
    assert ops["q_up"].gemm[1] == 16 * 192 and ops["kv_up"].gemm[1] == 16 * 256


def test_sliding_window_layers_and_flops():
    gpt_oss = ModelConfig(layers=4, hidden=256, heads=8, head_dim=32, ffn_hidden=256, mlp="swiglu", vocab=100,
                          seq_len=1024, sliding_window={"window": 128, "every": 2})
    assert [is_windowed_layer(gpt_oss, i) for i in range(4)] == [True, False, True, False]
    w, s = 128, 1024
    win = {o.name: o for o in O.layer_forward_ops(gpt_oss, Shard(1, s), False, windowed=True)}["attn"]
    full = {o.name: o for o in O.layer_forward_ops(gpt_oss, Shard(1, s), False)}["attn"]
    assert win.flop == 4 * 8 * 32 * (s * w - w * (w - 1) / 2)
    assert full.flop == 4 * 8 * 32 * s * s / 2
    sh = Shard(1, s)
    per_mb = sum(o.model_flop for i in range(4)
                 for o in (*O.layer_forward_ops(gpt_oss, sh, False, windowed=is_windowed_layer(gpt_oss, i)),
                           *O.layer_backward_ops(gpt_oss, sh, False, windowed=is_windowed_layer(gpt_oss, i))))
    per_mb += sum(o.model_flop for part in (*O.embedding_ops(gpt_oss, sh), *O.head_ops(gpt_oss, sh)) for o in part)
    assert per_mb == pytest.approx(O.model_flop_per_step(gpt_oss, 1))


# --- NVLink domains spanning nodes -----------------------------------------------------------

def _nvl(nodes=36, domain=72, inter=True):
    return ClusterConfig(accelerator=scenario_from_mapping({"cluster": {"accelerator": "gb200", "intra_node": {
        "bandwidth": "900 GB/s"}}, "model": "llama3-8b", "training": {"global_batch": 8}}).cluster.accelerator,
        nodes=nodes, devices_per_node=4, nvlink_domain=domain, intra_node={"bandwidth": "900 GB/s"},
        inter_node={"nic_bandwidth": "400 Gb/s", "nics_per_node": 4} if inter else None)


def test_nvl72_devices_of_a_rack_share_one_switch():
    topo = build_topology(_nvl())
    assert topo.domain_of(71) == 0 and topo.domain_of(72) == 1 and topo.node_of(71) == 17
    route = topo.route(0, 71)   # trays 0 and 17 of rack 0: NVLink, no NIC
    assert [topo.links[i].tier.value for i in route] == ["nvlink", "nvlink"]
    assert any(topo.links[i].tier.value == "network" for i in topo.route(0, 72))


def test_collectives_group_by_domain():
    """An all-to-all among 16 GPUs of 4 trays of one NVL72 rack never touches a NIC; the same
    group on 8-GPU-per-domain nodes crosses the network."""
    topo = build_topology(_nvl())
    group = tuple(range(0, 64, 4))
    (t,) = collective_transfers(topo, CollectiveOp.ALL_TO_ALL, [group], 1e6)
    assert all(topo.links[link].tier.value == "nvlink" for link, _ in t.link_bytes)
    narrow = build_topology(_nvl(domain=4))
    (t2,) = collective_transfers(narrow, CollectiveOp.ALL_TO_ALL, [group], 1e6)
    assert any(narrow.links[link].tier.value == "network" for link, _ in t2.link_bytes)


def test_nvlink_domain_must_hold_whole_nodes():
    with pytest.raises(Exception, match="multiple of devices_per_node"):
        _nvl(domain=70)


def test_folded_and_unfolded_agree_with_ep_folding():
    from hwsim.simulate import run_step
    sc = _scenario(tp=2, ep=4, etp=1, n=8, pp=1)
    folded = run_step(sc, fold=True).summary["step_time_s"]
    full = run_step(sc, fold=False).summary["step_time_s"]
    assert folded == pytest.approx(full, rel=1e-6)
    assert math.isfinite(folded)
