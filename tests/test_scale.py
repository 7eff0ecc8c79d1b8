"""Data subsampling (stochastic VI) and data placed across devices."""

import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import vibench as vb
from vibench import models


def subsampled_logistic(X, y=None, batch_size=None):
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0], subsample_size=batch_size) as index:
        numpyro.sample("y", dist.Bernoulli(logits=X[index] @ beta), obs=None if y is None else y[index])


@pytest.fixture(scope="module")
def big_logistic():
    return models.logistic_regression_data(100_000, 5)


@pytest.mark.slow
def test_minibatch_fit_matches_the_full_batch_fit(big_logistic):
    X, y = big_logistic
    full = vb.fit(vb.Model.from_numpyro(subsampled_logistic, X, y), guide="fullrank", progress_bar=False)
    model = vb.Model.from_numpyro(subsampled_logistic, X, y, batch_size=1000)
    assert (model.batch_size, model.num_data) == (1000, 100_000)
    mini = vb.fit(model, guide="fullrank", num_steps=20_000, progress_bar=False)
    reference = np.asarray(full.sample(jax.random.key(1), 20_000)["beta"])
    draws = np.asarray(mini.sample(jax.random.key(1), 20_000)["beta"])
    assert np.abs(draws.mean(0) - reference.mean(0)).max() < 0.1 * reference.std(0).min()
    assert np.all((0.8 < draws.std(0) / reference.std(0)) & (draws.std(0) / reference.std(0) < 1.25))
    # Each step saw a minibatch: its per-step ELBO is far noisier than the full-batch one.
    assert np.std(mini.trace.elbo[-500:]) > 100 * np.std(full.trace.elbo[-500:])


@pytest.mark.slow
def test_minibatch_density_is_unbiased_and_scaled():
    X, y = models.logistic_regression_data(200, 3)
    model = vb.Model.from_numpyro(subsampled_logistic, X, y, batch_size=20)
    z = jnp.asarray([0.3, -0.2, 0.1])
    full = float(model.log_density(z))
    prior = float(dist.Normal(0.0, 1.0).log_prob(z).sum())
    key = jax.random.key(0)
    one = float(model.density(key=key).log_density(z))
    index = jax.random.randint(jax.random.fold_in(key, 0), (20,), 0, 200)
    by_hand = prior + 10.0 * float(dist.Bernoulli(logits=X[index] @ z).log_prob(y[index]).sum())
    np.testing.assert_allclose(one, by_hand, rtol=1e-5)
    estimates = jax.vmap(lambda k: model.density(key=k).log_density(z))(jax.random.split(jax.random.key(1), 4000))
    assert abs(float(jnp.mean(estimates)) - full) < 3 * float(jnp.std(estimates)) / np.sqrt(4000)
    # The full-data density ignores the subsample size, and matches the unsubsampled model.
    whole = vb.Model.from_numpyro(subsampled_logistic, X, y)
    np.testing.assert_allclose(full, float(whole.log_density(z)), rtol=1e-6)


def test_log_density_models_declare_data_and_a_batch_size():
    X, y = models.logistic_regression_data(200, 3)
    data = {"X": X, "y": y}

    def log_prior(values):
        return dist.Normal(0.0, 1.0).log_prob(values["beta"]).sum()

    def log_likelihood(values, batch):
        return dist.Bernoulli(logits=batch["X"] @ values["beta"]).log_prob(batch["y"])

    supports = {"beta": dist.constraints.real}
    full = vb.Model.from_log_density(log_prior, supports, shapes={"beta": (3,)}, data=data, log_likelihood=log_likelihood)
    numpyro_model = vb.Model.from_numpyro(subsampled_logistic, X, y)
    z = jnp.asarray([0.3, -0.2, 0.1])
    np.testing.assert_allclose(full.log_density(z), numpyro_model.log_density(z), rtol=1e-5)
    mini = full.with_batch_size(50)
    assert (mini.batch_size, mini.num_data, full.batch_size) == (50, 200, None)
    key = jax.random.key(3)
    index = jax.random.randint(key, (50,), 0, 200)
    by_hand = log_prior({"beta": z}) + 4.0 * log_likelihood({"beta": z}, {"X": X[index], "y": y[index]}).sum()
    np.testing.assert_allclose(mini.density(key=key).log_density(z), by_hand, rtol=1e-5)
    fit = vb.fit(mini, num_steps=200, progress_bar=False)
    assert fit.num_steps <= 200 and np.all(np.isfinite(fit.trace.elbo))


def test_batch_size_errors():
    X, y = models.logistic_regression_data(200, 3)
    with pytest.raises(ValueError, match="batch_size must be an integer in \\[1, 200\\]"):
        vb.Model.from_numpyro(subsampled_logistic, X, y, batch_size=10).with_batch_size(500)
    with pytest.raises(ValueError, match="declares no data to subsample"):
        models.eight_schools().with_batch_size(4)
    with pytest.raises(ValueError, match="data and log_likelihood go together"):
        vb.Model.from_log_density(lambda v: -v["x"] ** 2, {"x": dist.constraints.real}, data={"a": X})


def test_local_latents_in_a_subsampled_plate_are_refused():
    def local(y):
        with numpyro.plate("data", y.shape[0], subsample_size=10):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0))
            numpyro.sample("y", dist.Normal(z, 1.0), obs=y)

    with pytest.raises(ValueError, match="'z' lies inside the subsampled plate 'data'"):
        vb.Model.from_numpyro(local, jnp.zeros(100))


SHARDED = textwrap.dedent(
    """
    import numpy as np, vibench as vb
    from vibench import models
    from vibench.engine import make_engine
    import jax
    assert len(jax.devices()) == 2
    X, y = models.logistic_regression_data(2000, 5)
    config = vb.Config(guide="fullrank", num_particles=4, num_steps=1000, chunk_size=250)
    one = vb.fit(vb.Model.from_numpyro(models.logistic_regression_model, X, y), config, progress_bar=False)
    model = vb.Model.from_numpyro(models.logistic_regression_model, *vb.shard_data(X, y))
    two = vb.fit(model, config, progress_bar=False)
    np.testing.assert_allclose(two.trace.elbo, one.trace.elbo, rtol=1e-5)
    program = make_engine(model, config).run_chunk.lower(two.state, 10).compile().as_text()
    assert "all-reduce" in program, "the likelihood was not split across the devices"
    print("ok")
    """
)


@pytest.mark.slow
def test_sharded_fit_equals_the_single_device_fit():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True, text=True, timeout=600,
                          cwd=pathlib.Path(__file__).parents[1])
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_shard_data_needs_an_even_split():
    devices = jax.devices()[:1] * 1
    assert vb.shard_data(np.ones((3, 2)), devices=devices).shape == (3, 2)
    with pytest.raises(ValueError, match="must divide evenly"):
        vb.shard_data(np.ones(3), devices=jax.devices() * 2 if len(jax.devices()) == 1 else jax.devices())


def test_with_batch_size_none_means_all_data():
    X, y = models.logistic_regression_data(300, 2)
    declared = vb.Model.from_numpyro(subsampled_logistic, X, y, batch_size=50)
    assert declared.batch_size == 50
    full = declared.with_batch_size(None)
    assert full.batch_size is None
    reference = vb.Model.from_numpyro(subsampled_logistic, X, y)
    z = jnp.array([0.3, -0.2])
    np.testing.assert_allclose(full.density(key=jax.random.key(0)).log_density(z), reference.log_density(z), rtol=1e-6)
    assert declared.with_batch_size(20).batch_size == 20
