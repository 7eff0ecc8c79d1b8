import jax
import pytest


@pytest.fixture
def getkey():
    """Fresh, explicit keys: getkey() returns a new key each call, deterministic per test."""
    state = {"key": jax.random.key(1234)}

    def next_key():
        state["key"], key = jax.random.split(state["key"])
        return key

    return next_key
