"""The errors hwsim raises on purpose.

A `HwsimError` is a user-facing problem: the CLI prints its message as one paragraph on
stderr and exits with code 2. Anything else escaping the CLI is a bug of ours.
"""


class HwsimError(Exception):
    """Base of every error meant for the user."""


class ConfigError(HwsimError):
    """The scenario, sweep or flag is malformed: names the field and the fix."""


class PlanError(HwsimError):
    """The parallel plan is impossible for this model and cluster: says why and the fix."""


class SimulationError(HwsimError):
    """The simulation could not finish (a deadlock in the task graph is a bug of the compiler)."""
