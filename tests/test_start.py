"""The default starting stage: BFGS MAP, Laplace, whitening.

The fits here use nothing but ``vb.fit(model, guide=...)``: the defaults alone must get badly scaled
and strongly correlated posteriors right, and say so when they cannot start from a MAP.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC, NUTS

import vibench as vb
from vibench.start import _laplace


def linear_regression(X, y, noise_sd, prior_sd):
    beta = numpyro.sample("beta", dist.Normal(0.0, prior_sd).expand([X.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Normal(X @ beta, noise_sd), obs=y)


@pytest.fixture(scope="module")
def badly_scaled_regression():
    """Predictors on scales 1e-3 .. 1e3 (coefficient sds 1e3 .. 1e-3) and the exact posterior."""
    rng = np.random.default_rng(0)
    scales = np.array([1e-3, 1e-1, 1.0, 1e1, 1e3])
    X = (rng.normal(size=(60, 5)) * scales).astype(np.float32)
    noise_sd, prior_sd = 0.5, 1e3
    y = (X @ (1.0 / scales) + noise_sd * rng.normal(size=60)).astype(np.float32)
    X64 = X.astype(np.float64)
    cov = np.linalg.inv(X64.T @ X64 / noise_sd**2 + np.eye(5) / prior_sd**2)
    mean = cov @ X64.T @ y.astype(np.float64) / noise_sd**2
    return vb.Model.from_numpyro(linear_regression, X, y, noise_sd, prior_sd), mean, cov


def assert_close_in_sds(draws, mean, sd, mean_tol=0.1, sd_range=(0.8, 1.25)):
    draws = np.asarray(draws, np.float64)
    errors = np.abs(draws.mean(0) - mean) / sd
    ratios = draws.std(0) / sd
    assert errors.max() < mean_tol, errors
    assert sd_range[0] < ratios.min() and ratios.max() < sd_range[1], ratios


def test_badly_scaled_regression_by_default(badly_scaled_regression):
    model, mean, cov = badly_scaled_regression
    fit = vb.fit(model, guide="fullrank", progress_bar=False)
    assert fit.start.method == "laplace" and fit.start.message == "" and fit.start.seconds > 0
    assert_close_in_sds(fit.sample(jax.random.key(1), 10_000)["beta"], mean, np.sqrt(np.diag(cov)))


def test_laplace_start_of_a_gaussian_posterior_is_the_posterior(badly_scaled_regression):
    model, mean, cov = badly_scaled_regression
    fit = vb.fit(model, guide="fullrank", num_steps=1, learning_rate=1e-9, progress_bar=False)
    sd = np.sqrt(np.diag(cov))
    precond = fit.precond
    np.testing.assert_allclose((np.asarray(precond.shift) - mean) / sd, 0.0, atol=1e-2)
    scale = np.asarray(precond.scale, np.float64)
    np.testing.assert_allclose(scale @ scale.T / np.outer(sd, sd), cov / np.outer(sd, sd), atol=1e-2)
    # The model's coordinates come back from every method, whatever the guide's coordinates are.
    z = fit.sample_unconstrained(jax.random.key(2), 3)
    exact = dist.MultivariateNormal(jnp.asarray(mean, jnp.float32), jnp.asarray(cov, jnp.float32))
    np.testing.assert_allclose(fit.log_q(z), exact.log_prob(z), rtol=1e-3)


def test_meanfield_is_whitened_by_the_diagonal(badly_scaled_regression):
    model, _, cov = badly_scaled_regression
    fit = vb.fit(model, guide="meanfield", num_steps=1, learning_rate=1e-9, progress_bar=False)
    assert fit.precond.scale.shape == (5,)
    # The Laplace diagonal is the conditional sd, 1/sqrt(precision_ii), not the marginal one.
    np.testing.assert_allclose(fit.precond.scale, 1.0 / np.sqrt(np.diag(np.linalg.inv(cov))), rtol=1e-2)


def test_strongly_correlated_gaussian_by_default():
    scales = np.array([0.01, 1.0, 100.0, 3.0])
    covariance = (np.full((4, 4), 0.99) + 0.01 * np.eye(4)) * np.outer(scales, scales)
    mean = np.array([1.0, -2.0, 300.0, 0.0])
    target = dist.MultivariateNormal(jnp.asarray(mean, jnp.float32), jnp.asarray(covariance, jnp.float32))
    model = vb.Model.from_log_density(lambda v: target.log_prob(v["x"]), {"x": dist.constraints.real}, shapes={"x": (4,)})
    fit = vb.fit(model, guide="fullrank", progress_bar=False)
    assert_close_in_sds(fit.sample(jax.random.key(1), 10_000)["x"], mean, scales)


def logistic_regression(X, y):
    intercept = numpyro.sample("intercept", dist.Normal(0.0, 10.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([X.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Bernoulli(logits=intercept + X @ beta), obs=y)


@pytest.mark.slow
def test_badly_scaled_logistic_regression_matches_nuts():
    rng = np.random.default_rng(1)
    scales = np.array([1e-2, 1.0, 1e2])
    X = (rng.normal(size=(400, 3)) * scales).astype(np.float32)
    logits = 0.3 + X @ (np.array([1.0, -1.0, 0.5]) / scales)
    y = (rng.random(400) < 1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    # 10,000 draws: a mean's Monte Carlo error near 0.02 sd, small beside the 0.1 sd tolerance.
    mcmc = MCMC(NUTS(logistic_regression, dense_mass=True), num_warmup=1000, num_samples=10_000, progress_bar=False)
    mcmc.run(jax.random.key(0), X, y)
    reference = np.column_stack([mcmc.get_samples()["intercept"], mcmc.get_samples()["beta"]])

    fit = vb.fit(vb.Model.from_numpyro(logistic_regression, X, y), guide="fullrank", progress_bar=False)
    draws = fit.sample(jax.random.key(1), 10_000)
    draws = np.column_stack([draws["intercept"], draws["beta"]])
    assert_close_in_sds(draws, reference.mean(0), reference.std(0))


def test_a_funnel_falls_back_to_the_plain_start_and_says_so():
    model = vb.models.eight_schools(centered=True)
    with pytest.warns(UserWarning, match="no MAP"):
        fit = vb.fit(model, guide="fullrank", progress_bar=False)
    assert fit.start.method == "prior" and "funnel" in fit.start.message
    plain = vb.fit(model, guide="fullrank", init="prior", schedule="constant", progress_bar=False)
    key = jax.random.key(3)
    assert fit.elbo(key, num_particles=5000) >= plain.elbo(key, num_particles=5000) - 0.05


def test_curvature_that_is_not_positive_definite_falls_back():
    x, grad = np.zeros(2), np.zeros(2)
    # Indefinite with a positive diagonal (float32 curvature noise on a near-singular posterior):
    # whitened by the diagonal only.
    start = _laplace(x, grad, np.array([[1.0, 2.0], [2.0, 1.0]]), "full")
    assert start.method == "laplace-diagonal" and "not positive definite" in start.message
    np.testing.assert_allclose(np.diag(np.asarray(start.precond.scale)), 1.0)
    # No curvature at all along an axis, or a point still far up a slope: no Laplace start.
    assert _laplace(x, grad, np.array([[1.0, 0.0], [0.0, 0.0]]), "full") is None
    assert _laplace(x, np.array([30.0, 0.0]), np.eye(2), "diag") is None


def test_a_flat_topped_posterior_still_fits():
    # Quartic: zero curvature at the mode. The finite-difference curvature sees it at the scale
    # of its steps, and the fit from there is right.
    model = vb.Model.from_log_density(
        lambda v: -(v["x"] ** 4).sum() - (v["x"][0] - v["x"][1]) ** 2, {"x": dist.constraints.real}, shapes={"x": (2,)}
    )
    fit = vb.fit(model, guide="fullrank", progress_bar=False)
    assert np.all(np.isfinite(fit.trace.elbo)) and np.abs(fit.mean()["x"]).max() < 0.1
    assert np.all((0.3 < fit.std()["x"]) & (fit.std()["x"] < 0.8))


def test_map_start_and_prior_start(badly_scaled_regression):
    model, mean, cov = badly_scaled_regression
    by_map = vb.fit(model, init="map", num_steps=1, learning_rate=1e-9, progress_bar=False)
    assert by_map.start.method == "map"
    np.testing.assert_allclose(by_map.precond.scale, 1.0)
    np.testing.assert_allclose((np.asarray(by_map.precond.shift) - mean) / np.sqrt(np.diag(cov)), 0.0, atol=1e-2)
    plain = vb.fit(model, init="prior", num_steps=1, learning_rate=1e-9, progress_bar=False)
    assert plain.start.method == "prior" and plain.start.seconds == 0.0
    np.testing.assert_allclose(plain.precond.shift, model.init_z)
