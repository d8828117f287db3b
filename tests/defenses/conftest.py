import pytest

from defenses import defenses, make_defense, make_generator

# One parameter set per registered defense; test_every_defense_has_an_example keeps this complete.
EXAMPLES = {
    "none": {},
    "gaussian": {"sigma": 0.3},
    "dp-forward": {"clip": 2.0, "noise_multiplier": 0.5},
}


# Each defense at zero strength, where it has one (it must then send h unchanged); None: no zero strength
# (dp-forward always clips and needs z > 0).
ZERO_STRENGTH = {
    "none": {},
    "gaussian": {"sigma": 0.0},
    "dp-forward": None,
}


def pytest_generate_tests(metafunc):
    """Any test taking `defense_name` runs once per registered defense (one shared suite for all)."""
    if "defense_name" in metafunc.fixturenames:
        metafunc.parametrize("defense_name", defenses.names())


@pytest.fixture
def examples():
    return EXAMPLES


@pytest.fixture
def zero_strength():
    return ZERO_STRENGTH


@pytest.fixture
def example_defense(defense_name):
    return make_defense(defense_name, **EXAMPLES[defense_name])


@pytest.fixture
def gen():
    return make_generator(seed=1234, secure=False)
