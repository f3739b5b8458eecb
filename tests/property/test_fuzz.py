"""Fuzz: generated scenarios (the reliability block included) through the loader, one
simulated step and the goodput Monte Carlo never crash, and every rejection names its field.
The 10,000-scenario run is bench/fuzz.py."""

from hypothesis import HealthCheck, given, settings

from tests.property.fuzz_scenarios import check, names_a_field, scenario_mappings


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenario_mappings())
def test_generated_scenarios_never_crash(mapping):
    outcome, message = check(mapping)
    assert outcome not in ("crash", "timeout"), message
    if outcome == "rejected":
        assert names_a_field(message), message
