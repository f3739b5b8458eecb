"""The scenario's `reliability:` block (hwsim extension of SCENARIO_FORMAT.md): what fails and
how often, what a failure costs, where checkpoints go, links that run degraded, and the seeded
step-time variance and stragglers of `hwsim variance` (`variance:`, no default spread).

Everything is optional: an absent block, or an absent field, takes the failure-mix preset's
value (`hwsim/presets/reliability/`, each number with its source), resolved by
`hwsim.reliability.spec`. A failure rate is written as an MTBF ("108000 h") or a FIT
(failures per 10^9 unit-hours) per unit: a device, a node, a NIC, a network switch, or the job.

This module imports only units and pydantic, so `hwsim.config.schema` can hold it.
"""

from __future__ import annotations

from enum import StrEnum
from importlib import resources
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, NonNegativeInt, field_validator, model_validator

from hwsim import units

__all__ = ["Component", "Per", "StorageTier", "CheckpointMode", "RecoveryScope", "LinkKind",
           "ComponentRateConfig", "CheckpointConfig", "DegradedLinkConfig", "StragglerConfig", "VarianceConfig",
           "ReliabilityConfig", "failure_mix_names", "DEFAULT_FAILURE_MIX"]

DEFAULT_FAILURE_MIX = "llama3-405b-h100"


def _time(value: object) -> float:
    return units.parse_time(value)


def _rate(value: object) -> float:
    return units.parse_rate(value)


Seconds = Annotated[float, BeforeValidator(_time)]
BytesPerS = Annotated[float, BeforeValidator(_rate)]


