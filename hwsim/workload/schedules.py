"""Pipeline schedules: the in-order list of steps each pipeline stage executes in one step.

A schedule says, for every device of a pipeline group (stage ``s`` in ``0..pp-1``), in which
order it runs the forward (F), backward (B) and, for zero-bubble, weight-gradient (W) work of
every micro-batch and every model chunk it holds. The compiler turns these lists into tasks;
`simulate_unit_times` plays them with fixed step times, so that their bubbles can be checked
against the closed forms of the papers.

Schedules (``Schedule`` in `hwsim.config.schema`):

- **GPipe** (Huang et al., "GPipe: Efficient Training of Giant Neural Networks using Pipeline
  Parallelism", NeurIPS 2019): every forward, then every backward. Bubble (pp−1)(t_f+t_b);
  all m micro-batches' activations are held at once.
- **1F1B** (PipeDream-Flush: Narayanan et al., "Memory-Efficient Pipeline-Parallel DNN
  Training", ICML 2021; Megatron-LM ``forward_backward_pipelining_without_interleaving``):
  stage s runs min(pp−s−1, m) warm-up forwards, then alternates one forward and one
  backward, then drains the remaining backwards. Same bubble as GPipe, but at most pp−s
  micro-batches in flight on stage s.
- **Interleaved 1F1B** (Narayanan et al., "Efficient Large-Scale Language Model Training on
  GPU Clusters Using Megatron-LM", SC'21, §2.2.2; Megatron-LM
  ``forward_backward_pipelining_with_interleaving``): each device holds v model chunks;
  chunk c of stage s is global virtual stage c·pp+s. Micro-batches go in groups of pp through
  chunk 0, then chunk 1, ...; warm-up is (pp−s−1)·2 + (v−1)·pp forwards (capped at m·v; all
  m·v when m == pp, as Megatron does). Bubble (pp−1)(t_f+t_b)/v. Needs m % pp == 0.
- **ZB-H1** (Qi et al., "Zero Bubble (Almost) Pipeline Parallelism", ICLR 2024,
  arXiv:2401.10241, handcrafted schedule H1, Fig. 3; step order as microsoft/Megatron-DeepSpeed
  ``megatron/core/pipeline_parallel/deepspeed_schedule.py``, ``ZeroBubbleH1Pipeline`` with
  ``enable_zbh1_exact_semantics``): the backward is split into B (input gradient) and W
  (weight gradient). Stage s runs the 1F1B warm-up, then s F-B pairs whose W is deferred,
  then F-B-W triples, then B-W pairs, then the s deferred W's. The chain of B's is no longer
  slowed by W, and the deferred W's fill the cool-down: bubble (pp−1)(t_f+t_b−t_w) when
  t_w ≤ t_b (a third of 1F1B's (pp−1)(t_f+t_b+t_w) when t_f = t_b = t_w, with m ≥ pp), with
  the same in-flight micro-batches as 1F1B.

Bubble closed forms are checked by `simulate_unit_times` in tests/unit/test_schedules.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from hwsim.config.schema import Schedule
from hwsim.errors import SimulationError

__all__ = ["Action", "Step", "chunk_layers", "peak_in_flight", "pipeline_schedule",
           "simulate_unit_times", "split_backward"]


class Action(StrEnum):
    F = "F"  # forward
    B = "B"  # backward: input gradient when split (zero-bubble), else the whole backward
    W = "W"  # weight gradient (zero-bubble only)


@dataclass(frozen=True, slots=True)
class Step:
    """One unit of pipeline work on a device: `action` of micro-batch `micro_batch` through
    the device's model chunk `chunk` (0..v-1; global virtual stage chunk·pp + stage)."""

    action: Action
    micro_batch: int
    chunk: int = 0


StageSteps = tuple[Step, ...]


def split_backward(kind: Schedule) -> bool:
    """True when the schedule runs B (input gradient) and W (weight gradient) as separate steps."""
    return kind == Schedule.ZERO_BUBBLE


