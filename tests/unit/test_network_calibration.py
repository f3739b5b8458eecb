"""The network model against published nccl-tests figures (presets/network/transports.yaml).

Efficiencies were set from one measurement each (the `source` of transports.yaml); the checks
marked "check" compare with a different measurement than the one the number came from.
"""

import pytest

from hwsim.config.schema import ClusterConfig
from hwsim.network.benchmark import collective_table
from hwsim.units import GB, GiB


def accelerator(host_bandwidth):
    return dict(name="test-gpu", peak=dict(fp32="10 TFLOPS", fp16="100 TFLOPS"), hbm="80 GB",
                hbm_bandwidth="2 TB/s", host_bandwidth=host_bandwidth)


def dgx(nvlink, nodes=1, nic=None, host="32 GB/s", devices_per_node=8):
    data = dict(accelerator=accelerator(host), nodes=nodes, devices_per_node=devices_per_node,
                intra_node=dict(kind="switch", bandwidth=nvlink))
    if nodes > 1:
        data["inter_node"] = dict(kind="fat-tree", nics_per_node=8, nic_bandwidth=nic)
    return ClusterConfig.model_validate(data)


def busbw(cluster, size, op="all-reduce", group="all"):
    return collective_table(cluster, op, group, [size])[0]["busbw_bytes_per_s"]


# 8x A100 SXM, NVSwitch, all_reduce_perf busbw ~230 GB/s at large sizes:
# NVIDIA/nccl-tests issue #149 (S. Jeaugey, NVIDIA, 2023-07-05).
A100_NODE_BUSBW = 230 * GB
# DGX A100, 8x 200 Gb/s HDR IB NICs, multi-node all-reduce busbw 192 GB/s:
# NVIDIA/nccl issue #812 (D. Addison, NVIDIA, 2023-03-30). Check: the network efficiency was set
# from the per-NIC figure of NVIDIA/nccl issue #412 (~24 GB/s per HDR NIC), not from this one.
DGX_A100_MULTI_NODE_BUSBW = 192 * GB
# 8x H100 SXM ring all-reduce (NCCL_ALGO=RING) busbw ~370 GB/s: NVIDIA/nccl-tests issue #212
# (S. Jeaugey); check: NVIDIA/nccl issue #1455, 365-370 GB/s measured for 2 to 8 GPUs.
H100_NODE_RING_BUSBW = 367.5 * GB
# 8x A800 (8 NVLink3 links, 200 GB/s per direction) ~160 GB/s: NVIDIA/nccl issue #412 (check of
# the A100 NVLink3 point, which was set from 300 GB/s parts).
A800_NODE_BUSBW = 160 * GB
# NDR 400 Gb/s (ConnectX-7): 46-48 GB/s per NIC, NVIDIA/nccl-tests issue #290 (D. Addison, 2025);
# a DGX H100 with 8 of them: 8 x 47 GB/s.
DGX_H100_MULTI_NODE_BUSBW = 8 * 47 * GB
# all-to-all "cannot aggregate the bandwidth of multiple NICs ... the performance of a single
# NIC": NVIDIA/nccl-tests issue #267 (S. Jeaugey, 2024-11-19); HDR: ~24 GB/s (nccl issue #412).
HDR_ALL_TO_ALL_BUSBW = 24 * GB
# NCCL all-to-all through an NVSwitch, below the ring (the all_to_all_efficiency points):
# 4x H100 80GB HBM3, alltoall_perf out-of-place busbw 334.90 GB/s at 500 MB (NVIDIA/nccl issue
# #2169, NCCL 2.30); GB300 NVL72 (OCI quickstart "NVIDIA GB300", NCCL 2.28.7): 685.06 GB/s on 8
# GPUs at 16 GiB (the source of the 900 GB/s point) and 666.92 GB/s on 64 GPUs (a check).
H100_4GPU_ALL_TO_ALL_BUSBW = 334.90 * GB
GB300_8GPU_ALL_TO_ALL_BUSBW = 685.06 * GB
GB300_64GPU_ALL_TO_ALL_BUSBW = 666.92 * GB


def test_a100_node_all_reduce_busbw_at_1_gib():
    simulated = busbw(dgx("300 GB/s"), 1 * GiB)
    assert simulated == pytest.approx(A100_NODE_BUSBW, rel=0.10)


def test_16_dgx_a100_nodes_all_reduce_busbw():
    cluster = dgx("300 GB/s", nodes=16, nic="200 Gb/s")
    assert busbw(cluster, 8 * GiB) == pytest.approx(DGX_A100_MULTI_NODE_BUSBW, rel=0.15)
    assert busbw(cluster, 1 * GiB) == pytest.approx(DGX_A100_MULTI_NODE_BUSBW, rel=0.15)


def test_check_h100_node_ring_busbw():
    assert busbw(dgx("450 GB/s"), 4 * GiB) == pytest.approx(H100_NODE_RING_BUSBW, rel=0.05)


def test_check_a800_node_busbw():
    assert busbw(dgx("200 GB/s"), 8 * GiB) == pytest.approx(A800_NODE_BUSBW, rel=0.10)


def test_check_dgx_h100_multi_node_busbw():
    cluster = dgx("450 GB/s", nodes=16, nic="400 Gb/s", host="64 GB/s")
    assert busbw(cluster, 8 * GiB) == pytest.approx(DGX_H100_MULTI_NODE_BUSBW, rel=0.10)


def test_check_multi_node_all_to_all_is_one_nic():
    # 16 nodes: 120 of each rank's 127 peers are remote, so the NIC is nearly all of it (the
    # NVLink share lifts busbw a little above one NIC, as the same issue says).
    cluster = dgx("300 GB/s", nodes=16, nic="200 Gb/s")
    assert busbw(cluster, 1 * GiB, op="all-to-all") == pytest.approx(HDR_ALL_TO_ALL_BUSBW, rel=0.15)


def test_nccl_all_to_all_through_an_nvswitch_runs_below_the_ring():
    assert busbw(dgx("450 GB/s"), 500e6, op="all-to-all", group=4) == pytest.approx(
        H100_4GPU_ALL_TO_ALL_BUSBW, rel=0.03)
    assert busbw(dgx("900 GB/s"), 16 * GiB, op="all-to-all") == pytest.approx(
        GB300_8GPU_ALL_TO_ALL_BUSBW, rel=0.03)


def test_check_gb300_64_gpu_all_to_all():
    cluster = dgx("900 GB/s", devices_per_node=64)
    assert busbw(cluster, 16 * GiB, op="all-to-all") == pytest.approx(GB300_64GPU_ALL_TO_ALL_BUSBW, rel=0.05)


def test_busbw_grows_with_size_towards_the_plateau():
    rows = collective_table(dgx("300 GB/s"), "all-reduce", "node", [2**k for k in range(10, 34, 4)])
    values = [r["busbw_bytes_per_s"] for r in rows]
    assert values == sorted(values)
    assert values[-1] < A100_NODE_BUSBW * 1.01
