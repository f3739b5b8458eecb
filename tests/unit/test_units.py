import math

import pytest
from hypothesis import given, strategies as st

from hwsim import units
from hwsim.units import UnitError


@pytest.mark.parametrize("text, expected", [
    ("80 GiB", 80 * 2**30), ("80 GB", 80e9), ("1 KiB", 1024), ("1.5TB", 1.5e12), ("512", 512.0), (4096, 4096.0),
])
def test_parse_bytes(text, expected):
    assert units.parse_bytes(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("200 Gb/s", 25e9), ("900 GB/s", 900e9), ("3.35 TB/s", 3.35e12), ("400 Gb/s", 50e9), ("1 GiB/s", 2**30),
])
def test_parse_rate_bits_vs_bytes(text, expected):
    assert units.parse_rate(text) == pytest.approx(expected, rel=1e-12)


def test_parse_flop_rate_and_time_and_power():
    assert units.parse_flop_rate("989 TFLOPS") == pytest.approx(989e12)
    assert units.parse_flop_rate("2.5 PFLOPS") == pytest.approx(2.5e15)
    assert units.parse_time("5 us") == pytest.approx(5e-6)
    assert units.parse_time("2 ms") == pytest.approx(2e-3)
    assert units.parse_power("700 W") == 700.0


def test_case_typo_suggests_the_right_unit():
    with pytest.raises(UnitError) as exc:
        units.parse_bytes("80 Gib")
    assert "80 GiB" in str(exc.value)


@pytest.mark.parametrize("bad", ["eighty GB", "80 parsecs", "-3 GB", "nan GB", True, None, [1]])
def test_rejects_garbage(bad):
    with pytest.raises(UnitError):
        units.parse_bytes(bad)


sizes = st.floats(min_value=1.0, max_value=1e18, allow_nan=False, allow_infinity=False)


@given(sizes)
def test_bytes_round_trip(n_bytes):
    for binary in (True, False):
        text = units.fmt_bytes(n_bytes, binary=binary, precision=12)
        assert math.isclose(units.parse_bytes(text), n_bytes, rel_tol=1e-9)


@given(sizes)
def test_rate_round_trip(rate):
    assert math.isclose(units.parse_rate(units.fmt_rate(rate, precision=12)), rate, rel_tol=1e-9)


@given(sizes)
def test_flop_rate_round_trip(rate):
    assert math.isclose(units.parse_flop_rate(units.fmt_flop_rate(rate, precision=12)), rate, rel_tol=1e-9)


@given(st.floats(min_value=1e-9, max_value=1e6, allow_nan=False))
def test_time_round_trip(t):
    assert math.isclose(units.parse_time(units.fmt_time(t, precision=12)), t, rel_tol=1e-9)


def test_powers_of_ten_vs_two():
    assert units.GB == 10**9 and units.GiB == 2**30
    assert units.parse_bytes("1 GiB") / units.parse_bytes("1 GB") == pytest.approx(1.073741824)
