"""Units: one place for every unit hwsim knows.

Inside hwsim every quantity is in SI base units (s, B, FLOP, B/s, FLOP/s) and its name ends
in its unit. Human strings ("80 GiB", "900 GB/s", "200 Gb/s", "989 TFLOPS", "5 us") are parsed
here and only here (the config layer calls these functions). GB = 10**9 and GiB = 2**30,
always; "Gb" is gigabits (1/8 of a gigabyte).
"""

from __future__ import annotations

import difflib
import math
import re

__all__ = [
    "KB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB", "BITS_PER_BYTE",
    "TFLOP", "PFLOP", "US", "MS", "NS", "MINUTE", "HOUR", "DAY",
    "UnitError", "parse_bytes", "parse_rate", "parse_flop_rate", "parse_time", "parse_power",
    "fmt_bytes", "fmt_rate", "fmt_flop_rate", "fmt_time",
]

KB, MB, GB, TB = 10**3, 10**6, 10**9, 10**12
KiB, MiB, GiB, TiB = 2**10, 2**20, 2**30, 2**40
BITS_PER_BYTE = 8
GFLOP, TFLOP, PFLOP = 1e9, 1e12, 1e15
NS, US, MS = 1e-9, 1e-6, 1e-3
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0   # failure rates and checkpoint intervals ("5 min", "108000 h")


class UnitError(ValueError):
    """A quantity string that does not parse; the message names the accepted units."""


_SIZE_UNITS = {
    "B": 1, "KB": KB, "MB": MB, "GB": GB, "TB": TB,
    "KiB": KiB, "MiB": MiB, "GiB": GiB, "TiB": TiB,
}
_RATE_UNITS = {  # bytes per second
    "B/s": 1, "KB/s": KB, "MB/s": MB, "GB/s": GB, "TB/s": TB,
    "KiB/s": KiB, "MiB/s": MiB, "GiB/s": GiB, "TiB/s": TiB,
    "b/s": 1 / 8, "Kb/s": KB / 8, "Mb/s": MB / 8, "Gb/s": GB / 8, "Tb/s": TB / 8,
}
_FLOP_RATE_UNITS = {
    "FLOPS": 1, "GFLOPS": GFLOP, "TFLOPS": TFLOP, "PFLOPS": PFLOP,
    "FLOP/s": 1, "GFLOP/s": GFLOP, "TFLOP/s": TFLOP, "PFLOP/s": PFLOP,
}
_POWER_UNITS = {"W": 1.0, "kW": 1e3, "MW": 1e6}
_TIME_UNITS = {"ns": NS, "us": US, "µs": US, "ms": MS, "s": 1.0, "min": MINUTE, "h": HOUR, "d": DAY}

_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([^\s\d].*?)?\s*$")


def _parse(value: object, units: dict[str, float], what: str) -> float:
    if isinstance(value, bool):
        raise UnitError(f"expected a {what}, got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        m = _NUMBER.match(value)
        if not m:
            raise UnitError(f"{value!r} is not a {what}: write a number and a unit, e.g. "
                            f"{_example(units)}")
        number_text, unit = m.group(1), m.group(2)
        if unit is None:
            number = float(number_text)
        elif unit in units:
            number = float(number_text) * units[unit]
        else:
            raise UnitError(_unknown_unit(value, unit, units, what))
    else:
        raise UnitError(f"expected a {what} (a number or a string with a unit), got {value!r}")
    if not math.isfinite(number) or number < 0:
        raise UnitError(f"{value!r} is not a {what}: it must be finite and not negative")
    return number


def _example(units: dict[str, float]) -> str:
    names = list(units)
    return f"'80 {names[len(names) // 2]}'"


def _unknown_unit(value: str, unit: str, units: dict[str, float], what: str) -> str:
    # Case-insensitive match first ("80 Gib" -> "GiB"), then spelling.
    by_lower = [u for u in units if u.lower() == unit.lower()]
    close = by_lower or difflib.get_close_matches(unit, list(units), n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(value.replace(unit, c)) for c in close)}? " if close else ""
    return f"unknown unit {unit!r} in {value!r} for a {what}: {hint}accepted units: {', '.join(units)}"


def parse_bytes(value: object) -> float:
    """'80 GiB' -> 85899345920.0 (bytes). Bare numbers are bytes."""
    return _parse(value, _SIZE_UNITS, "size in bytes")


def parse_rate(value: object) -> float:
    """'900 GB/s' -> 9e11, '200 Gb/s' -> 2.5e10 (bytes per second). Bare numbers are B/s."""
    return _parse(value, _RATE_UNITS, "bandwidth")


def parse_flop_rate(value: object) -> float:
    """'989 TFLOPS' -> 9.89e14 (FLOP/s). Bare numbers are FLOP/s."""
    return _parse(value, _FLOP_RATE_UNITS, "compute rate")


def parse_time(value: object) -> float:
    """'5 us' -> 5e-6 (seconds). Bare numbers are seconds."""
    return _parse(value, _TIME_UNITS, "duration")


def parse_power(value: object) -> float:
    """'700 W' -> 700.0 (watts). Bare numbers are watts."""
    return _parse(value, _POWER_UNITS, "power")


def _fmt(value: float, steps: list[tuple[float, str]], precision: int) -> str:
    for scale, name in steps:
        if abs(value) >= scale:
            return f"{value / scale:.{precision}g} {name}"
    scale, name = steps[-1]
    return f"{value / scale:.{precision}g} {name}"


def fmt_bytes(n_bytes: float, binary: bool = True, precision: int = 4) -> str:
    steps = ([(TiB, "TiB"), (GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB"), (1, "B")] if binary
             else [(TB, "TB"), (GB, "GB"), (MB, "MB"), (KB, "KB"), (1, "B")])
    return _fmt(n_bytes, steps, precision)


def fmt_rate(bytes_per_s: float, precision: int = 4) -> str:
    return _fmt(bytes_per_s, [(TB, "TB/s"), (GB, "GB/s"), (MB, "MB/s"), (KB, "KB/s"), (1, "B/s")], precision)


def fmt_flop_rate(flop_per_s: float, precision: int = 4) -> str:
    return _fmt(flop_per_s, [(PFLOP, "PFLOPS"), (TFLOP, "TFLOPS"), (GFLOP, "GFLOPS"), (1, "FLOPS")], precision)


def fmt_time(duration_s: float, precision: int = 4) -> str:
    return _fmt(duration_s, [(1.0, "s"), (MS, "ms"), (US, "us"), (NS, "ns")], precision)