def pipeline_schedule(kind: Schedule, pp: int, n_micro: int,
                      virtual_stages: int = 1) -> tuple[StageSteps, ...]:
    """The in-order steps of every pipeline stage (index = stage, the device's rank in the pp
    group). Raises ValueError for an impossible combination, with the reason."""
    if pp < 1 or n_micro < 1 or virtual_stages < 1:
        raise ValueError(f"pp={pp}, n_micro={n_micro} and virtual_stages={virtual_stages} must all be >= 1")
    if kind == Schedule.INTERLEAVED:
        if n_micro % pp:
            raise ValueError(f"interleaved 1F1B needs the number of micro-batches ({n_micro}) to be a "
                             f"multiple of pp={pp} (Megatron-LM processes them in groups of pp)")
        if virtual_stages == 1:
            return tuple(_one_f_one_b(pp, n_micro, s) for s in range(pp))
        return tuple(_interleaved(pp, n_micro, virtual_stages, s) for s in range(pp))
    if virtual_stages != 1:
        raise ValueError(f"schedule {kind.value} runs one model chunk per device; virtual_stages="
                         f"{virtual_stages} needs the interleaved schedule")
    if kind == Schedule.GPIPE:
        return tuple(_gpipe(n_micro) for _ in range(pp))
    if kind == Schedule.ONE_F_ONE_B:
        return tuple(_one_f_one_b(pp, n_micro, s) for s in range(pp))
    if kind == Schedule.ZERO_BUBBLE:
        return tuple(_zb_h1(pp, n_micro, s) for s in range(pp))
    raise ValueError(f"unknown pipeline schedule {kind!r}")


def _gpipe(m: int) -> StageSteps:
    return tuple(Step(Action.F, i) for i in range(m)) + tuple(Step(Action.B, i) for i in range(m))


def _one_f_one_b(pp: int, m: int, s: int) -> StageSteps:
    n_warmup = min(pp - s - 1, m)
    out = [Step(Action.F, i) for i in range(n_warmup)]
    for i in range(m - n_warmup):
        out += [Step(Action.F, n_warmup + i), Step(Action.B, i)]
    out += [Step(Action.B, i) for i in range(m - n_warmup, m)]
    return tuple(out)


def _zb_h1(pp: int, m: int, s: int) -> StageSteps:
    out: list[Step] = []
    n_f = n_b = n_w = 0

    def f() -> None:
        nonlocal n_f
        out.append(Step(Action.F, n_f))
        n_f += 1

    def b() -> None:
        nonlocal n_b
        out.append(Step(Action.B, n_b))
        n_b += 1

    def w() -> None:
        nonlocal n_w
        out.append(Step(Action.W, n_w))
        n_w += 1

    for _ in range(min(pp - s - 1, m)):   # warm-up, as 1F1B
        f()
    for _ in range(s):                     # F-B pairs: stage s defers s weight gradients
        if n_f == m:
            break
        f()
        b()
    while n_f < m:                         # steady state: F-B-W
        f()
        b()
        w()
    while n_b < m:                         # cool-down: B-W
        b()
        w()
    while n_w < m:                         # the deferred W's fill the tail
        w()
    return tuple(out)


