"""MoE routing arithmetic: where the tokens of one MoE layer go, as Megatron-Core moves them.

Pure functions (no SimPy, no timing), used by `hwsim.workload.ops` to build the MoE block and by
tests and notebooks to show the traffic.

Routing model. The validation runs force balanced routing (Megatron-Core
`moe_router_force_load_balancing`: random router logits, so each token picks top_k distinct
experts uniformly); a what-if may skew it with `model.moe.imbalance` (tokens of the busiest
expert-parallel rank over the mean: the step waits for that rank) or cap it with
`model.moe.capacity_factor` (token dropping with padding to the capacity, Megatron-Core
`moe_expert_capacity_factor` + `moe_pad_expert_input_to_capacity`: every expert then computes
exactly capacity_factor × its mean tokens).

Dispatchers (Megatron-Core megatron/core/transformer/moe/token_dispatcher.py, `Dispatcher`):

- alltoall (MoEAlltoAllTokenDispatcher): permute the local tokens into one copy per chosen
  expert (top_k copies), all-to-all over the ep group, all-gather over the etp group when
  etp > 1, sort the received chunks by local expert; the combine runs the same steps backwards
  and the un-permute sums each token's top_k outputs weighted by its routing probabilities.
  A token routed to two experts on the same rank is sent twice.
- allgather (MoEAllGatherTokenDispatcher): all-gather every token of the etp·ep group onto
  every rank, keep those routed to the local experts; the combine is a reduce-scatter of the
  full buffer. Communication does not depend on top_k.
- flex (MoEFlexTokenDispatcher over DeepEP / HybridEP): fused kernels send each token once to
  every rank that holds at least one of its experts (de-duplicated) and combine in the kernel;
  a local permute puts the received tokens in expert order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hwsim.config.schema import MoeDispatcher
from hwsim.errors import ConfigError

__all__ = ["expected_destination_ranks", "a2a_traffic_matrix", "RankTokens", "rank_tokens", "DISPATCHERS"]

DISPATCHERS = tuple(d.value for d in MoeDispatcher)


def expected_destination_ranks(experts: int, top_k: int, ep: int) -> float:
    """Expected number of distinct ep ranks a token's top_k experts live on, with the experts
    chosen uniformly without replacement and E/ep consecutive experts per rank:
    ep · (1 − C(E − E/ep, k) / C(E, k)) (the probability that a given rank holds none of them)."""
    if experts % ep:
        raise ConfigError(f"ep={ep} does not divide {experts} experts")
    if top_k > experts:
        raise ConfigError(f"top_k {top_k} exceeds the {experts} experts")
    per_rank = experts // ep
    miss = math.comb(experts - per_rank, top_k) / math.comb(experts, top_k)
    return ep * (1.0 - miss)


def a2a_traffic_matrix(n_tokens: int, token_bytes: float, experts: int, top_k: int, ep: int,
                       dispatcher: str = "alltoall") -> list[list[float]]:
    """Bytes ep rank i sends to ep rank j in one dispatch of one ep group (the combine sends the
    transpose), each rank routing `n_tokens` tokens of `token_bytes` under balanced routing.
    The diagonal is what stays on the rank. alltoall: every rank sends n·top_k/ep copies to
    each rank; flex: n·D/ep, D = expected_destination_ranks; allgather: every token to every rank."""
    dispatcher = _check(dispatcher)
    if dispatcher == MoeDispatcher.ALLTOALL:
        per_pair = n_tokens * top_k / ep
    elif dispatcher == MoeDispatcher.FLEX:
        per_pair = n_tokens * expected_destination_ranks(experts, top_k, ep) / ep
    else:
        per_pair = float(n_tokens)
    return [[per_pair * token_bytes for _ in range(ep)] for _ in range(ep)]


@dataclass(frozen=True, slots=True)
class RankTokens:
    """Token counts of one MoE layer on the busiest rank (one micro-batch)."""

    routed: float          # tokens this rank routes (its share of the tp group's tokens)
    sent: float            # token rows it sends in the dispatch (the all-to-all's send buffer)
    received: float        # token copies it receives for its local experts, before the etp gather
    expert_rows: float     # rows its local experts compute (after the etp gather), all experts together
    per_expert: float      # rows of one local expert's GEMM


def rank_tokens(routed: float, experts: int, top_k: int, ep: int, etp: int, dispatcher: str,
                imbalance: float = 1.0, capacity_factor: float | None = None) -> RankTokens:
    """Where one rank's `routed` tokens go (module docstring). With balanced routing every rank
    receives as many copies as it sends (routed·top_k); the busiest receives `imbalance` times
    that; a capacity factor pads every expert to capacity_factor × its mean (and drops the rest)."""
    dispatcher = _check(dispatcher)
    copies = routed * top_k
    if capacity_factor is not None:
        received = copies * capacity_factor
    else:
        received = copies * imbalance
    if dispatcher == MoeDispatcher.ALLTOALL:
        sent = copies
    elif dispatcher == MoeDispatcher.FLEX:
        sent = routed * expected_destination_ranks(experts, top_k, ep)
    else:
        sent = routed
    local = experts // ep
    rows = received * etp
    return RankTokens(routed=routed, sent=sent, received=received, expert_rows=rows, per_expert=rows / local)


def _check(dispatcher: str) -> MoeDispatcher:
    try:
        return MoeDispatcher(dispatcher)
    except ValueError:
        raise ConfigError(f"software.moe_dispatcher: unknown dispatcher {dispatcher!r}; use one of "
                          f"{', '.join(DISPATCHERS)} (Megatron-Core moe_token_dispatcher_type)") from None
