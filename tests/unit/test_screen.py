"""Screening (closed form) against the schedules' recurrence and the event simulation."""

import pytest

from hwsim.config.loader import load_scenario
from hwsim.config.schema import Schedule
from hwsim.simulate import run_step
from hwsim.studies.screen import Estimator, in_flight_chunks, pipeline_makespan, screen
from hwsim.workload.plan import resolve_plan
from hwsim.workload.schedules import Action, peak_in_flight, pipeline_schedule, simulate_unit_times
from tests.conftest import REPO

CASES = [(k, pp, m, v) for k in Schedule for pp in (1, 2, 4, 8) for m in (1, 3, pp, 2 * pp, 4 * pp)
         for v in ((1, 2, 3) if k == Schedule.INTERLEAVED else (1,))
         if not (k == Schedule.INTERLEAVED and (pp == 1 or m % pp))]


@pytest.mark.parametrize("kind, pp, m, v", CASES)
def test_in_flight_closed_form_matches_schedule(kind, pp, m, v):
    sched = pipeline_schedule(kind, pp, m, v)
    for s in range(pp):
        assert in_flight_chunks(kind, pp, m, v, s) == peak_in_flight(sched[s], Action.B)   # the compiler's release
        for release in (Action.B, Action.W):
            assert in_flight_chunks(kind, pp, m, v, s, release) == peak_in_flight(sched[s], release)


@pytest.mark.parametrize("kind, pp, m, v", CASES)
def test_makespan_closed_form_matches_recurrence(kind, pp, m, v):
    t_f, t_b, t_w = (1.0, 1.0, 1.0) if kind == Schedule.ZERO_BUBBLE else (1.0, 2.0, 0.0)
    closed = pipeline_makespan(kind, pp, m, v, t_f * v, t_b * v, t_w * v, 0.0)
    exact = simulate_unit_times(pipeline_schedule(kind, pp, m, v), pp, v, t_f, t_b, t_w, 0.0)
    assert closed == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize("name, tol", [("gpt2-xl-8xa100", 0.02), ("llama3-8b-16xh100-pp", 0.02),
                                       ("mixtral-8x7b-32xh100-ep", 0.02), ("gpt3-175b-1024xa100", 0.05),
                                       ("llama3-70b-64xh100-fsdp", 0.20)])
def test_screen_agrees_with_simulation(name, tol):
    sc = load_scenario(REPO / "scenarios" / f"{name}.yaml")
    fast, slow = screen(sc), run_step(sc).summary
    assert fast["step_time_s"] == pytest.approx(slow["step_time_s"], rel=tol)
    assert fast["peak_memory_bytes"] == pytest.approx(slow["peak_memory_bytes"], rel=0.05)


def test_screen_and_the_planner_share_one_estimator():
    sc = load_scenario(REPO / "scenarios" / "llama3-8b-16xh100-pp.yaml")
    summary = screen(sc)
    est = Estimator.of(sc)
    assert Estimator.of(sc) is est          # a study's scenarios reuse the topology and kernel tables
    e = est.estimate(resolve_plan(sc))
    assert (summary["step_time_s"], summary["peak_memory_bytes"]) == (e.step_time_s, e.memory_bytes)
    assert 0 < e.lower_bound_s <= e.step_time_s
    assert sum(summary["breakdown"].values()) == pytest.approx(summary["step_time_s"], rel=1e-12)
