"""docs/scenario.schema.json is the current schema of the scenario model, and it accepts the
scenarios hwsim ships (human units, preset names and the reliability block included)."""

import json

import pytest
import yaml

from hwsim.config.json_schema import schema_text
from tests.conftest import REPO, SMALL

STORED = REPO / "docs" / "scenario.schema.json"


def test_stored_schema_is_current():
    assert STORED.read_text() == schema_text(), (
        "docs/scenario.schema.json is out of date: python -m hwsim.config.json_schema > docs/scenario.schema.json")


def test_schema_accepts_the_shipped_scenarios_and_rejects_a_typo():
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json.loads(STORED.read_text()))
    for path in sorted((REPO / "scenarios").glob("*.yaml")):
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert not errors, (path.name, errors[0].message)
    with_block = {**SMALL, "reliability": {"components": {"gpu": {"mtbf": "100000 h", "per": "device"}},
                                           "checkpoint": {"interval": "auto", "write_bandwidth": "2 TB/s"},
                                           "degraded_links": [{"kind": "nic", "device": 3, "bandwidth_frac": 0.5}]}}
    assert not list(validator.iter_errors(with_block))
    typo = {**SMALL, "reliability": {"components": {"gpu": {"mtbf_h": 5}}}}
    assert list(validator.iter_errors(typo))
