"""Pipeline schedules: completeness, order, memory bound and the papers' bubble closed forms.

Time convention of `simulate_unit_times`: t_f, t_b, t_w are the times of one step, i.e. one
micro-batch through one model chunk. For interleaved 1F1B a stage whose whole forward takes
T_F runs v chunks of T_F / v each; the tests pick T_F, T_B as multiples of v so that every
time is an integer and the closed forms hold exactly in floating point.
"""

from __future__ import annotations

from collections import Counter

import pytest

from hwsim.config.schema import Schedule
from hwsim.errors import SimulationError
from hwsim.workload.schedules import (
    Action,
    Step,
    chunk_layers,
    peak_in_flight,
    pipeline_schedule,
    simulate_unit_times,
    split_backward,
)

FLAT_KINDS = (Schedule.GPIPE, Schedule.ONE_F_ONE_B, Schedule.ZERO_BUBBLE)
FLAT_GRID = [(pp, m) for pp in (1, 2, 3, 4, 8) for m in (1, 2, 3, 4, 5, 8, 16)]
INTERLEAVED_GRID = [(pp, m, v) for pp in (2, 3, 4, 8) for v in (1, 2, 3, 4) for m in (pp, 2 * pp, 3 * pp)]
ALL_CASES = ([(k, pp, m, 1) for k in FLAT_KINDS for pp, m in FLAT_GRID]
             + [(Schedule.INTERLEAVED, pp, m, v) for pp, m, v in INTERLEAVED_GRID])


def _case_id(case: tuple[Schedule, int, int, int]) -> str:
    kind, pp, m, v = case
    return f"{kind.value}-pp{pp}-m{m}-v{v}"


# --- structure --------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ALL_CASES, ids=_case_id)
def test_every_step_exactly_once_and_in_dependency_order_on_its_stage(case):
    kind, pp, m, v = case
    sched = pipeline_schedule(kind, pp, m, v)
    assert len(sched) == pp
    expected_actions = (Action.F, Action.B, Action.W) if split_backward(kind) else (Action.F, Action.B)
    for steps in sched:
        counts = Counter((st.action, st.micro_batch, st.chunk) for st in steps)
        expected = {(a, mb, c): 1 for a in expected_actions for mb in range(m) for c in range(v)}
        assert dict(counts) == expected
        position = {(st.action, st.micro_batch, st.chunk): i for i, st in enumerate(steps)}
        for mb in range(m):
            for c in range(v):
                assert position[(Action.F, mb, c)] < position[(Action.B, mb, c)]
                if split_backward(kind):
                    assert position[(Action.B, mb, c)] < position[(Action.W, mb, c)]


@pytest.mark.parametrize("case", ALL_CASES, ids=_case_id)
def test_schedule_runs_without_deadlock_and_is_no_faster_than_the_busiest_stage(case):
    kind, pp, m, v = case
    sched = pipeline_schedule(kind, pp, m, v)
    t_f, t_b, t_w = 1.0, 2.0, (1.0 if split_backward(kind) else 0.0)
    makespan = simulate_unit_times(sched, pp, v, t_f, t_b, t_w, t_comm=0.5)
    work = m * v * (t_f + t_b + t_w)
    # lower bounds: one stage's work, and one micro-batch's critical path through every chunk
    critical_path = pp * v * (t_f + t_b) + t_w + (2 * (pp * v - 1) * 0.5 if pp > 1 else 0.0)
    assert makespan >= max(work, critical_path)


def test_split_backward_only_for_zero_bubble():
    assert [split_backward(k) for k in Schedule] == [k == Schedule.ZERO_BUBBLE for k in Schedule]


def test_gpipe_runs_all_forwards_then_all_backwards():
    for steps in pipeline_schedule(Schedule.GPIPE, 4, 6):
        assert [st.action for st in steps] == [Action.F] * 6 + [Action.B] * 6


@pytest.mark.parametrize("pp,m", [(4, 8), (4, 2), (8, 3), (1, 5)])
def test_1f1b_warmup_is_pp_minus_stage_minus_one_then_alternates(pp, m):
    for s, steps in enumerate(pipeline_schedule(Schedule.ONE_F_ONE_B, pp, m)):
        n_warmup = min(pp - s - 1, m)
        actions = [st.action for st in steps]
        assert actions[:n_warmup] == [Action.F] * n_warmup
        steady = actions[n_warmup:n_warmup + 2 * (m - n_warmup)]
        assert steady == [Action.F, Action.B] * (m - n_warmup)
        assert actions[n_warmup + 2 * (m - n_warmup):] == [Action.B] * n_warmup


