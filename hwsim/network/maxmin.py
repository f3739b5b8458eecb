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
cap, and the filling iterates over the shared links only, in groups of links that fill alike
(`_link_groups`: the same transfers with the same weights and the same capacity). Whether two
transfers share a link at all is remembered per pair. Answers are cached by the identity of
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


@dataclass(slots=True)
class _Prepared:
    """A transfer as the solver sees it: weight per link (bytes_l / max_link_bytes, repeated
    links merged so that `max_link_bytes / rate` stays its time), its links, (alone rate,
    link) pairs in increasing order, and, once it shares a link with another transfer, its
    links by (weight, capacity) (`_link_classes`)."""

    transfer: Transfer
    weights: dict[int, float]
    links: frozenset[int]
    limits: tuple[tuple[float, int], ...]
    classes: tuple[tuple[float, float, frozenset[int]], ...] | None = None


def _prepare(transfer: Transfer, capacity: list[float]) -> _Prepared:
    top = transfer.max_link_bytes
    weights: dict[int, float] = {}
    if top > 0:
        for link, n_bytes in transfer.link_bytes:
            if n_bytes > 0:
                weights[link] = weights.get(link, 0.0) + n_bytes / top
    limits = tuple(sorted((capacity[link] / w, link) for link, w in weights.items()))
    return _Prepared(transfer, weights, frozenset(weights), limits)


def _link_classes(p: _Prepared, capacity: list[float]) -> tuple[tuple[float, float, frozenset[int]], ...]:
    """p's links grouped by (weight, capacity), computed once (most transfers never share a link)."""
    if p.classes is None:
        classes: dict[tuple[float, float], list[int]] = {}
        for link, w in p.weights.items():
            classes.setdefault((w, capacity[link]), []).append(link)
        p.classes = tuple((w, c, frozenset(links)) for (w, c), links in classes.items())
    return p.classes


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

    def __init__(self, capacity_bytes_per_s: Sequence[float], cache_size: int = 4096):
        super().__init__(capacity_bytes_per_s, cache_size)
        self._disjoint: dict[tuple[int, int], tuple[_Prepared, _Prepared, bool]] = {}

    def _shared_links(self, prepared: list[_Prepared]) -> set[int]:
        """Links crossed by two or more transfers; every other link only caps its one transfer.
        Most active sets share none: whether two transfers do is remembered per pair, and the
        set is built (the same way each time: its iteration order matters) only when some pair does."""
        if all(self._pair_disjoint(p, q) for j, q in enumerate(prepared) for p in prepared[:j]):
            return set()
        seen: set[int] = set()
        shared: set[int] = set()
        for p in prepared:
            shared |= seen & p.links
            seen |= p.links
        return shared

    def _pair_disjoint(self, p: _Prepared, q: _Prepared) -> bool:
        hit = self._disjoint.get((id(p), id(q)))
        if hit is None or hit[0] is not p or hit[1] is not q:   # the entry holds p and q: ids stay theirs
            if len(self._disjoint) >= self._cache_size:
                self._disjoint.clear()
            hit = self._disjoint[(id(p), id(q))] = (p, q, p.links.isdisjoint(q.links))
        return hit[2]

    def _solve(self, prepared: list[_Prepared]) -> list[float]:
        shared = self._shared_links(prepared)
        groups = _link_groups(prepared, shared, self.capacity_bytes_per_s) if shared else []
        return _fill([_own_cap(p, shared) for p in prepared], {i for i, p in enumerate(prepared) if p.limits},
                     groups)


def _own_cap(p: _Prepared, shared: set[int]) -> float:
    """The rate p's links that no other transfer crosses allow it."""
    for limit, link in p.limits:
        if link not in shared:
            return limit
    return math.inf


def _fill(own_cap: list[float], unfrozen: set[int],
          groups: list[tuple[tuple[tuple[int, float], ...], float]]) -> list[float]:
    """Progressive filling of the transfers `unfrozen` (the others move no bytes: infinite rate)
    under their own caps and the shared link groups (`_link_groups`)."""
    rates = [math.inf] * len(own_cap)
    users = [key for key, _cap in groups]
    capacity = [cap for _key, cap in groups]
    residual = list(capacity)
    groups_of: list[list[tuple[int, float]]] = [[] for _ in own_cap]
    load: dict[int, float] = {}      # sum of the weights of the unfrozen transfers on a group's links
    n_unfrozen: dict[int, int] = {}
    for g, key in enumerate(users):
        total = 0.0
        for i, w in key:
            groups_of[i].append((g, w))
            total += w
        load[g], n_unfrozen[g] = total, len(key)
    level = 0.0
    while unfrozen:
        next_level = min(own_cap[i] for i in sorted(unfrozen))
        for g, s in load.items():
            next_level = min(next_level, level + residual[g] / s)
        delta, level = next_level - level, next_level
        to_freeze = [i for i in sorted(unfrozen) if own_cap[i] <= level * (1 + _REL_TOL)]
        for g, s in load.items():
            residual[g] -= delta * s
            if residual[g] <= _REL_TOL * capacity[g]:
                to_freeze.extend(i for i, _ in users[g])
        for i in to_freeze:
            if i not in unfrozen:
                continue
            unfrozen.discard(i)
            rates[i] = level
            for g, w in groups_of[i]:
                n_unfrozen[g] -= 1
                if n_unfrozen[g] == 0:
                    del load[g]
                else:
                    load[g] -= w
    return rates


def _link_groups(prepared: list[_Prepared], shared: set[int], capacity: list[float]
                 ) -> list[tuple[tuple[tuple[int, float], ...], float]]:
    """The shared links in groups that progressive filling treats alike, as (users: (transfer,
    weight) in transfer order, capacity): the same sums and differences give them the same load
    and residual at every level, so each group is filled once instead of link by link (a
    collective's hundreds of shared links are a few groups).

    The groups come in the order of their first link in the per-link order (each transfer's
    `links & shared` in turn): when several transfers freeze at once, that order decides in which
    order their weights leave the loads, and so the last bits of the rates."""
    crossing = [p.links & shared for p in prepared]   # the same sets, so the same iteration order
    regions: dict[tuple[tuple[int, float, float], ...], set[int]] = {(): shared}
    for i, p in enumerate(prepared):
        if not crossing[i]:
            continue
        refined: dict[tuple[tuple[int, float, float], ...], set[int]] = {}
        for key, region in regions.items():
            inside = region & crossing[i]
            outside = region - inside if inside else region
            if outside:
                refined[key] = outside
            for w, cap, links in (_link_classes(p, capacity) if inside else ()):
                part = inside & links
                if part:
                    refined[key + ((i, w, cap),)] = part
        regions = refined
    by_first: dict[int, list[tuple[tuple[tuple[int, float, float], ...], set[int]]]] = {}
    for key, region in regions.items():
        by_first.setdefault(key[0][0], []).append((key, region))
    out = []
    for i, pending in sorted(by_first.items()):
        for link in crossing[i]:
            if len(pending) == 1:
                break
            for k, (key, region) in enumerate(pending):
                if link in region:
                    out.append(pending.pop(k))
                    break
        out.extend(pending)
    return [(tuple((i, w) for i, w, _cap in key), key[0][2]) for key, _region in out]
