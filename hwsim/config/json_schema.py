"""The scenario's JSON Schema (docs/scenario.schema.json), for editors: pydantic's schema of
`ScenarioConfig`, widened where the loader accepts more than the model's types.

- A quantity field (its type has a BeforeValidator: units, "auto", a version) also takes a
  string: "80 GB", "400 Gb/s", "5 min"; any other number field also takes a number written as
  text ("15.6e12", which YAML 1.1 loaders read as a string and pydantic reads as a number).
- `model` and `cluster.accelerator` also take a preset name, or `{preset: name, ...overrides}`;
  `cluster` also takes `{preset: node-name, ...}`.

Regenerate after changing the schema: `python -m hwsim.config.json_schema > docs/scenario.schema.json`
(tests/unit/test_json_schema.py checks that the stored file is current).
"""

from __future__ import annotations

import json
import typing
from typing import Any

from pydantic import BaseModel, BeforeValidator

from hwsim.config.schema import ScenarioConfig

__all__ = ["scenario_json_schema", "schema_text"]

_QUANTITY = {"type": "string", "description": "a number and a unit (SCENARIO_FORMAT.md, Units), e.g. '80 GB', "
                                              "'400 Gb/s', '989 TFLOPS', '5 min'"}
_PRESET_NAME = {"type": "string", "description": "a preset name (`hwsim presets`)"}
_PRESET_MAPPING = {"type": "object", "required": ["preset"], "properties": {"preset": {"type": "string"}},
                   "description": "a preset and fields that override it"}


def _has_before_validator(annotation: Any) -> bool:
    if any(isinstance(m, BeforeValidator) for m in getattr(annotation, "__metadata__", ())):
        return True
    return any(_has_before_validator(arg) for arg in typing.get_args(annotation))


def _models(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {}

    def visit(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation.__name__ not in found:
                found[annotation.__name__] = annotation
                for field in annotation.model_fields.values():
                    visit(field.annotation)
                    for meta in field.metadata:
                        visit(meta)
        for arg in typing.get_args(annotation):
            visit(arg)

    visit(root)
    return found


def _widen(prop: dict[str, Any], extra: list[dict[str, Any]]) -> dict[str, Any]:
    keep = {k: prop[k] for k in ("title", "description", "default") if k in prop}
    core = {k: v for k, v in prop.items() if k not in keep}
    return {**keep, "anyOf": [core, *extra]}


_NUMBER_TEXT = {"type": "string", "pattern": r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$",
                "description": "a number written as text (YAML 1.1 reads 15.6e12 so)"}
_INTEGER_TEXT = {"type": "string", "pattern": r"^\s*[-+]?\d+\s*$"}


def _numbers_as_text(prop: dict[str, Any]) -> dict[str, Any]:
    """Pydantic (lax mode) reads "15.6e12" into a float field and "8" into an int one."""
    branches = prop.get("anyOf", [prop])
    types = {b.get("type") for b in branches}
    extra = [_NUMBER_TEXT] if "number" in types else [_INTEGER_TEXT] if "integer" in types else []
    if not extra or "string" in types:
        return prop
    if "anyOf" in prop:
        return {**prop, "anyOf": [*prop["anyOf"], *extra]}
    return _widen(prop, extra)


def scenario_json_schema() -> dict[str, Any]:
    schema = ScenarioConfig.model_json_schema()
    defs = schema["$defs"]
    for name, model in _models(ScenarioConfig).items():
        target = schema if model is ScenarioConfig else defs.get(name)
        if target is None:
            continue
        for field_name, field in model.model_fields.items():
            prop = target["properties"].get(field_name)
            widen = (any(isinstance(m, BeforeValidator) for m in field.metadata)
                     or _has_before_validator(field.annotation))
            if prop is not None and widen:
                target["properties"][field_name] = _widen(prop, [_QUANTITY])
            elif prop is not None:
                target["properties"][field_name] = _numbers_as_text(prop)
    schema["properties"]["model"] = _widen(schema["properties"]["model"], [_PRESET_NAME, _PRESET_MAPPING])
    schema["properties"]["cluster"] = _widen(schema["properties"]["cluster"], [_PRESET_MAPPING])
    accelerator = defs["ClusterConfig"]["properties"]
    accelerator["accelerator"] = _widen(accelerator["accelerator"], [_PRESET_NAME, _PRESET_MAPPING])
    group = defs["DeviceGroupConfig"]["properties"]
    group["accelerator"] = _widen(group["accelerator"], [_PRESET_NAME, _PRESET_MAPPING])
    # the loader takes cluster.accelerator from the first of cluster.groups when it is left out
    cluster_def = defs["ClusterConfig"]
    cluster_def["required"] = [r for r in cluster_def.get("required", []) if r != "accelerator"]
    cluster_def["anyOf"] = [{"required": ["accelerator"]}, {"required": ["groups"]}]
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "hwsim scenario"
    return schema


def schema_text() -> str:
    return json.dumps(scenario_json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(schema_text(), end="")