def test_interleaved_order_follows_megatron_groups_of_pp():
    # pp=2, v=2, m=4, stage 0: warm-up (2-0-1)·2 + (2-1)·2 = 4 forwards: mb 0,1 through chunk 0,
    # then mb 0,1 through chunk 1; backwards start on the last chunk.
    steps = pipeline_schedule(Schedule.INTERLEAVED, 2, 4, 2)[0]
    assert steps[:6] == (Step(Action.F, 0, 0), Step(Action.F, 1, 0), Step(Action.F, 0, 1),
                         Step(Action.F, 1, 1), Step(Action.F, 2, 0), Step(Action.B, 0, 1))
    assert steps[-1] == Step(Action.B, 3, 0)


def test_interleaved_with_one_chunk_is_1f1b():
    assert pipeline_schedule(Schedule.INTERLEAVED, 4, 8, 1) == pipeline_schedule(Schedule.ONE_F_ONE_B, 4, 8)


def test_zb_h1_stage_s_defers_s_weight_gradients():
    pp, m = 4, 8
    for s, steps in enumerate(pipeline_schedule(Schedule.ZERO_BUBBLE, pp, m)):
        trailing_w = 0
        for st in reversed(steps):
            if st.action != Action.W:
                break
            trailing_w += 1
        assert trailing_w == s + 1  # the cool-down's own W plus the s deferred ones
        assert steps[:pp - s - 1] == tuple(Step(Action.F, i) for i in range(pp - s - 1))


# --- closed forms (t_comm = 0) ------------------------------------------------------------------

@pytest.mark.parametrize("kind", [Schedule.GPIPE, Schedule.ONE_F_ONE_B])
@pytest.mark.parametrize("pp,m", FLAT_GRID)
@pytest.mark.parametrize("t_f,t_b", [(1.0, 2.0), (1.0, 1.0), (3.0, 5.0)])
def test_gpipe_and_1f1b_makespan_is_m_plus_pp_minus_one_times_step(kind, pp, m, t_f, t_b):
    makespan = simulate_unit_times(pipeline_schedule(kind, pp, m), pp, 1, t_f, t_b)
    assert makespan == (m + pp - 1) * (t_f + t_b)
    ideal = m * (t_f + t_b)
    assert (makespan - ideal) / ideal == pytest.approx((pp - 1) / m)


@pytest.mark.parametrize("pp,m,v", [c for c in INTERLEAVED_GRID if c[2] > 1])
@pytest.mark.parametrize("stage_t_f,stage_t_b", [(1.0, 2.0), (1.0, 1.0), (2.0, 3.0)])
def test_interleaved_bubble_is_1f1b_bubble_over_v(pp, m, v, stage_t_f, stage_t_b):
    big_t_f, big_t_b = stage_t_f * v, stage_t_b * v  # whole-stage times; each chunk takes 1/v
    makespan = simulate_unit_times(pipeline_schedule(Schedule.INTERLEAVED, pp, m, v), pp, v,
                                   t_f=big_t_f / v, t_b=big_t_b / v)
    assert makespan == m * (big_t_f + big_t_b) + (pp - 1) * (big_t_f + big_t_b) / v


@pytest.mark.parametrize("pp", [2, 3, 4, 8])
@pytest.mark.parametrize("m_over_pp", [1, 2, 3])
def test_zb_h1_bubble_is_a_third_of_1f1b_with_equal_f_b_w(pp, m_over_pp):
    m, t = pp * m_over_pp, 1.0
    zb = simulate_unit_times(pipeline_schedule(Schedule.ZERO_BUBBLE, pp, m), pp, 1, t_f=t, t_b=t, t_w=t)
    ofob = simulate_unit_times(pipeline_schedule(Schedule.ONE_F_ONE_B, pp, m), pp, 1, t_f=t, t_b=2 * t)
    ideal = 3 * m * t
    assert zb - ideal == (pp - 1) * t            # Qi et al. 2023: (p-1)(T_F + T_B - T_W)
    assert ofob - ideal == 3 * (pp - 1) * t      # 1F1B: (p-1)(T_F + T_B + T_W)
    assert (zb - ideal) * 3 == ofob - ideal