def _interleaved(pp: int, m: int, v: int, s: int) -> StageSteps:
    total = m * v
    group = pp * v

    def micro_batch(k: int) -> int:
        return (k // group) * pp + k % pp

    def chunk(k: int, forward: bool) -> int:
        c = (k % group) // pp
        return c if forward else v - 1 - c

    if m == pp:
        n_warmup = total
    else:
        n_warmup = min((pp - s - 1) * 2 + (v - 1) * pp, total)
    out = [Step(Action.F, micro_batch(k), chunk(k, True)) for k in range(n_warmup)]
    for k in range(total - n_warmup):
        kf = n_warmup + k
        out += [Step(Action.F, micro_batch(kf), chunk(kf, True)),
                Step(Action.B, micro_batch(k), chunk(k, False))]
    out += [Step(Action.B, micro_batch(k), chunk(k, False)) for k in range(total - n_warmup, total)]
    return tuple(out)


def chunk_layers(n_layers: int, pp: int, virtual_stages: int) -> list[list[range]]:
    """The layers of each (stage, chunk): ``out[s][c]`` are the layers of global virtual
    stage c·pp + s (Megatron-LM interleaving). Layers are split as evenly as possible; when
    they do not divide, the first and last virtual stages (which also carry the embedding and
    the loss) get the fewer layers, as Llama 3 did ("we reduce one Transformer layer each from
    the first and the last stages"; Dubey et al. 2024, "The Llama 3 Herd of Models", §3.3.2;
    405B: 126 layers, pp=16, Table 4).
    When only one end can be spared, it is the last (the logits outweigh the embedding)."""
    n_virtual = pp * virtual_stages
    if pp < 1 or virtual_stages < 1:
        raise ValueError(f"pp={pp} and virtual_stages={virtual_stages} must be >= 1")
    if n_layers < n_virtual:
        raise ValueError(f"{n_layers} layers cannot fill pp·virtual_stages = {pp}·{virtual_stages} = "
                         f"{n_virtual} virtual stages; each needs at least one layer")
    base, extra = divmod(n_layers, n_virtual)
    first_extra = (n_virtual - extra) // 2
    bounds = [0]
    for j in range(n_virtual):
        bounds.append(bounds[-1] + base + (1 if first_extra <= j < first_extra + extra else 0))
    return [[range(bounds[c * pp + s], bounds[c * pp + s + 1]) for c in range(virtual_stages)]
            for s in range(pp)]


def peak_in_flight(steps: Sequence[Step], released_by: Action = Action.B) -> int:
    """The most (micro-batch, chunk) pairs a stage holds at once whose forward is done and
    whose `released_by` step has not started, in units of one micro-batch through one chunk.
    With B (the default) this is the activation stash the schedules bound (pp − s on stage s
    for 1F1B and ZB-H1); with W it also counts the inputs kept for deferred weight gradients
    (ZB-H1 holds up to pp on every stage: 1F1B's peak, now on every stage). A list without W
    steps releases at B either way."""
    if released_by == Action.F:
        raise ValueError("released_by must be B or W")
    if released_by == Action.W and not any(st.action == Action.W for st in steps):
        released_by = Action.B
    held = peak = 0
    for step in steps:
        if step.action == Action.F:
            held += 1
            peak = max(peak, held)
        elif step.action == released_by:
            held -= 1
    return peak


def simulate_unit_times(schedule: Sequence[Sequence[Step]], pp: int, virtual_stages: int = 1,
                        t_f: float = 1.0, t_b: float = 2.0, t_w: float = 0.0,
                        t_comm: float = 0.0) -> float:
    """The makespan of `schedule` when every step takes a fixed time: t_f per F, t_b per B,
    t_w per W, each for one micro-batch through one model chunk (so for v chunks of a stage
    whose whole forward takes T_F, pass t_f = T_F / v). A dependency that crosses devices
    costs t_comm more (the rules are those of `step_times`)."""
    duration_s = {Action.F: t_f, Action.B: t_b, Action.W: t_w}
    times = step_times(schedule, pp, virtual_stages, lambda _s, st: duration_s[st.action], t_comm)
    return max((end for _start, end, _s, _i, _st in times), default=0.0)


def step_times(schedule: Sequence[Sequence[Step]], pp: int, virtual_stages: int,
               seconds: Callable[[int, Step], float], t_comm: float = 0.0
               ) -> list[tuple[float, float, int, int, Step]]:
    """(start, end, stage, index, step) of every step when step `st` of stage `s` takes
    `seconds(s, st)`, in the order they were resolved. Each stage runs its steps in order, one
    at a time. F of (mb, virtual stage j) needs F of (mb, j−1); B of (mb, j) needs B of
    (mb, j+1) and F of (mb, j); W of (mb, j) needs B of (mb, j); a dependency that crosses
    devices costs t_comm more. Raises SimulationError when the schedule deadlocks and
    ValueError when it misses or repeats a step."""
    if len(schedule) != pp:
        raise ValueError(f"schedule has {len(schedule)} stages but pp={pp}")
    n_virtual = pp * virtual_stages
    keys = [[(st.action, st.micro_batch, st.chunk * pp + s) for st in steps] for s, steps in enumerate(schedule)]
    _check_complete(keys, n_virtual, virtual_stages)
    done: dict[tuple[Action, int, int], float] = {}
    next_index = [0] * pp
    free_at = [0.0] * pp
    out: list[tuple[float, float, int, int, Step]] = []
    remaining = sum(len(k) for k in keys)
    while remaining:
        progressed = False
        for s in range(pp):
            while next_index[s] < len(keys[s]):
                i = next_index[s]
                key = keys[s][i]
                ready = _ready_time(key, done, pp, n_virtual, t_comm)
                if ready is None:
                    break
                start = max(free_at[s], ready)
                free_at[s] = done[key] = start + seconds(s, schedule[s][i])
                out.append((start, free_at[s], s, i, schedule[s][i]))
                next_index[s] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            waiting = {s: schedule[s][next_index[s]] for s in range(pp) if next_index[s] < len(keys[s])}
            raise SimulationError(f"pipeline schedule deadlocks; stages wait on {waiting}")
    return out


def _ready_time(key: tuple[Action, int, int], done: dict[tuple[Action, int, int], float],
                pp: int, n_virtual: int, t_comm: float) -> float | None:
    """When the step `key` = (action, mb, virtual stage) may start, or None if a dependency
    has not run yet."""
    action, mb, j = key
    deps: list[tuple[tuple[Action, int, int], float]] = []
    if action == Action.F and j > 0:
        deps.append(((Action.F, mb, j - 1), _comm(j - 1, j, pp, t_comm)))
    elif action == Action.B:
        deps.append(((Action.F, mb, j), 0.0))
        if j < n_virtual - 1:
            deps.append(((Action.B, mb, j + 1), _comm(j + 1, j, pp, t_comm)))
    elif action == Action.W:
        deps.append(((Action.B, mb, j), 0.0))
    ready = 0.0
    for dep, delay_s in deps:
        if dep not in done:
            return None
        ready = max(ready, done[dep] + delay_s)
    return ready


def _comm(j_from: int, j_to: int, pp: int, t_comm: float) -> float:
    return t_comm if j_from % pp != j_to % pp else 0.0


def _check_complete(keys: list[list[tuple[Action, int, int]]], n_virtual: int, v: int) -> None:
    """Every micro-batch that appears has F and B (and W, when any W appears) on every virtual
    stage, each exactly once and on the stage that holds that virtual stage."""
    seen: set[tuple[Action, int, int]] = set()
    for s, stage_keys in enumerate(keys):
        for key in stage_keys:
            if key in seen:
                raise ValueError(f"stage {s} repeats step {key}")
            if not 0 <= key[2] < n_virtual or key[2] % len(keys) != s:
                raise ValueError(f"stage {s} has step {key} of a chunk outside 0..{v - 1}")
            seen.add(key)
    actions = [Action.F, Action.B] + ([Action.W] if any(k[0] == Action.W for k in seen) else [])
    for mb in sorted({k[1] for k in seen}):
        for j in range(n_virtual):
            for action in actions:
                if (action, mb, j) not in seen:
                    raise ValueError(f"schedule lacks {action.value} of micro-batch {mb} on virtual "
                                     f"stage {j} (stage {j % len(keys)}, chunk {j // len(keys)})")
