"""Max-min fair and ideal network models: hand-computed cases and invariants."""

import math
import random

import pytest

from hwsim.network.maxmin import Ideal, MaxMinFair
from hwsim.network.transfer import Transfer


def test_two_flows_hand_computed():
    # Link 0 (capacity 10) is shared; transfer a also crosses link 1 (capacity 3).
    a = Transfer(((0, 1.0), (1, 1.0)))
    b = Transfer(((0, 1.0),))
    assert MaxMinFair([10.0, 3.0]).rates([a, b]) == pytest.approx([3.0, 7.0])


def test_three_levels_of_progressive_filling():
    # Links: 0 cap 6 shared by a, b, c; link 1 cap 1 only a; link 2 cap 2.5 only b.
    # a frozen at 1, b at 2.5, c takes the rest of link 0: 6 - 1 - 2.5 = 2.5.
    a, b, c = Transfer(((0, 1.0), (1, 1.0))), Transfer(((0, 1.0), (2, 1.0))), Transfer(((0, 1.0),))
    assert MaxMinFair([6.0, 1.0, 2.5]).rates([a, b, c]) == pytest.approx([1.0, 2.5, 2.5])


def test_single_transfer_rate_is_its_bottleneck():
    # 100 B on link 0 (cap 10), 50 B on link 1 (cap 4): link 1 limits at 4 * 100 / 50 = 8.
    t = Transfer(((0, 100.0), (1, 50.0)))
    assert MaxMinFair([10.0, 4.0]).rates([t]) == pytest.approx([8.0])
    assert Ideal([10.0, 4.0]).rates([t]) == pytest.approx([8.0])


def test_weighted_share_of_a_link():
    # a: 2 B on link 0. b: 1 B on link 0 and 2 B on link 1 (ample), so b's rate is counted on
    # link 1 and link 0 carries only half of it: r_a + r_b / 2 <= 9 with equal rates -> r = 6.
    a = Transfer(((0, 2.0),))
    b = Transfer(((0, 1.0), (1, 2.0)))
    assert MaxMinFair([9.0, 1e9]).rates([a, b]) == pytest.approx([6.0, 6.0])


def test_empty_transfer_is_instant_and_does_not_disturb_others():
    t = Transfer(((0, 5.0),))
    rates = MaxMinFair([10.0]).rates([Transfer(()), t])
    assert rates[0] == math.inf and rates[1] == pytest.approx(10.0)
    assert Ideal([10.0]).rates([Transfer(())]) == [math.inf]


def test_repeated_link_is_merged_and_time_stays_max_link_bytes_over_rate():
    t = Transfer(((0, 5.0), (0, 5.0)))   # 10 B really cross link 0 (capacity 10): 1 s
    rate = MaxMinFair([10.0]).rates([t])[0]
    assert t.max_link_bytes / rate == pytest.approx(1.0)


def _random_case(rng: random.Random, n_links: int, n_transfers: int, max_links: int):
    capacity = [rng.choice([rng.uniform(1.0, 20.0), 10.0]) for _ in range(n_links)]
    transfers = []
    for _ in range(n_transfers):
        links = rng.sample(range(n_links), rng.randint(1, max_links))
        transfers.append(Transfer(tuple((l, rng.choice([rng.uniform(0.1, 10.0), 5.0])) for l in links)))
    return capacity, transfers


# Small dense cases (most links shared) and collective-like ones (many links, few shared).
CASES = [(seed, 8, 12, 4) for seed in range(30)] + [(seed, 300, 10, 60) for seed in range(30, 45)]


@pytest.mark.parametrize("seed, n_links, max_transfers, max_links", CASES)
def test_invariants_on_random_cases(seed, n_links, max_transfers, max_links):
    rng = random.Random(seed)
    capacity, transfers = _random_case(rng, n_links, rng.randint(1, max_transfers), max_links)
    fair = MaxMinFair(capacity).rates(transfers)
    alone = Ideal(capacity).rates(transfers)
    load = [0.0] * len(capacity)
    for t, r in zip(transfers, fair):
        for link, b in t.link_bytes:
            load[link] += r * b / t.max_link_bytes
    # Capacities are never exceeded.
    for link, cap in enumerate(capacity):
        assert load[link] <= cap * (1 + 1e-9)
    # Ideal (no contention) is an upper bound.
    for r_fair, r_alone in zip(fair, alone):
        assert r_fair <= r_alone * (1 + 1e-9)
    # Max-min: every transfer has a saturated link on which no other transfer gets more.
    for i, t in enumerate(transfers):
        ok = False
        for link, _ in t.link_bytes:
            if load[link] >= capacity[link] * (1 - 1e-6):
                others = [fair[j] for j, u in enumerate(transfers) if any(l == link for l, _ in u.link_bytes)]
                ok = ok or fair[i] >= max(others) * (1 - 1e-6)
        assert ok, f"transfer {i} has no bottleneck link"


def test_cache_returns_same_answers_and_tracks_identity():
    model = MaxMinFair([10.0, 3.0])
    a, b = Transfer(((0, 1.0), (1, 1.0))), Transfer(((0, 1.0),))
    first = model.rates([a, b])
    first.append(99.0)  # the caller's list is its own
    assert model.rates([a, b]) == pytest.approx([3.0, 7.0])
    # Equal but distinct transfers give the same answer.
    assert model.rates([Transfer(((0, 1.0), (1, 1.0))), Transfer(((0, 1.0),))]) == pytest.approx([3.0, 7.0])
    assert model.rates([b]) == pytest.approx([10.0])