@pytest.mark.parametrize("pp,m", [(2, 2), (4, 4), (4, 6), (8, 16)])
@pytest.mark.parametrize("t_f,t_b,t_w", [(2.0, 3.0, 1.0), (1.0, 2.0, 1.0), (3.0, 2.0, 2.0), (2.0, 1.0, 1.0)])
def test_zb_h1_bubble_matches_paper_formula_when_w_no_longer_than_b(pp, m, t_f, t_b, t_w):
    makespan = simulate_unit_times(pipeline_schedule(Schedule.ZERO_BUBBLE, pp, m), pp, 1, t_f, t_b, t_w)
    assert makespan == m * (t_f + t_b + t_w) + (pp - 1) * (t_f + t_b - t_w)


# --- communication -----------------------------------------------------------------------------

@pytest.mark.parametrize("pp,m", [(1, 4), (2, 3), (4, 8), (8, 2)])
@pytest.mark.parametrize("t_comm", [0.25, 1.0])
def test_gpipe_pays_each_hop_once_per_direction(pp, m, t_comm):
    makespan = simulate_unit_times(pipeline_schedule(Schedule.GPIPE, pp, m), pp, 1, 1.0, 2.0, t_comm=t_comm)
    assert makespan == (m + pp - 1) * 3.0 + 2 * (pp - 1) * t_comm


@pytest.mark.parametrize("kind", [Schedule.ONE_F_ONE_B, Schedule.ZERO_BUBBLE])
def test_communication_latency_never_shortens_a_step(kind):
    pp, m = 4, 8
    sched = pipeline_schedule(kind, pp, m)
    times = [simulate_unit_times(sched, pp, 1, 1.0, 1.0, 1.0, t_comm=c) for c in (0.0, 0.5, 1.0, 2.0)]
    assert times == sorted(times)
    assert times[1] >= times[0] + 2 * (pp - 1) * 0.5


# --- memory ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [Schedule.ONE_F_ONE_B, Schedule.ZERO_BUBBLE])
@pytest.mark.parametrize("pp,m", FLAT_GRID)
def test_1f1b_and_zb_h1_hold_at_most_pp_minus_s_micro_batches(kind, pp, m):
    for s, steps in enumerate(pipeline_schedule(kind, pp, m)):
        assert peak_in_flight(steps) == min(pp - s, m)


@pytest.mark.parametrize("pp,m", FLAT_GRID)
def test_zb_h1_weight_stash_peaks_at_1f1b_peak_on_every_stage(pp, m):
    peaks = [peak_in_flight(steps, released_by=Action.W)
             for steps in pipeline_schedule(Schedule.ZERO_BUBBLE, pp, m)]
    assert max(peaks) == max(peak_in_flight(st) for st in pipeline_schedule(Schedule.ONE_F_ONE_B, pp, m))
    assert all(p <= min(pp, m) for p in peaks)


@pytest.mark.parametrize("pp,m", FLAT_GRID)
def test_gpipe_holds_every_micro_batch(pp, m):
    assert [peak_in_flight(steps) for steps in pipeline_schedule(Schedule.GPIPE, pp, m)] == [m] * pp


@pytest.mark.parametrize("pp,m,v", [c for c in INTERLEAVED_GRID if c[2] > 1 and c[1] > c[0]])
def test_interleaved_stash_is_megatron_warmup_plus_one(pp, m, v):
    for s, steps in enumerate(pipeline_schedule(Schedule.INTERLEAVED, pp, m, v)):
        n_warmup = min((pp - s - 1) * 2 + (v - 1) * pp, m * v)
        assert peak_in_flight(steps) == min(n_warmup + 1, m * v)


def test_interleaved_with_m_equal_pp_runs_all_forwards_first():
    for steps in pipeline_schedule(Schedule.INTERLEAVED, 4, 4, 2):
        assert [st.action for st in steps] == [Action.F] * 8 + [Action.B] * 8


def test_peak_in_flight_rejects_release_by_forward():
    with pytest.raises(ValueError, match="released_by"):
        peak_in_flight((Step(Action.F, 0), Step(Action.B, 0)), released_by=Action.F)


# --- layers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_layers,pp,v", [(32, 4, 1), (32, 4, 2), (30, 4, 2), (126, 16, 1), (96, 8, 3),
                                           (7, 7, 1), (80, 3, 1)])
