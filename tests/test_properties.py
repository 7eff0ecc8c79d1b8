"""Property-based tests (hypothesis): Config validation and the guides' math, over random inputs."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import vibench as vb
from vibench.config import INITS, OPTIMIZERS, SCHEDULES
from vibench.engine import chunk_noise
from vibench.guides import GUIDES, DeltaParams, FullRankParams, LowRankParams, MeanFieldParams, draw
from vibench.objectives import OBJECTIVES

# No example database: runs do not write into the checkout, and each run draws afresh.
FAST = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- Config

FIELDS = [f.name for f in dataclasses.fields(vb.Config)]
NAMES = sorted(GUIDES) + sorted(OBJECTIVES) + sorted(OPTIMIZERS) + list(SCHEDULES) + list(INITS) + ["custom"]
JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(), st.text(max_size=3))
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 40),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.floats(0.0, 2.0),
    st.builds(np.float32, st.floats(-2.0, 2.0, width=32)),
    st.builds(np.int64, st.integers(-3, 40)),
    st.sampled_from(NAMES),
    st.text(max_size=6),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.sampled_from(["b1", "momentum", "weight_decay", "nesterov", "rank", "a"]), JSON_SCALAR, max_size=2),
    st.dictionaries(st.one_of(st.text(max_size=2), st.integers(0, 2)), st.one_of(JSON_SCALAR, st.lists(JSON_SCALAR, max_size=2)), max_size=2),
)


def _check(changes: dict) -> None:
    """Either a valid Config that survives JSON, or a TypeError/ValueError naming a changed field."""
    try:
        config = vb.Config(**changes)
    except (TypeError, ValueError) as err:
        assert any(name in str(err) for name in changes), (changes, err)
        return
    text = config.to_json()
    assert vb.Config.from_json(text) == config
    assert vb.Config.from_json(text).to_json() == text
    assert json.loads(text)["vibench_config"] == 1
    assert config.replace() == config


@settings(FAST, max_examples=300)
@given(name=st.sampled_from(FIELDS), value=VALUES)
def test_one_random_field_gives_a_valid_config_or_an_error_naming_it(name, value):
    _check({name: value})


@settings(FAST, max_examples=300)
@given(changes=st.dictionaries(st.sampled_from(FIELDS), VALUES, min_size=2, max_size=5))
def test_random_fields_give_a_valid_config_or_an_error_naming_one(changes):
    _check(changes)


# ---------------------------------------------------------------- guides

SMALL = st.floats(-1.0, 1.0, width=32)


def _vector(d, low=-1.0, high=1.0):
    return hnp.arrays(np.float32, (d,), elements=st.floats(low, high, width=32))


@st.composite
def guide_params(draw_, name, d):
    loc = draw_(_vector(d, -3.0, 3.0))
    if name == "meanfield":
        return MeanFieldParams(jnp.asarray(loc), jnp.asarray(draw_(_vector(d, -2.0, 1.0))))
    if name in ("fullrank", "laplace", "pathfinder"):
        raw = draw_(hnp.arrays(np.float32, (d, d), elements=SMALL))
        raw[np.diag_indices(d)] = draw_(_vector(d, -2.0, 1.0))
        return FullRankParams(jnp.asarray(loc), jnp.asarray(raw))
    if name == "lowrank":
        rank = draw_(st.integers(1, d))
        factor = draw_(hnp.arrays(np.float32, (d, rank), elements=SMALL))
        return LowRankParams(jnp.asarray(loc), jnp.asarray(factor), jnp.asarray(draw_(_vector(d, -2.0, 1.0))))
    return DeltaParams(jnp.asarray(loc))


def _covariance(name, params) -> np.ndarray:
    """The guide's covariance, in float64, from its params."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    if name == "meanfield":
        return np.diag(np.exp(2 * p.log_scale))
    if name in ("fullrank", "laplace", "pathfinder"):
        scale = np.tril(p.tril, -1) + np.diag(np.exp(np.diag(p.tril)))
        return scale @ scale.T
    return p.cov_factor @ p.cov_factor.T + np.diag(np.exp(2 * p.log_diag))


# The families with closed-form moments (the flows are checked in test_guides and test_families).
GAUSSIANS = ["meanfield", "fullrank", "lowrank", "delta", "laplace", "pathfinder"]

# One compiled program per family and dimension: op-by-op dispatch would compile every primitive
# anew, and shapes that vary freely are checked by tracing alone (jax.eval_shape).
DRAW = jax.jit(lambda name, params, key, n: draw(GUIDES[name], params, key, n), static_argnums=(0, 3))
LOG_PROB = jax.jit(lambda name, params, z: GUIDES[name].log_prob(params, z), static_argnums=0)
ENTROPY = jax.jit(lambda name, params: GUIDES[name].entropy(params), static_argnums=0)
STD = jax.jit(lambda name, params: GUIDES[name].std(params), static_argnums=0)


@pytest.mark.slow
@settings(FAST, max_examples=30)
@given(name=st.sampled_from(GAUSSIANS), d=st.integers(1, 4), n=st.integers(1, 10_000), particles=st.integers(1, 64), data=st.data())
def test_draws_have_the_right_shapes_and_finite_log_prob(name, d, n, particles, data):
    guide = GUIDES[name]
    params = data.draw(guide_params(name, d))
    key = jax.random.key(data.draw(st.integers(0, 2**31 - 1)))
    assert jax.eval_shape(lambda k: draw(guide, params, k, n), key).shape == (n, d)
    assert jax.eval_shape(guide.log_prob, params, jax.ShapeDtypeStruct((n, d), jnp.float32)).shape == (n,)
    assert guide.mean(params).shape == (d,) and STD(name, params).shape == (d,)
    z = DRAW(name, params, key, 16)
    assert np.all(np.isfinite(z)) and np.all(np.isfinite(LOG_PROB(name, params, z)))
    # A chunk's noise for `particles` draws per step, as the engine draws it, from any step on.
    steps, start = data.draw(st.integers(1, 200)), data.draw(st.integers(0, 10_000))
    noise_shape = (particles, guide.noise_dim(params))
    eps = jax.eval_shape(lambda k: chunk_noise(k, jnp.int32(start), steps, noise_shape), jax.random.key(0, impl="rbg"))
    assert eps.shape == (steps, *noise_shape)
    assert jax.eval_shape(guide.transform, params, jnp.zeros(noise_shape)).shape == (particles, d)
    if not guide.point:
        np.testing.assert_allclose(STD(name, params) ** 2, np.diag(_covariance(name, params)), rtol=1e-4, atol=1e-6)


DRAWS = 4000


@settings(FAST, max_examples=15)
@given(name=st.sampled_from([n for n in sorted(GUIDES) if GUIDES[n].entropy is not None]), d=st.integers(1, 4), data=st.data())
def test_closed_form_entropy_agrees_with_the_covariance_and_monte_carlo(name, d, data):
    params = data.draw(guide_params(name, d))
    entropy = float(ENTROPY(name, params))
    _, log_det = np.linalg.slogdet(2 * np.pi * np.e * _covariance(name, params))
    assert entropy == pytest.approx(0.5 * log_det, rel=1e-4, abs=1e-3)
    z = DRAW(name, params, jax.random.key(data.draw(st.integers(0, 2**31 - 1))), DRAWS)
    log_q = np.asarray(LOG_PROB(name, params, z), np.float64)
    standard_error = log_q.std() / np.sqrt(DRAWS)
    assert abs(-log_q.mean() - entropy) < 6 * standard_error + 1e-3
