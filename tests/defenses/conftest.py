import pytest

from defenses import defenses, make_defense, make_generator

# One parameter set per registered defense; test_every_defense_has_an_example keeps this complete.
EXAMPLES = {
    "none": {},
    "gaussian": {"sigma": 0.3},
    "dp-forward": {"clip": 2.0, "noise_multiplier": 0.5},
    "dx-privacy": {"eta": 5.0},
    "grad-dp": {"clip": 2.0, "noise_multiplier": 0.5},
    "nopeek": {"weight": 1.0},
}


# Each defense at zero strength, where it has one (it must then send h unchanged); a string: why it has none.
ZERO_STRENGTH = {
    "none": {},
    "gaussian": {"sigma": 0.0},
    "dp-forward": "always clips, and its noise multiplier z must be > 0 (a DP mechanism)",
    "dx-privacy": "eta must be > 0 (no noise would be eta = inf: no finite zero strength)",
    "grad-dp": "always clips, and its noise multiplier z must be > 0 (a DP mechanism)",
    "nopeek": {"weight": 0.0},  # identity on the wire at any weight; weight 0 = plain training
}


# Parameter sets of increasing strength (more noise), weakest first; a string: why there is no ladder.
STRENGTHS = {
    "none": "no strength parameter: the identity",
    "gaussian": [{"sigma": 0.1}, {"sigma": 0.5}, {"sigma": 2.0}],
    "dp-forward": [{"clip": 2.0, "noise_multiplier": z} for z in (0.1, 1.0, 4.0)],
    "dx-privacy": [{"eta": e} for e in (100.0, 10.0, 1.0)],
    "grad-dp": [{"clip": 2.0, "noise_multiplier": z} for z in (0.1, 1.0, 4.0)],
    "nopeek": "a training-time penalty: identity on the wire at every weight (no noise to rank)",
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
def strengths():
    return STRENGTHS


@pytest.fixture
def example_defense(defense_name):
    return make_defense(defense_name, **EXAMPLES[defense_name])


@pytest.fixture
def gen():
    return make_generator(seed=1234, secure=False)