class _Closed(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


class Component(StrEnum):
    """What interrupts a job (the Llama 3 paper's Table 5 root causes, grouped)."""

    GPU = "gpu"                  # the GPU itself: faulty GPU, SRAM, system processor, SDC, thermal
    HBM = "hbm"                  # the GPU's HBM
    NIC = "nic"
    SWITCH = "switch"            # network switches and cables
    HOST = "host"                # CPU, memory, SSD, power supply, chassis, unplanned host maintenance
    SOFTWARE = "software"        # software bugs, dependencies, collective-library watchdog timeouts
    MAINTENANCE = "maintenance"  # planned interruptions (no lost work: a checkpoint is taken first)


class Per(StrEnum):
    """The unit a failure rate is counted per."""

    DEVICE = "device"
    NODE = "node"
    NIC = "nic"
    SWITCH = "switch"   # a network switch of the scenario's fabric (leaves and spines, rails)
    JOB = "job"         # one rate for the whole job, whatever its size


class StorageTier(StrEnum):
    NODE_LOCAL_NVME = "node-local-nvme"   # each node writes its own shards to its own drives
    PARALLEL_FS = "parallel-fs"           # one shared file system for the whole job


class CheckpointMode(StrEnum):
    BLOCKING = "blocking"   # training waits for the write
    ASYNC = "async"         # training waits for a copy to host memory; the write goes on behind it


class RecoveryScope(StrEnum):
    JOB = "job"            # every failure restarts the whole job from the last durable checkpoint
    REPLICA = "replica"    # the failed model-parallel group (one data-parallel replica) restarts and
                           # takes its state from a healthy replica; the others keep training


class LinkKind(StrEnum):
    NIC = "nic"         # the device's NIC, both directions to the network
    NVLINK = "nvlink"   # the device's intra-node links (NVLink to the switch, or ring/mesh neighbours)


def failure_mix_names() -> tuple[str, ...]:
    folder = resources.files("hwsim").joinpath("presets", "reliability")
    if not folder.is_dir():
        return ()
    return tuple(sorted(p.name[:-len(".yaml")] for p in folder.iterdir()
                        if p.name.endswith(".yaml") and p.name != "storage-tiers.yaml"))


class ComponentRateConfig(_Closed):
    """One component's failure rate: `mtbf` or `fit` (not both), per `per`. Omitted fields keep
    the preset's value for that component."""

    per: Per | None = None
    mtbf: Seconds | None = Field(None, description="mean time between failures of ONE unit, e.g. 100000 h")
    fit: float | None = Field(None, description="failures per 10^9 hours of ONE unit")
    planned: bool | None = Field(None, description="a planned interruption: no detection, no lost work")

    @field_validator("mtbf")
    @classmethod
    def _mtbf_positive(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("an MTBF must be positive: write the mean time between failures of one unit, "
                             "e.g. '100000 h', or drop the component to keep the preset's rate")
        return value

    @field_validator("fit")
    @classmethod
    def _fit_positive(cls, value: float | None) -> float | None:
        if value is not None and not (value > 0 and value < float("inf")):
            raise ValueError("a FIT rate must be a positive number of failures per 10^9 unit-hours, e.g. 9000")
        return value

    @model_validator(mode="after")
    def _one_rate(self) -> "ComponentRateConfig":
        if self.mtbf is not None and self.fit is not None:
            raise ValueError("give mtbf or fit, not both (fit = 1e9 h / mtbf)")
        return self


def _interval(value: object) -> object:
    return None if value in (None, "auto") else units.parse_time(value)


class CheckpointConfig(_Closed):
    storage: StorageTier = StorageTier.PARALLEL_FS
    write_bandwidth: BytesPerS | None = Field(None, description="override the tier's: per node for "
                                              "node-local-nvme, for the whole job for parallel-fs")
    read_bandwidth: BytesPerS | None = None
    interval: Annotated[float | None, BeforeValidator(_interval)] = Field(
        None, description="compute time between checkpoints; auto (default): the interval with the least "
                          "expected waste (about sqrt(2 x checkpoint stall x MTBF), Young 1974)")
    mode: CheckpointMode = CheckpointMode.BLOCKING

    @field_validator("interval")
    @classmethod
    def _interval_positive(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("a checkpoint interval must be positive, e.g. '30 min', or 'auto' for the optimum")
        return value

    @field_validator("write_bandwidth", "read_bandwidth")
    @classmethod
    def _bandwidth_positive(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("a storage bandwidth must be positive, e.g. '2 TB/s'; omit it for the tier's")
        return value


class DegradedLinkConfig(_Closed):
    """A link that runs below its bandwidth for the whole run (a NIC that trained down, a
    damaged NVLink): the step is simulated with it."""

    kind: LinkKind
    device: NonNegativeInt = 0
    bandwidth_frac: float = Field(gt=0.0, le=1.0, description="the fraction of its bandwidth left, in (0, 1]")


class StragglerConfig(_Closed):
    """One slow device, or every device of one node, for the whole step (a throttled GPU: slowdown
    = its nominal clock / its throttled one)."""

    device: NonNegativeInt | None = Field(None, description="the slow device (0-based); give device or node")
    node: NonNegativeInt | None = Field(None, description="a slow node: each of its devices is slowed")
    slowdown: float = Field(ge=1.0, le=1000.0, allow_inf_nan=False,
                            description="its kernels take this many times as long, >= 1 (1.5: 50% slower)")

    @model_validator(mode="after")
    def _one_place(self) -> "StragglerConfig":
        if (self.device is None) == (self.node is None):
            raise ValueError("give device or node (not both, not neither), e.g. {device: 5, slowdown: 1.5}")
        return self


class VarianceConfig(_Closed):
    """Seeded variance for `hwsim variance` (the step simulated unfolded, many times). `hwsim run`
    and `hwsim goodput` ignore this block: they stay the folded, noiseless step. No default spread:
    no published per-kernel fleet measurement was found (README, "Variance and stragglers")."""

    kernel_cv: float = Field(0.0, ge=0.0, lt=10.0, allow_inf_nan=False,
                             description="coefficient of variation of each kernel's time (mean-one lognormal, drawn "
                                         "per kernel and sample), e.g. 0.05")
    device_cv: float = Field(0.0, ge=0.0, lt=10.0, allow_inf_nan=False,
                             description="coefficient of variation of each device's speed (mean-one lognormal, one "
                                         "draw per device and sample: a different set of GPUs each sample)")
    link_cv: float = Field(0.0, ge=0.0, lt=10.0, allow_inf_nan=False,
                           description="coefficient of variation of each collective's time on the links (mean-one "
                                       "lognormal per collective and sample: its bytes and latency scaled)")
    stragglers: tuple[StragglerConfig, ...] = ()
    samples: int = Field(100, ge=1, le=100_000, description="simulated steps")
    seed: NonNegativeInt = Field(0, description="random seed (same seed, same samples)")


class ReliabilityConfig(_Closed):
    preset: str = Field(DEFAULT_FAILURE_MIX, description="failure mix and recovery times (presets/reliability)")
    components: dict[Component, ComponentRateConfig] = Field(default_factory=dict)
    detection: Seconds | None = Field(None, description="from a failure to the job noticing it")
    restart: Seconds | None = Field(None, description="from noticing to training again (relaunch, init), "
                                                      "before the checkpoint load")
    recovery: RecoveryScope = RecoveryScope.JOB
    checkpoint: CheckpointConfig = CheckpointConfig()
    degraded_links: tuple[DegradedLinkConfig, ...] = ()
    variance: VarianceConfig = Field(VarianceConfig(), description="kernel and device spread, stragglers "
                                                                   "(hwsim variance only)")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        names = failure_mix_names()
        if value not in names:
            raise ValueError(f"unknown failure-mix preset {value!r}; known: {', '.join(names)}")
        return value
