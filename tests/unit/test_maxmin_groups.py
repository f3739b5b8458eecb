"""MaxMinFair fills shared links in groups (hwsim.network.maxmin._link_groups): its rates must
equal, bit for bit, those of progressive filling link by link, the way it was written before."""

import math
import random

import pytest

from hwsim.network.maxmin import _REL_TOL, MaxMinFair, _prepare
from hwsim.network.transfer import Transfer


def _per_link_rates(capacity: list[float], transfers: list[Transfer]) -> list[float]:
    """Progressive filling over every shared link, one at a time (the reference)."""
    prepared = [_prepare(t, capacity) for t in transfers]
    n = len(prepared)
    rates = [math.inf] * n
    seen: set[int] = set()
    shared: set[int] = set()
    for p in prepared:
        shared |= seen & p.links
        seen |= p.links
    own_cap = [math.inf] * n
    users: dict[int, list[tuple[int, float]]] = {}
    load: dict[int, float] = {}
    n_unfrozen: dict[int, int] = {}
    unfrozen: set[int] = set()
    for i, p in enumerate(prepared):
        if not p.limits:
            continue
        unfrozen.add(i)
        for limit, link in p.limits:
            if link not in shared:
                own_cap[i] = limit
                break
        for link in p.links & shared:
            w = p.weights[link]
            users.setdefault(link, []).append((i, w))
            load[link] = load.get(link, 0.0) + w
            n_unfrozen[link] = n_unfrozen.get(link, 0) + 1
    residual = {link: capacity[link] for link in users}
    level = 0.0
    while unfrozen:
        next_level = min(own_cap[i] for i in sorted(unfrozen))
        for link, s in load.items():
            next_level = min(next_level, level + residual[link] / s)
        delta, level = next_level - level, next_level
        to_freeze = [i for i in sorted(unfrozen) if own_cap[i] <= level * (1 + _REL_TOL)]
        for link, s in load.items():
            residual[link] -= delta * s
            if residual[link] <= _REL_TOL * capacity[link]:
                to_freeze.extend(i for i, _ in users[link])
        for i in to_freeze:
            if i not in unfrozen:
                continue
            unfrozen.discard(i)
            rates[i] = level
            for link in prepared[i].links & shared:
                n_unfrozen[link] -= 1
                if n_unfrozen[link] == 0:
                    del load[link]
                else:
                    load[link] -= prepared[i].weights[link]
    return rates


def _case(rng: random.Random, id_range: int):
    """Few capacities and weights, so that many links fill alike and transfers freeze together
    (where the order of the groups decides the last bits); link ids spread over `id_range` so
    that sets iterate in an order of their own."""
    n_links = rng.choice([3, 8, 20, 60, 200])
    ids = rng.sample(range(id_range), n_links)
    capacity = [1.0] * id_range
    for link in ids:
        capacity[link] = rng.choice([10.0, 10.0, 25.0, 10.0 + 1e-12, rng.uniform(1.0, 30.0)])
    transfers = []
    for _ in range(rng.randint(1, 10)):
        links = rng.sample(ids, rng.randint(0, min(n_links, 40)))
        transfers.append(Transfer(tuple((link, rng.choice([1.0, 1.0, 2.0, 0.5, 1.0 / 3, rng.uniform(0.1, 3.0)]))
                                        for link in links)))
    if rng.random() < 0.2:
        transfers.append(transfers[0])   # the same transfer twice
    return capacity, transfers


@pytest.mark.parametrize("id_range", [200, 100_000])
def test_grouped_filling_equals_per_link_filling_bit_for_bit(id_range):
    rng = random.Random(id_range)
    for _ in range(500):
        capacity, transfers = _case(rng, id_range)
        assert MaxMinFair(capacity).rates(transfers) == _per_link_rates(capacity, transfers)


def test_transfers_that_freeze_together_leave_a_shared_load_in_the_per_link_order():
    # a and b freeze together at 5 (links 0 and 1 saturate with d and e), and both leave link 2,
    # which c goes on filling: (0.1 + 0.3 + 0.1) - 0.1 - 0.3 is not (0.1 + 0.3 + 0.1) - 0.3 - 0.1
    # in floating point, so the order decides c's last bits (80.0 the other way round)
    capacity = [10.0, 10.0, 10.0, 1e9]
    a, b = Transfer(((0, 1.0), (2, 0.1))), Transfer(((1, 1.0), (2, 0.3)))
    c, d, e = Transfer(((2, 0.1), (3, 1.0))), Transfer(((0, 1.0),)), Transfer(((1, 1.0),))
    rates = MaxMinFair(capacity).rates([a, b, c, d, e])
    assert rates == _per_link_rates(capacity, [a, b, c, d, e])
    assert rates[2] == 79.99999999999997


@pytest.mark.parametrize("x", [0.1, 0.3, 0.7, 1.0 / 3, 0.9])
def test_freezing_order_over_many_weights(x):
    weights = [0.1, 0.3, 0.7, 1.0 / 3, 0.9, 0.2, 0.6, 0.45]
    capacity = [10.0, 10.0, 10.0, 1e9]
    for y in weights:
        for z in weights:
            transfers = [Transfer(((0, 1.0), (2, x))), Transfer(((1, 1.0), (2, y))), Transfer(((2, z), (3, 1.0))),
                         Transfer(((0, 1.0),)), Transfer(((1, 1.0),))]
            assert MaxMinFair(capacity).rates(transfers) == _per_link_rates(capacity, transfers)


def test_same_solver_answers_the_same_after_its_pair_memory_fills():
    # the per-pair memory of which transfers share links must not change later answers
    rng = random.Random(7)
    capacity, transfers = _case(rng, 500)
    solver = MaxMinFair(capacity, cache_size=4)
    for _ in range(50):
        subset = rng.sample(transfers, rng.randint(1, len(transfers)))
        assert solver.rates(subset) == _per_link_rates(capacity, subset)
