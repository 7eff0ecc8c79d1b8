import jax
import pytest

import vibench as vb


@pytest.fixture
def getkey():
    """Fresh, explicit keys: getkey() returns a new key each call, deterministic per test."""
    state = {"key": jax.random.key(1234)}

    def next_key():
        state["key"], key = jax.random.split(state["key"])
        return key

    return next_key


@pytest.fixture(scope="module")
def schools():
    """The non-centred eight schools, the model most fits here are run on; one per test module."""
    return vb.models.eight_schools()