def test_chunk_layers_partition_in_virtual_stage_order(n_layers, pp, v):
    layers = chunk_layers(n_layers, pp, v)
    assert len(layers) == pp and all(len(row) == v for row in layers)
    in_order = [layers[j % pp][j // pp] for j in range(pp * v)]  # virtual stage j = c·pp + s
    assert [i for r in in_order for i in r] == list(range(n_layers))
    sizes = [len(r) for r in in_order]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    if n_layers % (pp * v) <= pp * v - 2:  # room for the extra layers away from both ends
        assert sizes[0] == sizes[-1] == min(sizes)
    else:  # only one end can be spared: the last, which also computes the logits and the loss
        assert sizes[-1] == min(sizes)


def test_chunk_layers_llama3_405b_layout():
    # 126 layers on pp=16: the first and last stages get 7 layers, the others 8 (Llama 3 §3.3.2)
    sizes = [len(row[0]) for row in chunk_layers(126, 16, 1)]
    assert sizes == [7] + [8] * 14 + [7]


def test_chunk_layers_interleaving_gives_stage_s_virtual_stages_s_and_s_plus_pp():
    layers = chunk_layers(16, 4, 2)
    assert layers[0] == [range(0, 2), range(8, 10)]
    assert layers[3] == [range(6, 8), range(14, 16)]


def test_chunk_layers_needs_a_layer_per_virtual_stage():
    with pytest.raises(ValueError, match="at least one layer"):
        chunk_layers(7, 4, 2)


# --- bad input ---------------------------------------------------------------------------------

def test_interleaved_needs_micro_batches_multiple_of_pp():
    with pytest.raises(ValueError, match="multiple of pp=4"):
        pipeline_schedule(Schedule.INTERLEAVED, 4, 6, 2)


@pytest.mark.parametrize("kind", FLAT_KINDS)
def test_virtual_stages_need_the_interleaved_schedule(kind):
    with pytest.raises(ValueError, match="interleaved"):
        pipeline_schedule(kind, 4, 8, 2)


@pytest.mark.parametrize("args", [(0, 4, 1), (2, 0, 1), (2, 4, 0)])
def test_sizes_must_be_positive(args):
    with pytest.raises(ValueError, match=">= 1"):
        pipeline_schedule(Schedule.ONE_F_ONE_B, *args)


def test_simulation_detects_deadlock():
    # stage 0 waits for B0 from stage 1, which waits for F1 that stage 0 only runs after B0
    sched = ((Step(Action.F, 0), Step(Action.B, 0), Step(Action.F, 1), Step(Action.B, 1)),
             (Step(Action.F, 1), Step(Action.F, 0), Step(Action.B, 0), Step(Action.B, 1)))
    with pytest.raises(SimulationError, match="deadlock"):
        simulate_unit_times(sched, 2)


def test_simulation_rejects_missing_and_repeated_steps():
    with pytest.raises(ValueError, match="lacks B of micro-batch 0"):
        simulate_unit_times(((Step(Action.F, 0),), (Step(Action.F, 0), Step(Action.B, 0))), 2)
    with pytest.raises(ValueError, match="repeats"):
        simulate_unit_times(((Step(Action.F, 0), Step(Action.F, 0), Step(Action.B, 0)),), 1)
    with pytest.raises(ValueError, match="chunk outside"):
        simulate_unit_times(((Step(Action.F, 0, 1), Step(Action.B, 0, 1)),), 1, virtual_stages=1)
    with pytest.raises(ValueError, match="stages but pp=2"):
        simulate_unit_times(pipeline_schedule(Schedule.GPIPE, 1, 2), 2)


def test_tiny_1f1b_timeline_exact():
    # pp=2, m=2, t_f=1, t_b=2: stage 1 runs F0[1,2] B0[2,4] F1[4,5] B1[5,7]; stage 0 B1 ends at 9
    sched = pipeline_schedule(Schedule.ONE_F_ONE_B, 2, 2)
    assert sched[0] == (Step(Action.F, 0), Step(Action.F, 1), Step(Action.B, 0), Step(Action.B, 1))
    assert sched[1] == (Step(Action.F, 0), Step(Action.B, 0), Step(Action.F, 1), Step(Action.B, 1))
    assert simulate_unit_times(sched, 2, 1, 1.0, 2.0) == 9.0
