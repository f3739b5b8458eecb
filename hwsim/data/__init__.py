"""Data that ships with hwsim: the example scenarios and the public validation sets.

- ``validation/``: verbatim copies of the project's shared validation folder (published_runs.yaml,
  vtrain_single.yaml and the README that gives their sources, licences and caveats);
  tests/unit/test_packaged_data.py checks they equal ../shared/validation where it is present.
  ``hwsim validate --builtin public`` and ``--builtin vtrain`` read them.
- ``scenarios/``: the top-level ``scenarios/`` folder of the repository, copied into the wheel
  by the build step in setup.py (not kept twice in the repository). In a checkout or an editable
  install, ``scenarios_dir()`` is that folder itself.
"""

from __future__ import annotations

from pathlib import Path

from hwsim.errors import ConfigError

__all__ = ["BUILTIN_VALIDATION", "builtin_validation_file", "scenarios_dir"]

HERE = Path(__file__).resolve().parent

# name -> (file in validation/, what it holds)
BUILTIN_VALIDATION: dict[str, tuple[str, str]] = {
    "public": ("published_runs.yaml", "134 published multi-GPU training runs from papers and framework READMEs"),
    "vtrain": ("vtrain_single.yaml", "150 measured single-node A100 runs from vTrain's ground truth"),
}


def builtin_validation_file(name: str) -> Path:
    """The shipped validation file called `name` (see BUILTIN_VALIDATION)."""
    if name not in BUILTIN_VALIDATION:
        known = "; ".join(f"{k} ({what})" for k, (_, what) in BUILTIN_VALIDATION.items())
        raise ConfigError(f"--builtin: {name!r} is not a validation set hwsim ships; use one of: {known}. "
                          f"Or give the path of a validation YAML file instead of --builtin.")
    return HERE / "validation" / BUILTIN_VALIDATION[name][0]


def scenarios_dir() -> Path:
    """The example scenarios: inside the installed package, else scenarios/ of the checkout."""
    packaged = HERE / "scenarios"
    return packaged if packaged.is_dir() else HERE.parents[1] / "scenarios"

