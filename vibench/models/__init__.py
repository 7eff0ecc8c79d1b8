"""Ready models for demos, tests and teaching.

Each ``*_model`` function is a plain NumPyro model; the short-named builders return a
:class:`vibench.Model` with data attached, e.g. ``vb.models.eight_schools()``. The 2-D teaching
targets (``banana``, ``funnel``, ``mixture``, ``correlated_gaussian``) and their exact moments come
from :mod:`vibench.models.targets`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from ..model import Model
from . import targets
from .targets import *  # noqa: F401,F403 - the 2-D targets, listed once in targets.__all__

__all__ = [
    "EIGHT_SCHOOLS",
    "eight_schools_centered_model",
    "eight_schools_noncentered_model",
    "eight_schools",
    "logistic_regression_model",
    "logistic_regression_data",
    "logistic_regression",
    "hierarchical_regression_model",
    "hierarchical_regression_data",
    "hierarchical_regression",
    *targets.__all__,
]

#: Rubin's (1981) eight schools: estimated coaching effects and their standard errors.
EIGHT_SCHOOLS = {
    "y": np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0], np.float32),
    "sigma": np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0], np.float32),
}


def eight_schools_centered_model(y=None, sigma=None):
    """theta_j ~ Normal(mu, tau): a funnel between tau and theta."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", 8):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def eight_schools_noncentered_model(y=None, sigma=None):
    """theta_j = mu + tau * theta_trans_j, theta_trans_j ~ Normal(0, 1): the same posterior, no funnel."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", 8):
        theta_trans = numpyro.sample("theta_trans", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_trans)
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def eight_schools(centered: bool = False) -> Model:
    """Eight schools with its data, centred or (default) non-centred; dim 10."""
    fn = eight_schools_centered_model if centered else eight_schools_noncentered_model
    return Model.from_numpyro(fn, **EIGHT_SCHOOLS)


def logistic_regression_model(X, y=None):
    """y_i ~ Bernoulli(logit = X_i beta + alpha), beta ~ Normal(0, 1), alpha ~ Normal(0, 5)."""
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 5.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=X @ beta + alpha), obs=y)


def logistic_regression_data(num_data: int = 10_000, num_features: int = 50, seed: int = 0):
    """Simulated ``(X, y)``: standard-normal features, coefficients ~ Normal(0, 0.5)."""
    k_x, k_beta, k_y = jax.random.split(jax.random.key(seed), 3)
    X = jax.random.normal(k_x, (num_data, num_features))
    beta = 0.5 * jax.random.normal(k_beta, (num_features,))
    y = jax.random.bernoulli(k_y, jax.nn.sigmoid(X @ beta + 0.3)).astype(jnp.float32)
    return np.asarray(X), np.asarray(y)


def logistic_regression(num_data: int = 10_000, num_features: int = 50, seed: int = 0) -> Model:
    """Logistic regression on simulated data; dim ``num_features + 1``."""
    X, y = logistic_regression_data(num_data, num_features, seed)
    return Model.from_numpyro(logistic_regression_model, X, y)


def hierarchical_regression_model(x, group, num_groups, y=None):
    """Varying intercepts and slopes by group: y_i ~ Normal(a[g_i] + b[g_i] x_i, sigma)."""
    mu_a = numpyro.sample("mu_a", dist.Normal(0.0, 5.0))
    mu_b = numpyro.sample("mu_b", dist.Normal(0.0, 5.0))
    sigma_a = numpyro.sample("sigma_a", dist.HalfNormal(2.0))
    sigma_b = numpyro.sample("sigma_b", dist.HalfNormal(2.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    with numpyro.plate("group", num_groups):
        a = numpyro.sample("a", dist.Normal(mu_a, sigma_a))
        b = numpyro.sample("b", dist.Normal(mu_b, sigma_b))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Normal(a[group] + b[group] * x, sigma), obs=y)


def hierarchical_regression_data(num_data: int = 5_000, num_groups: int = 100, seed: int = 0):
    """Simulated ``(x, group, num_groups, y)`` for :func:`hierarchical_regression_model`."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, num_groups, num_data)
    a = 1.0 + 0.5 * rng.standard_normal(num_groups)
    b = -0.5 + 0.3 * rng.standard_normal(num_groups)
    x = rng.standard_normal(num_data)
    y = a[group] + b[group] * x + 0.5 * rng.standard_normal(num_data)
    return x.astype(np.float32), group.astype(np.int32), num_groups, y.astype(np.float32)


def hierarchical_regression(num_data: int = 5_000, num_groups: int = 100, seed: int = 0) -> Model:
    """Hierarchical regression on simulated data; dim ``2 * num_groups + 5``."""
    x, group, num_groups, y = hierarchical_regression_data(num_data, num_groups, seed)
    return Model.from_numpyro(hierarchical_regression_model, x, group, num_groups, y)
