"""One build step beyond pyproject.toml: the example scenarios.

scenarios/ stays a top-level folder of the repository (the README and the tests use it there);
the wheel also carries it as hwsim/data/scenarios/, so `hwsim.data.scenarios_dir()` finds the
examples after a non-editable `pip install`. An editable install reads scenarios/ in place.
tests/e2e/test_wheel.py builds a wheel and checks that it holds them.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithScenarios(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        src = ROOT / "scenarios"
        for path in sorted(src.rglob("*.yaml")):
            target = Path(self.build_lib, "hwsim", "data", "scenarios", path.relative_to(src))
            self.mkpath(str(target.parent))
            self.copy_file(str(path), str(target))


setup(cmdclass={"build_py": BuildPyWithScenarios})
