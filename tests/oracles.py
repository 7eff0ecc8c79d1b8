"""Targets with known answers, fits placed exactly where a test needs them, a fit's draws read
back from an export, and the Config the Workbench and Runner tests start from."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.stats import norm
from numpyro.distributions import constraints

import vibench as vb
from vibench import arviz_compat
from vibench.state import Precond, identity_precond
from vibench.guides import FullRankParams, MeanFieldParams, get_guide


def gaussian(cov, mean=None) -> vb.Model:
    """An unnormalised Gaussian over ``x`` ``(d,)``; its normaliser is ``gaussian_log_z(cov)``."""
    cov = jnp.asarray(cov, jnp.float32)
    mean = jnp.zeros(cov.shape[0]) if mean is None else jnp.asarray(mean, jnp.float32)
    precision = jnp.linalg.inv(cov)

    def log_density(values):
        r = values["x"] - mean
        return -0.5 * r @ precision @ r

    return vb.Model.from_log_density(log_density, {"x": constraints.real}, shapes={"x": cov.shape[:1]}, name="gaussian")


def gaussian_log_z(cov) -> float:
    cov = np.asarray(cov, np.float64)
    return 0.5 * cov.shape[0] * np.log(2 * np.pi) + 0.5 * np.linalg.slogdet(cov)[1]


def correlated(rho):
    return np.array([[1.0, rho], [rho, 1.0]])


def fullrank_params(cov, mean) -> FullRankParams:
    """The full-rank guide equal to N(mean, cov) under the identity preconditioner."""
    chol = np.linalg.cholesky(np.asarray(cov, np.float64))
    tril = np.tril(chol, -1) + np.diag(np.log(np.diag(chol)))
    return FullRankParams(jnp.asarray(mean, jnp.float32), jnp.asarray(tril, jnp.float32))


def meanfield_params(loc, scale) -> MeanFieldParams:
    return MeanFieldParams(jnp.asarray(loc, jnp.float32), jnp.log(jnp.asarray(scale, jnp.float32)))


def whitened(mean, scale):
    """``(params, precond)`` of a guide equal to N(mean, scale scale^T) in the model's flat space,
    with its params in whitened coordinates far from the model's: the preconditioner has twice the
    scale and a shifted centre, so code that mixes up ``u`` and ``z`` gets a wrong answer.

    ``scale`` ``(d, d)`` (a Cholesky factor): full-rank params; ``scale`` ``(d,)``: mean-field params.
    """
    mean, scale = np.asarray(mean, np.float64), np.asarray(scale, np.float64)
    offset = np.linspace(0.5, -0.5, mean.shape[0])  # the params' location in u
    if scale.ndim == 2:
        precond_scale, log_det = 2 * scale, np.sum(np.log(2 * np.diag(scale)))
        shift = mean - precond_scale @ offset
        params = FullRankParams(jnp.asarray(offset, jnp.float32), jnp.asarray(np.diag(np.full(len(mean), np.log(0.5))), jnp.float32))
    else:
        precond_scale, log_det = 2 * scale, np.sum(np.log(2 * scale))
        shift = mean - precond_scale * offset
        params = meanfield_params(offset, np.full(mean.shape, 0.5))
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return params, Precond(f32(shift), f32(precond_scale), f32(log_det))


def fit_at(model, params, precond=None, trace=None, start=None, **config) -> vb.Fit:
    """A Fit whose guide sits at ``params`` (no training; an empty trace unless given one), in
    the coordinates of ``precond`` (default: none, the model's own flat space)."""
    config = vb.Config(**config)
    if precond is None:
        precond = identity_precond(jnp.zeros(model.dim, jnp.float32), get_guide(config.guide).whitening)
    state = vb.State(params, (), jax.random.key(0), jnp.int32(0), jnp.int32(0), vb.hyper_from_config(config), precond)
    if trace is None:
        empty = np.zeros(0, np.float32)
        trace = vb.Trace(empty, empty, empty, np.zeros(0, bool))
    return vb.Fit(model, config, state, trace, wall_time=0.0, start=start)


SKEW = 5.0
#: Mean of the skew-normal(0, 1, SKEW): delta * sqrt(2 / pi), delta = a / sqrt(1 + a^2).
SKEW_MEAN = SKEW / np.sqrt(1 + SKEW**2) * np.sqrt(2 / np.pi)


def skew_normal() -> vb.Model:
    def log_density(values):
        x = values["x"]
        return norm.logpdf(x) + norm.logcdf(SKEW * x)

    return vb.Model.from_log_density(log_density, {"x": constraints.real}, name="skew_normal")


def bimodal() -> vb.Model:
    """Equal mixture of N(-4, 1) and N(4, 1): two modes a Gaussian guide cannot both cover."""

    def log_density(values):
        x = values["x"]
        return jnp.logaddexp(norm.logpdf(x, -4.0, 1.0), norm.logpdf(x, 4.0, 1.0))

    return vb.Model.from_log_density(log_density, {"x": constraints.real}, name="bimodal")


SIGMA = 2.0


def normal_mean_model(y=None, num=None):
    """y_i ~ Normal(mu, SIGMA), mu ~ Normal(0, 10): a conjugate model with a closed-form likelihood."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    with numpyro.plate("obs_id", num if y is None else y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, SIGMA), obs=y)


NORMAL_Y = np.array([1.2, -0.3, 2.5, 0.8, 1.9, 3.1, -1.0, 0.4, 1.6, 2.2, 0.9, 1.1], np.float32)


def normal_mean_posterior(y=NORMAL_Y, prior_sd=10.0):
    """Posterior mean and sd of mu (conjugate Normal-Normal)."""
    precision = 1 / prior_sd**2 + len(y) / SIGMA**2
    return float(np.sum(y) / SIGMA**2 / precision), float(np.sqrt(1 / precision))


def log_scale_model(y=None):
    """y_i ~ Normal(log s, 1), s ~ LogNormal(0, 1): log s, the model's flat coordinate, has a
    Normal posterior, so a Gaussian guide can be exact while s itself is constrained."""
    s = numpyro.sample("s", dist.LogNormal(0.0, 1.0))
    with numpyro.plate("obs_id", y.shape[0]):
        numpyro.sample("y", dist.Normal(jnp.log(s), 1.0), obs=y)


LOG_SCALE_Y = np.array([0.3, -0.5, 1.1, 0.2, 0.8, -0.1], np.float32)


def log_scale_posterior(y=LOG_SCALE_Y):
    """Posterior mean and sd of log s (conjugate Normal-Normal)."""
    precision = 1.0 + len(y)
    return float(np.sum(y) / precision), float(np.sqrt(1 / precision))


def draws_of(data, group: str, name: str) -> np.ndarray:
    """A variable of an export's group, every chain's draws in order: ``(chains * draws, *shape)``,
    the fit's draws for a one-fit export whatever its chains (ArviZ 0.23 gets two)."""
    values = np.asarray(arviz_compat.group(data, group)[name].values)
    return values.reshape((-1,) + values.shape[2:])


def one_fit_sizes(num_draws: int) -> tuple:
    """``(chains, draws)`` of a one-fit export: ArviZ 0.23 warns on one chain, so there an even
    count of at least eight draws is two chains."""
    if arviz_compat.MAJOR == 0 and num_draws % 2 == 0 and num_draws >= 8:
        return 2, num_draws // 2
    return 1, num_draws


# A conjugate Normal in 2-D: two means, a known correlated observation covariance (an exact posterior).

TWO_MEANS_PRIOR_SD = 2.0
TWO_MEANS_COV = np.array([[1.0, 0.8], [0.8, 1.0]], np.float32)
TWO_MEANS_Y = np.array([[1.0, 2.0], [0.5, 1.2], [1.5, 2.2], [0.8, 1.9], [1.2, 1.1]], np.float32)


def two_means_model(y):
    theta = numpyro.sample("theta", dist.Normal(0.0, TWO_MEANS_PRIOR_SD).expand([2]).to_event(1))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.MultivariateNormal(theta, TWO_MEANS_COV), obs=y)


def two_means_posterior():
    prec = np.eye(2) / TWO_MEANS_PRIOR_SD**2 + len(TWO_MEANS_Y) * np.linalg.inv(TWO_MEANS_COV)
    cov = np.linalg.inv(prec)
    return cov @ np.linalg.inv(TWO_MEANS_COV) @ TWO_MEANS_Y.sum(0), cov


def workbench_config(**changes):
    """A Config for interactive runs: long enough to pause or stop mid-run, in chunks of 100 steps."""
    base = dict(guide="meanfield", init="prior", schedule="constant", num_steps=20_000, chunk_size=100, seed=3)
    return vb.Config(**{**base, **changes})
