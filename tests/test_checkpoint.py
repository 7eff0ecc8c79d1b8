"""Checkpoints: a loaded fit carries on exactly as the saved one would. (Bad files: test_errors.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest
from numpyro.distributions import constraints

import vibench as vb
from vibench.engine import trace_count

COV = jnp.array([[1.0, 0.9, 0.0], [0.9, 1.0, 0.3], [0.0, 0.3, 2.0]])


@pytest.fixture(scope="module")
def model():
    return vb.Model.from_log_density(
        lambda v: dist.MultivariateNormal(jnp.array([1.0, -1.0, 0.5]), COV).log_prob(v["x"])
        + dist.Gamma(3.0, 2.0).log_prob(v["s"]),
        {"x": constraints.real, "s": constraints.positive},
        shapes={"x": (3,)},
        name="gaussian_and_gamma",
    )


def _assert_same(a, b):
    for x, y in zip(a.trace, b.trace):
        np.testing.assert_array_equal(x, y)
    leaves = lambda fit: jax.tree.leaves((fit.params, fit.state.opt_state, fit.precond, fit.state.hyper))  # noqa: E731
    for x, y in zip(leaves(a), leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(jax.random.key_data(a.state.key), jax.random.key_data(b.state.key))
    assert int(a.state.step) == int(b.state.step) and int(a.state.num_rejected) == int(b.state.num_rejected)


def test_save_load_resume_equals_resuming_the_original(model, tmp_path):
    config = vb.Config(guide="fullrank", num_particles=2, learning_rate=0.05, num_steps=600, chunk_size=100)
    fit = vb.fit(model, config, progress_bar=False)
    path = tmp_path / "fit.npz"
    fit.save(path)
    loaded = vb.Fit.load(path, model)

    assert loaded.config == fit.config and loaded.stop_reason == fit.stop_reason
    assert loaded.memory == fit.memory and loaded.wall_time == fit.wall_time
    assert loaded.start.method == fit.start.method == "laplace" and loaded.start.scale == fit.start.scale
    assert str(jax.random.key_impl(loaded.state.key)) == "rbg"
    _assert_same(loaded, fit)
    np.testing.assert_array_equal(loaded.sample(jax.random.key(3), 5)["s"], fit.sample(jax.random.key(3), 5)["s"])

    more = config.replace(num_steps=400)
    resumed = vb.fit(model, more, init=fit, progress_bar=False)
    before = trace_count()
    resumed_loaded = vb.fit(model, more, init=loaded, progress_bar=False)
    assert trace_count() == before  # the restored state has the original's types: no recompile
    _assert_same(resumed_loaded, resumed)
    assert resumed_loaded.num_steps == 600 + 400 or resumed_loaded.stop_reason == "converged"


def test_a_custom_optimizer_is_passed_again_on_load(model, tmp_path):
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(2e-2))
    fit = vb.fit(model, init="prior", num_steps=300, chunk_size=100, optimizer=optimizer, progress_bar=False)
    fit.save(tmp_path / "custom.npz")
    loaded = vb.Fit.load(tmp_path / "custom.npz", model, optimizer=optimizer)
    _assert_same(loaded, fit)
    _assert_same(
        vb.fit(model, loaded.config, init=loaded, progress_bar=False),
        vb.fit(model, fit.config, init=fit, progress_bar=False),
    )


def test_the_file_is_plain_arrays_written_where_asked(model, tmp_path):
    fit = vb.fit(model, init="prior", num_steps=20, chunk_size=10, progress_bar=False)
    path = tmp_path / "run.checkpoint"
    fit.save(path)
    fit.save(path)  # overwriting is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.checkpoint"]  # no suffix added, no partial left
    with np.load(path, allow_pickle=False) as archive:  # nothing in it needs unpickling
        assert all(archive[name].dtype != object for name in archive.files)
