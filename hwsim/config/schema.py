"""The scenario schema (SCENARIO_FORMAT.md, version 1.1, and its extensions).

Pydantic models, frozen and closed (`extra="forbid"`): a typo is an error naming the field.
Quantities accept human units through `hwsim.units`; inside they are SI floats.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PositiveInt, model_validator

from hwsim import units
from hwsim.config.reliability import ReliabilityConfig

Bytes = Annotated[float, BeforeValidator(units.parse_bytes)]
BytesPerS = Annotated[float, BeforeValidator(units.parse_rate)]
FlopPerS = Annotated[float, BeforeValidator(units.parse_flop_rate)]
Seconds = Annotated[float, BeforeValidator(units.parse_time)]
Watts = Annotated[float, BeforeValidator(units.parse_power)]


def _above_zero(example: str):
    """An AfterValidator for a rate or capacity that has no meaning at 0 (a link that moves
    nothing, a device with no memory or compute): the step would wait on it for ever."""
    def check(value: float) -> float:
        if value <= 0:
            raise ValueError(f"must be greater than 0 (at 0 nothing moves or runs and the step never ends); "
                             f"give the real figure, e.g. {example!r}")
        return value
    return AfterValidator(check)


PositiveBytes = Annotated[float, BeforeValidator(units.parse_bytes), _above_zero("80 GB")]
PositiveBytesPerS = Annotated[float, BeforeValidator(units.parse_rate), _above_zero("450 GB/s")]
PositiveFlopPerS = Annotated[float, BeforeValidator(units.parse_flop_rate), _above_zero("989 TFLOPS")]

# Upper bounds on the sizes that multiply a step's task graph (the compiler makes tasks per
# layer, per pipeline stage and per micro-batch; hwsim.workload.plan bounds the micro-batches).
# Far above any real model: the deepest published transformers have ~1,000 layers (DeepNet,
# Wang et al. 2022); frontier LLMs 61-128 (DeepSeek-V3 61, Llama 3 405B 126, GPT-3 96).
# Measured (folded step, SMALL test model, pp=2): 1,000 layers 0.45 s, 10,000 layers 4.5 s and
# ~8.5 tasks per layer, so 4,096 layers keep one simulated step to ~2 s.
MAX_LAYERS = 4096


def _at_most_layers(value: int) -> int:
    if value > MAX_LAYERS:
        raise ValueError(f"{value} layers is above hwsim's limit of {MAX_LAYERS} (4x the deepest published "
                         f"transformer; a step's task graph grows with the layers, so a deeper one would not "
                         f"simulate in reasonable time); give the model's real depth")
    return value


Layers = Annotated[int, Field(gt=0), AfterValidator(_at_most_layers)]

# The most devices a cluster may have: the network topology is built for every device, even
# when the step is folded. Measured (SMALL test model, pp=2, folded): 8,192 devices 1.2 s,
# 131,072 devices 24 s, 524,288 devices 148 s and 6.8 GB resident. 2**19 is ~2.5x the largest
# clusters built (~200,000 GPUs) and keeps one step to minutes; far above, a step never ends.
MAX_DEVICES = 2**19


class _Closed(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


class Dtype(StrEnum):
    FP32 = "fp32"
    TF32 = "tf32"
    FP16 = "fp16"
    BF16 = "bf16"
    FP8 = "fp8"


class IntraKind(StrEnum):
    SWITCH = "switch"
    RING = "ring"
    MESH = "mesh"
    PCIE = "pcie"


class InterKind(StrEnum):
    FAT_TREE = "fat-tree"
    RAIL_OPTIMIZED = "rail-optimized"
    TORUS = "torus"


class MlpKind(StrEnum):
    GELU = "gelu"
    SWIGLU = "swiglu"


class Schedule(StrEnum):
    GPIPE = "gpipe"
    ONE_F_ONE_B = "1f1b"
    INTERLEAVED = "interleaved"
    ZERO_BUBBLE = "zero-bubble"


class AttentionKernel(StrEnum):
    FLASH = "flash"        # fused, no s×s scores in memory (FlashAttention-2 class)
    FLASH3 = "flash3"      # fused, Hopper's asynchronous kernels (FlashAttention-3 / cuDNN fused attention class)
    FLASH_TRITON = "flash-triton"  # fused, the 2022-23 FlashAttention kernel in Triton (llm-foundry attn_impl: triton)
    UNFUSED = "unfused"    # QKᵀ and PV as batched GEMMs, softmax/mask/dropout over the s×s scores in HBM


class Recompute(StrEnum):
    NONE = "none"
    SELECTIVE = "selective"
    FULL = "full"


class PeakConfig(_Closed):
    """Dense peak compute per dtype (no structured sparsity)."""

    fp32: PositiveFlopPerS
    tf32: PositiveFlopPerS | None = None
    fp16: PositiveFlopPerS
    bf16: PositiveFlopPerS | None = None
    fp8: PositiveFlopPerS | None = None


class AcceleratorConfig(_Closed):
    name: str
    description: str = ""
    peak: PeakConfig
    hbm: PositiveBytes
    hbm_bandwidth: PositiveBytesPerS
    l2_cache: Bytes = 0.0
    sm_count: PositiveInt = 1
    tdp: Watts = 0.0
    power_limit: Watts | None = Field(None, gt=0, description="board power cap below the TDP (v1.1), e.g. 500 W")
    price_per_hour: float = Field(0.0, ge=0, description="USD per device-hour")
    host_bandwidth: PositiveBytesPerS = Field(default=32e9, description="host link per direction (PCIe/C2C)")
    kernel_profile: str = Field("", description="name of the kernel-efficiency data; default: the preset's name")
    sources: dict[str, str] = Field(default_factory=dict)


    @model_validator(mode="after")
    def _power_limit_at_most_tdp(self) -> "AcceleratorConfig":
        if self.power_limit is not None and self.tdp > 0 and self.power_limit > self.tdp * (1 + 1e-9):
            raise ValueError(f"power_limit {self.power_limit:g} W is above the board's TDP {self.tdp:g} W: "
                             f"a power limit caps the board below its TDP; lower it or drop it")
        return self


class IntraNodeConfig(_Closed):
    kind: IntraKind = IntraKind.SWITCH
    bandwidth: PositiveBytesPerS
    latency: Seconds = 1e-6


class InterNodeConfig(_Closed):
    kind: InterKind = InterKind.FAT_TREE
    nics_per_node: PositiveInt = 1
    nic_bandwidth: PositiveBytesPerS
    latency: Seconds = 5e-6
    oversubscription: float = Field(1.0, ge=1.0)
    torus_dims: tuple[PositiveInt, ...] | None = None


class SharedPattern(StrEnum):
    ALL_REDUCE = "all-reduce"   # ring all-reduce: each NIC sends to the same NIC of the next node
    ALL_TO_ALL = "all-to-all"   # each NIC sends to the same NIC of every other node of its job
    UNIFORM = "uniform"         # each NIC sends to every NIC of the other nodes of its job


class Placement(StrEnum):
    PACKED = "packed"           # this job's nodes fill leaves in order (the fewest leaves)
    SCATTERED = "scattered"     # one node per leaf, round robin over the fabric's leaves
    RANDOM = "random"           # nodes on random free slots of the fabric (`seed`)


class NeighbourJobConfig(_Closed):
    """Another job on the same fabric, described by its traffic (hwsim extension)."""

    nodes: PositiveInt
    pattern: SharedPattern = SharedPattern.ALL_REDUCE
    load: float | None = Field(None, gt=0, le=1, description="average fraction of its NIC bandwidth it sends")
    rate: PositiveBytesPerS | None = Field(None, description="or: average rate each of its NICs sends, e.g. 100 Gb/s")

    @model_validator(mode="after")
    def _one_load(self) -> "NeighbourJobConfig":
        if (self.load is None) == (self.rate is None):
            raise ValueError("give exactly one of load (a fraction of the NIC bandwidth, e.g. 0.5) or rate "
                             "(per NIC, e.g. '100 Gb/s')")
        return self


class SharedFabricConfig(_Closed):
    """hwsim extension: the fat-tree is shared with other jobs (hwsim.hardware.shared)."""

    placement: Placement = Placement.PACKED
    seed: int = Field(0, ge=0, description="placement: random's seed")
    fabric_nodes: PositiveInt | None = Field(
        None, description="node slots of the fabric; default: this job's nodes plus the neighbours'")
    jobs: tuple[NeighbourJobConfig, ...] = Field((), description="the other jobs and their traffic")


class DeviceGroupConfig(_Closed):
    """hwsim extension: `nodes` consecutive nodes of one accelerator (cluster.groups)."""

    accelerator: AcceleratorConfig
    nodes: PositiveInt


class ClusterConfig(_Closed):
    accelerator: AcceleratorConfig
    nodes: PositiveInt = 1
    devices_per_node: PositiveInt = 8
    intra_node: IntraNodeConfig
    inter_node: InterNodeConfig | None = None
    # hwsim extension: devices sharing one scale-up (NVLink switch) domain, a multiple of
    # devices_per_node; GB200/GB300 NVL72: 72 (18 trays of 4). None: the node is the domain.
    nvlink_domain: PositiveInt | None = Field(
        None, description="devices per scale-up switch domain (NVL72: 72); default devices_per_node")
    # hwsim extensions: a fabric shared with other jobs; devices of several accelerators
    shared: SharedFabricConfig | None = Field(None, description="other jobs on the fat-tree and this job's placement")
    groups: tuple[DeviceGroupConfig, ...] | None = Field(
        None, min_length=1, description="mixed devices: consecutive nodes per accelerator, in rank order; pipeline stages "
                          "map onto them; accelerator defaults to the first group's")

    @property
    def n_devices(self) -> int:
        return self.nodes * self.devices_per_node

    @property
    def domain_size(self) -> int:
        """Devices of one scale-up domain (at most the cluster's devices)."""
        return min(self.nvlink_domain or self.devices_per_node, self.n_devices)

    @model_validator(mode="after")
    def _not_too_many_devices(self) -> "ClusterConfig":
        if self.n_devices > MAX_DEVICES:
            raise ValueError(f"nodes × devices_per_node = {self.nodes:,} × {self.devices_per_node:,} = "
                             f"{self.n_devices:,} devices is above hwsim's limit of {MAX_DEVICES:,} (~2.5x the "
                             f"largest clusters built; the network is built device by device, so a larger one "
                             f"would not simulate in reasonable time); lower cluster.nodes")
        return self

    @model_validator(mode="after")
    def _groups_and_shared(self) -> "ClusterConfig":
        if self.groups is not None:
            total = sum(g.nodes for g in self.groups)
            if total != self.nodes:
                raise ValueError(f"groups hold {total} nodes but cluster.nodes is {self.nodes}: make the groups' "
                                 f"nodes add up to cluster.nodes (or leave nodes out)")
            if self.accelerator != self.groups[0].accelerator:
                raise ValueError("accelerator differs from the first group's: with groups, each group names its "
                                 "accelerator (set groups[i].accelerator) and cluster.accelerator is the first's")
            if self.nvlink_domain not in (None, self.devices_per_node):
                raise ValueError("groups with nvlink_domain spanning nodes is not supported: drop one of them")
        if self.shared is not None:
            kind = self.inter_node.kind if self.inter_node is not None else None
            if kind != InterKind.FAT_TREE:
                raise ValueError(f"shared needs inter_node.kind: fat-tree (got {kind.value if kind else 'none'}): "
                                 f"hwsim models other jobs' traffic on the leaf-spine links of a fat-tree only")
            need = self.nodes + sum(j.nodes for j in self.shared.jobs)
            if self.shared.fabric_nodes is not None and self.shared.fabric_nodes < need:
                raise ValueError(f"shared.fabric_nodes {self.shared.fabric_nodes} is below this job's nodes plus "
                                 f"the neighbours' ({need}): raise it or leave it out")
        return self

    @model_validator(mode="after")
    def _domain_spans_whole_nodes(self) -> "ClusterConfig":
        d = self.nvlink_domain
        if d is None or d == self.devices_per_node:
            return self
        if d % self.devices_per_node:
            raise ValueError(f"nvlink_domain {d} is not a multiple of devices_per_node {self.devices_per_node}: a "
                             f"scale-up domain holds whole nodes (NVL72: 72 = 18 trays of 4); set it to a multiple")
        if d < self.devices_per_node:
            raise ValueError(f"nvlink_domain {d} is smaller than a node ({self.devices_per_node} devices)")
        if self.intra_node.kind != IntraKind.SWITCH:
            raise ValueError(f"nvlink_domain {d} spans nodes, which needs intra_node.kind: switch (the domain's "
                             f"NVLink switches); got {self.intra_node.kind.value}")
        return self


class MoeConfig(_Closed):
    experts: PositiveInt
    top_k: PositiveInt = 2
    moe_ffn_hidden: PositiveInt | None = None
    shared_experts: int = Field(0, ge=0)
    dense_layers: int = Field(0, ge=0)
    # hwsim extensions
    capacity_factor: float | None = Field(
        None, gt=0, description="token-dropping capacity per expert (x tokens·top_k/experts); None: dropless")
    imbalance: float = Field(
        1.0, ge=1.0, description="tokens of the busiest expert-parallel rank / the mean (1: balanced routing)")


class MlaConfig(_Closed):
    """Multi-head latent attention (DeepSeek-V2/V3): low-rank query and key-value projections,
    a decoupled RoPE part of the query/key head dimension."""

    q_lora_rank: PositiveInt | None = None       # None: a full-rank query projection
    kv_lora_rank: PositiveInt
    qk_nope_head_dim: PositiveInt
    qk_rope_head_dim: PositiveInt
    v_head_dim: PositiveInt


class SlidingWindowConfig(_Closed):
    """Local attention on some layers (gpt-oss: every other layer a 128-token window)."""

    window: PositiveInt
    every: PositiveInt = Field(2, description="one layer in `every` is full attention, the others windowed")


class ModelConfig(_Closed):
    name: str = ""
    description: str = ""
    layers: Layers
    hidden: PositiveInt
    heads: PositiveInt
    kv_heads: PositiveInt | None = None
    head_dim: PositiveInt | None = None
    ffn_hidden: PositiveInt
    mlp: MlpKind = MlpKind.GELU
    vocab: PositiveInt
    seq_len: PositiveInt
    tied_embeddings: bool = False
    causal: bool = True
    moe: MoeConfig | None = None
    # hwsim extensions
    mla: MlaConfig | None = None
    sliding_window: SlidingWindowConfig | None = None
    attention_sinks: bool = Field(False, description="a learned sink logit per head (gpt-oss)")
    mtp_layers: Annotated[int, Field(ge=0), AfterValidator(_at_most_layers)] = Field(
        0, description="multi-token-prediction layers after the last (DeepSeek-V3: 1)")
    sources: dict[str, str] = Field(default_factory=dict)


class ParallelConfig(_Closed):
    tp: PositiveInt = 1
    pp: PositiveInt = 1
    dp: PositiveInt | None = None
    cp: PositiveInt = 1
    ep: PositiveInt = 1
    etp: PositiveInt | None = Field(None, description="expert tensor parallel; None: the framework's default "
                                    "(Megatron-Core: tp)")
    sequence_parallel: bool = False
    virtual_stages: PositiveInt = 1
    schedule: Schedule = Schedule.ONE_F_ONE_B
    zero_stage: int = Field(0, ge=0, le=3)
    recompute: Recompute = Recompute.NONE
    order: str = Field("tp-cp-ep-dp-pp", description="rank order, fastest-varying first (Megatron)")
    dp_bucket: Bytes = Field(40e6, description="gradient bucket size for the dp reduction")
    overlap_grad_reduce: bool = True
    overlap_param_gather: bool = True


class TrainingConfig(_Closed):
    global_batch: PositiveInt
    micro_batch: PositiveInt = 1
    precision: Dtype = Dtype.BF16
    optimizer: str = "adam"
    tokens: float | None = Field(None, gt=0, description="token budget for time-to-train, cost, energy")
    attention: AttentionKernel = Field(AttentionKernel.FLASH, description="attention implementation")


class Framework(StrEnum):
    """The training stacks scenario format v1.1 names (SCENARIO_FORMAT.md, "Software")."""

    MEGATRON_LM = "megatron-lm"
    MEGATRON_CORE = "megatron-core"
    NEMO = "nemo"
    MEGATRON_BRIDGE = "megatron-bridge"
    MEGATRON_DEEPSPEED = "megatron-deepspeed"
    DEEPSPEED = "deepspeed"
    TORCHTITAN = "torchtitan"
    LLM_FOUNDRY = "llm-foundry"
    PYTORCH_FSDP = "pytorch-fsdp"
    MAXTEXT = "maxtext"
    METASEQ = "metaseq"
    CUSTOM = "custom"


class Fp8Recipe(StrEnum):
    DELAYED = "delayed"
    TENSORWISE = "tensorwise"
    ROWWISE = "rowwise"
    CURRENT = "current"
    MXFP8 = "mxfp8"
    BLOCKWISE = "blockwise"


class SelectiveRecompute(StrEnum):
    ATTENTION = "attention"   # the attention core (Korthikanti et al. 2022)
    OP = "op"                 # a per-op policy (torchtitan's "op" AC: save matmuls, recompute the rest)
    LAYER = "layer"           # every k-th layer fully recomputed


class FsdpMixedPrecision(StrEnum):
    DEFAULT = "default"       # Composer: bf16 params/compute, fp32 gradient reduce
    PURE = "pure"             # Composer: bf16 params, compute and gradient reduce
    FULL = "full"             # Composer: fp32 everywhere


class LossKind(StrEnum):
    FUSED = "fused-vocab-parallel"   # Megatron/TE vocab-parallel cross-entropy: no fp32 copy of the logits
    FP32_UPCAST = "fp32-upcast"      # logits cast to fp32 before torch cross_entropy


class MoeDispatcher(StrEnum):
    """Megatron-Core's moe_token_dispatcher_type (megatron/core/transformer/moe/token_dispatcher.py)."""

    ALLTOALL = "alltoall"     # permute, all-to-all over ep, (all-gather over etp), sort by expert
    ALLGATHER = "allgather"   # all-gather every token over ep·etp, mask locally, reduce-scatter back
    FLEX = "flex"             # fused DeepEP / HybridEP kernels: permute inside the communication


class ReduceDtype(StrEnum):
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


def _version_text(value):
    return None if value is None else str(value)


class SoftwareConfig(_Closed):
    """The training stack a step runs on (v1.1). An absent setting is the framework version's
    own default, resolved by hwsim.software from its profile (each value with its source)."""

    framework: Framework = Framework.CUSTOM
    version: Annotated[str | None, BeforeValidator(_version_text)] = None
    compile: bool | None = None
    async_tp: bool | None = None
    fp8_recipe: Fp8Recipe | None = None
    selective_recompute: SelectiveRecompute | None = None
    fsdp_mixed_precision: FsdpMixedPrecision | None = None
    cuda_graphs: bool | None = None
    # hwsim extensions (not in SCENARIO_FORMAT v1.1): any framework-profile setting, for what-ifs
    grad_reduce_dtype: ReduceDtype | None = None
    loss: LossKind | None = None
    optimizer_fused: bool | None = None
    loss_scale_sync: bool | None = None
    host_syncs_per_step: int | None = Field(None, ge=0)
    fsdp_version: int | None = Field(None, ge=0, le=2)
    moe_dispatcher: MoeDispatcher | None = None


class NetworkModelKind(StrEnum):
    MAXMIN = "maxmin"
    IDEAL = "ideal"


class SimulationConfig(_Closed):
    fold: bool | None = Field(None, description="None: fold when exact")
    network_model: NetworkModelKind = NetworkModelKind.MAXMIN
    comm_compute_interference: bool = Field(True, description="collectives slow overlapped compute (SMs held)")
    host_model: bool = Field(True, description="simulate the host thread that launches kernels (False: it keeps ahead)")


class ScenarioConfig(_Closed):
    name: str = "scenario"
    cluster: ClusterConfig
    model: ModelConfig
    parallel: ParallelConfig = ParallelConfig()
    training: TrainingConfig
    software: SoftwareConfig | None = None
    simulation: SimulationConfig = SimulationConfig()
    reliability: ReliabilityConfig | None = None   # hwsim extension: failures, checkpoints (hwsim goodput)

    @model_validator(mode="after")
    def _inter_node_needed(self) -> "ScenarioConfig":
        if self.cluster.nodes > 1 and self.cluster.inter_node is None:
            raise ValueError("cluster.inter_node is required when cluster.nodes > 1: "
                             "add inter_node: {kind: fat-tree, nics_per_node: 8, nic_bandwidth: 400 Gb/s}")
        return self
