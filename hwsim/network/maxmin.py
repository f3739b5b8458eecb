"""Network models: how concurrent Transfers share link capacity (the NetworkModel protocol).

A Transfer's rate is the rate of its most-loaded link: link l then carries
`rate * bytes_l / max_link_bytes`. `MaxMinFair` gives the max-min fair allocation by progressive
filling: all unfrozen transfers' rates rise together; when a link saturates, the transfers on it
freeze at the current level; repeat until every transfer is frozen. `Ideal` gives every
transfer the rate it would have alone (no contention: an optimistic bound).

Pure Python on purpose: below ~1,000 concurrent transfers it beats numpy (shared/ENGINE_PERF.md).
A collective's transfer crosses thousands of links, few of them shared with another active
transfer; so each transfer is prepared once (its weights, and its links sorted by the rate they
would allow it alone), the links used by only one transfer collapse into that transfer's own
cap, and the filling iterates over the shared links only. Answers are cached by the identity of
the transfers (the cache holds them, so an id is never reused while cached); a transfer with no
bytes gets an infinite rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from hwsim.network.transfer import Transfer

__all__ = ["MaxMinFair", "Ideal"]

_REL_TOL = 1e-9


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A transfer as the solver sees it: weight per link (bytes_l / max_link_bytes, repeated
    links merged so that `max_link_bytes / rate` stays its time), its links, and (alone rate,
    link) pairs in increasing order."""

    transfer: Transfer
    weights: dict[int, float]
    links: frozenset[int]
    limits: tuple[tuple[float, int], ...]


def _prepare(transfer: Transfer, capacity: list[float]) -> _Prepared:
    top = transfer.max_link_bytes
    weights: dict[int, float] = {}
    if top > 0:
        for link, n_bytes in transfer.link_bytes:
            if n_bytes > 0:
                weights[link] = weights.get(link, 0.0) + n_bytes / top
    limits = tuple(sorted((capacity[link] / w, link) for link, w in weights.items()))
    return _Prepared(transfer, weights, frozenset(weights), limits)


class _Cached:
    def __init__(self, capacity_bytes_per_s: Sequence[float], cache_size: int = 4096):
        self.capacity_bytes_per_s = [float(c) for c in capacity_bytes_per_s]
        self._cache: dict[tuple[int, ...], tuple[tuple[Transfer, ...], tuple[float, ...]]] = {}
        self._prepared: dict[int, _Prepared] = {}
        self._cache_size = cache_size

    def _prepared_of(self, transfer: Transfer) -> _Prepared:
        hit = self._prepared.get(id(transfer))
        if hit is None or hit.transfer is not transfer:
            if len(self._prepared) >= self._cache_size:
                self._prepared.clear()
            hit = _prepare(transfer, self.capacity_bytes_per_s)
            self._prepared[id(transfer)] = hit
        return hit

    def rates(self, transfers: Sequence[Transfer]) -> list[float]:
        key = tuple(id(t) for t in transfers)
        hit = self._cache.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], transfers)):
            return list(hit[1])
        result = self._solve([self._prepared_of(t) for t in transfers])
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[key] = (tuple(transfers), tuple(result))
        return result

    def _solve(self, prepared: list[_Prepared]) -> list[float]:
        raise NotImplementedError


class Ideal(_Cached):
    """Each transfer at the rate it would get alone: min over its links of capacity / weight."""

    def _solve(self, prepared: list[_Prepared]) -> list[float]:
        return [p.limits[0][0] if p.limits else math.inf for p in prepared]


class MaxMinFair(_Cached):
    """Max-min fair rates by progressive filling (see the module docstring)."""

    def _solve(self, prepared: list[_Prepared]) -> list[float]:
        capacity = self.capacity_bytes_per_s
        n = len(prepared)
        rates = [math.inf] * n
        # Links crossed by two or more transfers; every other link only caps its one transfer.
        seen: set[int] = set()
        shared: set[int] = set()
        for p in prepared:
            shared |= seen & p.links
            seen |= p.links
        own_cap = [math.inf] * n
        users: dict[int, list[tuple[int, float]]] = {}
        load: dict[int, float] = {}      # sum of the weights of the unfrozen transfers on a link
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
