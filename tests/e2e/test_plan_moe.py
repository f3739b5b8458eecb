"""`hwsim plan` for DeepSeek-V3 on 256 GB200 (issue 13): the GB200 default node is an NVL72 compute
tray, the search tries expert tensor parallelism as well as expert parallelism, so it finds
fitting plans and returns one whose experts are folded over the attention ranks (MoE parallel
folding), says why, and shows the all-to-all's share of the step; and it does so in well under a
minute on two cores."""

import json
import subprocess
import sys
import time

from tests.conftest import REPO


def test_plan_deepseek_v3_on_256_gb200_returns_a_folded_ep_layout(tmp_path):
    out = tmp_path / "plan.json"
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "hwsim.cli", "plan", "--model", "deepseek-v3", "--accelerator",
                          "gb200", "--devices", "256", "--global-batch", "1024", "--max-simulations", "16",
                          "--workers", "2", "--json", str(out)],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    elapsed = time.perf_counter() - start
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert elapsed < 150, f"hwsim plan took {elapsed:.0f} s"
    report = json.loads(out.read_text())
    assert report["ranked"], "no fitting plan"
    best = report["ranked"][0]
    par = best["parallel"]
    assert best["summary"]["fits_in_memory"]
    assert par["ep"] > 1
    tp, cp, dp, ep, etp = par["tp"], par["cp"], par["dp"], par["ep"], par["etp"]
    assert (tp * cp * dp) % (etp * ep) == 0                       # etp·ep laid over a stage's tp·cp·dp ranks
    assert (dp * cp) % ep != 0 or etp != tp, par                  # ... and folded: not the attention layout
    # the scenario it would run: 4-GPU NVL72 trays, 256 GPUs as 4 racks of 64 (the same share of every rack)
    cluster = best["scenario"]["cluster"]
    assert cluster["devices_per_node"] == 4 and cluster["nodes"] == 64 and cluster["nvlink_domain"] == 64
    # the reasons and the all-to-all's share of the step
    assert "folded (MoE parallel folding" in res.stdout
    assert "all-to-all (exposed_comm.ep)" in res.stdout and "inside one NVLink domain" in res.stdout
    assert best["summary"]["breakdown"]["exposed_comm.ep"] > 0


def test_job_nvlink_domain_takes_equal_whole_node_shares_of_each_rack():
    from hwsim.studies.planner import job_nvlink_domain

    assert job_nvlink_domain(256, 4, 72) == 64       # 4 racks of 16 trays, not 3 full racks and 40 GPUs
    assert job_nvlink_domain(100, 4, 72) == 20       # 5 racks of 5 trays
    assert job_nvlink_domain(288, 4, 72) is None     # whole racks
    assert job_nvlink_domain(64, 4, 72) is None      # inside one rack
    assert job_nvlink_domain(256, 8, None) is None   # 8-GPU nodes: the node is the domain


def _moe_scenario(devices=32, accelerator="h100-sxm"):
    from hwsim.studies.commands import _build_scenario

    return _build_scenario(None, "qwen3-30b-a3b", accelerator, devices, None, 2048, 256, None, None,
                           ["model.layers=8"])


def test_search_tries_expert_tensor_parallelism_and_folds():
    from hwsim.config.schema import Recompute
    from hwsim.studies.planner import SearchSpace, enumerate_candidates
    from hwsim.workload.plan import resolve_plan

    sc = _moe_scenario()
    space = SearchSpace(pp=(1,), cp=(1,), zero_stages=(1,), recompute=(Recompute.FULL,), micro_batch=(1,))
    cands = list(enumerate_candidates(sc, space))
    assert len(cands) == len(set(cands))
    assert {c.etp for c in cands if c.tp == 4} == {1, 4}          # 1 and Megatron-Core's default, tp
    folded = [c for c in cands if (c.dp * c.cp) % c.ep]
    assert folded and all(c.etp < c.tp and c.folded for c in folded)   # ep over tp ranks needs etp < tp
    for c in folded:
        plan = resolve_plan(c.apply(sc))
        assert plan.etp == c.etp and plan.edp * c.etp * c.ep == c.tp * c.cp * c.dp
        assert "etp" in c.label


def test_memory_pruning_by_micro_batch_recompute_and_static_memory_is_sound(monkeypatch):
    """The plans the search skips as over memory without estimating them are over memory."""
    from hwsim.studies.commands import _build_scenario
    from hwsim.studies.planner import SearchSpace, _enumerate, plan_search
    from hwsim.studies.screen import Estimator

    sc = _build_scenario(None, "qwen3-30b-a3b", "h100-sxm", 8, None, 4096, 256, None, None, ["model.layers=24"])
    space = SearchSpace(cp=(1,), virtual_stages=(2,))
    est, cap = Estimator.of(sc), sc.cluster.accelerator.hbm
    counts, fits, over = {}, 0, 0
    for _, plan in _enumerate(sc, space, counts):
        if est.memory_bytes(plan) <= cap:
            fits += 1
        else:
            over += 1
    calls = [0]
    memory_bytes = Estimator.memory_bytes

    def counted(self, plan):
        calls[0] += 1
        return memory_bytes(self, plan)

    monkeypatch.setattr(Estimator, "memory_bytes", counted)
    report = plan_search(sc, space, max_simulations=1, include_baseline=False)
    c = report.counts
    assert over > 100 and fits > 100
    assert c["over_memory_estimate"] == over
    assert c["fit_estimate"] + c.get("dominated", 0) == fits
    assert c["enumerated"] == counts["enumerated"]
    assert calls[0] < fits + over - 100      # ... and many were not estimated
