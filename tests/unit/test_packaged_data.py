"""The data hwsim ships (hwsim/data): the validation sets are the shared ones, unchanged, and
the example scenarios are found in a checkout as in an installed wheel (tests/e2e/test_wheel.py)."""

import pytest
import yaml

from hwsim.data import BUILTIN_VALIDATION, builtin_validation_file, scenarios_dir
from hwsim.errors import ConfigError
from tests.conftest import REPO, SHARED


@pytest.mark.parametrize("name", ["published_runs.yaml", "vtrain_single.yaml", "README.md"])
def test_packaged_validation_files_equal_the_shared_ones(name):
    shared = SHARED / "validation" / name
    if not shared.exists():
        pytest.skip("../shared/validation is not beside this checkout (nothing to compare the copy with)")
    assert (REPO / "hwsim" / "data" / "validation" / name).read_bytes() == shared.read_bytes(), (
        f"hwsim/data/validation/{name} differs from {shared}: copy it again")


@pytest.mark.parametrize("name", sorted(BUILTIN_VALIDATION))
def test_builtin_sets_keep_their_source_comments_and_counts(name):
    path = builtin_validation_file(name)
    text = path.read_text()
    assert text.startswith("# hwsim validation records")
    records = yaml.safe_load(text)
    stated = int(BUILTIN_VALIDATION[name][1].split()[0])   # "134 published ..."
    assert len(records) == stated
    assert all(r.get("source") for r in records)


def test_unknown_builtin_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"--builtin: 'nope'.*public.*vtrain"):
        builtin_validation_file("nope")


def test_scenarios_dir_in_a_checkout_is_the_top_level_folder():
    assert scenarios_dir() == REPO / "scenarios"
    assert (scenarios_dir() / "gpt3-175b-1024xa100.yaml").is_file()
