"""Sweep axes and how their points are drawn: a grid, a random sample, a latin hypercube.

An axis is a dotted scenario path and either a list of values (any YAML value: `8`,
`"400 Gb/s"`, `interleaved`), a numeric range `{low, high, n?, scale: linear|log,
integer: bool}` in SI base units, or `auto` (the field is unset at every point so that hwsim
derives it again, e.g. `parallel.dp` from the device count).

- grid: the cross product of the lists (a range needs `n` and gives n evenly spaced values);
  the last axis varies fastest.
- random (n, seed): each axis drawn independently and uniformly (a list: one of its values;
  a range: uniform, or log-uniform with `scale: log`).
- latin-hypercube (n, seed): McKay, Beckman & Conover (1979), "A Comparison of Three Methods
  for Selecting Values of Input Variables in the Analysis of Output from a Computer Code",
  Technometrics 21(2): each axis is cut into n equal strata, each stratum is used exactly once
  (a random permutation per axis, a uniform position inside the stratum); a list of k values
  maps the unit interval onto its k values in equal parts.

Everything random comes from one `numpy.random.Generator` seeded by the sweep file: the same
file gives the same points, in the same order, on every machine.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hwsim.errors import ConfigError

__all__ = ["AUTO", "SampleKind", "SampleConfig", "RangeAxis", "Axis", "parse_axis", "sample_points",
           "latin_hypercube_unit"]

AUTO = "auto"


class SampleKind(StrEnum):
    GRID = "grid"
    RANDOM = "random"
    LATIN_HYPERCUBE = "latin-hypercube"


class SampleConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: SampleKind = SampleKind.GRID
    n: int | None = Field(None, ge=1, description="points to draw (random, latin-hypercube)")
    seed: int = 0

    @model_validator(mode="after")
    def _n_needed(self) -> "SampleConfig":
        if self.kind != SampleKind.GRID and self.n is None:
            raise ValueError(f"sample.n: a {self.kind.value} sample needs n, the number of points (e.g. n: 20)")
        return self


class Scale(StrEnum):
    LINEAR = "linear"
    LOG = "log"


class RangeAxis(BaseModel):
    """A numeric range in SI base units (bytes, B/s, seconds, counts)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    low: float
    high: float
    n: int | None = Field(None, ge=1, description="values on a grid")
    scale: Scale = Scale.LINEAR
    integer: bool = False

    @model_validator(mode="after")
    def _check(self) -> "RangeAxis":
        if not self.high >= self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        if self.scale == Scale.LOG and self.low <= 0:
            raise ValueError(f"a log range needs low > 0 (got {self.low})")
        return self

    def at(self, u: float) -> float | int:
        """The value at position u in [0, 1)."""
        if self.scale == Scale.LOG:
            x = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            x = self.low + u * (self.high - self.low)
        return int(round(x)) if self.integer else x

    def grid(self, path: str) -> list[Any]:
        if self.n is None:
            raise ConfigError(f"axes.{path}: a range on a grid needs n (how many values), e.g. "
                              f"{{low: {self.low:g}, high: {self.high:g}, n: 4}}; or list the values")
        if self.n == 1:
            return [self.at(0.0)]
        values = [self.at(i / (self.n - 1)) for i in range(self.n)]
        return list(dict.fromkeys(values))  # integer rounding may repeat a value


@dataclass(frozen=True)
class Axis:
    path: str
    values: tuple[Any, ...] | None = None   # a list axis
    range: RangeAxis | None = None          # a range axis
    auto: bool = False

    def pick(self, u: float) -> Any:
        """The value at position u in [0, 1) (random and latin-hypercube samples)."""
        if self.range is not None:
            return self.range.at(u)
        values = self.values or ()
        return values[min(int(u * len(values)), len(values) - 1)]


def parse_axis(path: str, spec: Any) -> Axis:
    if isinstance(spec, str) and spec.strip().lower() == AUTO:
        return Axis(path, auto=True)
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"axes.{path}: an empty list; give at least one value")
        return Axis(path, values=tuple(spec))
    if isinstance(spec, dict):
        try:
            return Axis(path, range=RangeAxis.model_validate(spec))
        except ValidationError as exc:
            msgs = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'range'}: {e['msg'].removeprefix('Value error, ')}"
                             for e in exc.errors())
            raise ConfigError(f"axes.{path}: not a valid range ({msgs}); write {{low: 1, high: 8, n: 4}} "
                              f"with optional scale: log and integer: true") from None
    raise ConfigError(f"axes.{path}: {spec!r} is not an axis; give a list of values (e.g. [8, 16, 32]), "
                      f"a range {{low, high, n}}, or auto")


def sample_points(axes: list[Axis], sample: SampleConfig) -> list[tuple[Any, ...]]:
    """The points, each a tuple of values in the order of the non-auto `axes`."""
    varied = [a for a in axes if not a.auto]
    if not varied:
        return [()]
    if sample.kind == SampleKind.GRID:
        lists = [list(a.values) if a.values is not None else a.range.grid(a.path) for a in varied]
        return [tuple(p) for p in itertools.product(*lists)]
    rng = np.random.default_rng(sample.seed)
    n = int(sample.n)
    if sample.kind == SampleKind.RANDOM:
        u = rng.random((n, len(varied)))
    else:
        u = latin_hypercube_unit(n, len(varied), rng)
    return [tuple(a.pick(float(u[i, j])) for j, a in enumerate(varied)) for i in range(n)]


def latin_hypercube_unit(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """n points in [0, 1)^d, each dimension's n strata [k/n, (k+1)/n) used exactly once."""
    u = np.empty((n, d))
    for j in range(d):
        strata = rng.permutation(n)
        u[:, j] = (strata + rng.random(n)) / n
    return u

