"""Two-dimensional teaching targets with known answers: banana, Neal's funnel, a Gaussian mixture
and a correlated Gaussian.

Each builder returns a :class:`vibench.Model` over one site ``x`` of shape ``(2,)`` on the real
plane, so the model's flat space is the plane itself: ``model.log_density(z)`` and
``fit.log_q(z)`` can be drawn on a grid of points ``z`` ``(n, 2)`` as they are. Every log density is
normalised. Each ``*_moments`` function returns the exact :class:`Moments` of its target, for
checking fits against.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import logsumexp
from numpyro.distributions import constraints

from ..model import Model

__all__ = [
    "Moments",
    "banana",
    "banana_moments",
    "funnel",
    "funnel_moments",
    "funnel_log_scale_marginal",
    "mixture",
    "mixture_moments",
    "correlated_gaussian",
    "correlated_gaussian_moments",
]


class Moments(NamedTuple):
    """Exact moments of a 2-D target: ``mean`` ``(2,)`` and ``cov`` ``(2, 2)``, float64."""

    mean: np.ndarray
    cov: np.ndarray

    @property
    def sd(self) -> np.ndarray:
        """Marginal standard deviations ``(2,)``."""
        return np.sqrt(np.diag(self.cov))

    @property
    def corr(self) -> float:
        """Correlation of the two coordinates."""
        return float(self.cov[0, 1] / np.prod(self.sd))


def _plane(log_density, name: str) -> Model:
    return Model.from_log_density(lambda values: log_density(values["x"]), {"x": constraints.real},
                                  shapes={"x": (2,)}, name=name)


def banana(curvature: float = 0.5, scale: float = 2.0) -> Model:
    """A banana: ``x0 ~ Normal(0, scale)``, ``x1 | x0 ~ Normal(curvature * (x0**2 - scale**2), 1)``.

    Uncorrelated yet far from Gaussian: the mass bends along a parabola, so a Gaussian guide must
    trade width against the bend (Haario et al. 1999's twisted Gaussian).
    """
    curvature, scale = float(curvature), float(scale)

    def log_density(x):
        return (dist.Normal(0.0, scale).log_prob(x[0])
                + dist.Normal(curvature * (x[0] ** 2 - scale**2), 1.0).log_prob(x[1]))

    return _plane(log_density, "banana")


def banana_moments(curvature: float = 0.5, scale: float = 2.0) -> Moments:
    """Mean 0; ``var x0 = scale**2``, ``var x1 = 2 curvature**2 scale**4 + 1``, uncorrelated."""
    return Moments(np.zeros(2), np.diag([scale**2, 2 * curvature**2 * scale**4 + 1.0]))


def funnel(scale: float = 3.0) -> Model:
    """Neal's (2003) funnel in 2-D: ``x0 ~ Normal(0, scale)`` (a log scale), ``x1 | x0 ~ Normal(0,
    exp(x0 / 2))``.

    The neck (``x0`` very negative) is narrow and the mouth wide. Its mode lies down the neck, at
    ``x0 = -scale**2 / 2``, far from where the mass is, so a Laplace approximation there is a poor
    summary, and no Gaussian fits the neck and the mouth at once.
    """
    scale = float(scale)

    def log_density(x):
        return dist.Normal(0.0, scale).log_prob(x[0]) + dist.Normal(0.0, jnp.exp(x[0] / 2)).log_prob(x[1])

    return _plane(log_density, "funnel")


def funnel_log_scale_marginal(scale: float = 3.0) -> dist.Normal:
    """The exact marginal of the funnel's log-scale coordinate ``x0``: ``Normal(0, scale)``."""
    return dist.Normal(0.0, float(scale))


def funnel_moments(scale: float = 3.0) -> Moments:
    """Mean 0; ``var x0 = scale**2``, ``var x1 = E[exp(x0)] = exp(scale**2 / 2)``, uncorrelated.

    ``x1``'s tails are very heavy (its kurtosis grows like ``exp(scale**2)``), so Monte Carlo
    estimates of its sd converge slowly: check ``x0`` against :func:`funnel_log_scale_marginal`.
    """
    return Moments(np.zeros(2), np.diag([scale**2, np.exp(scale**2 / 2)]))


_MIXTURE_MEANS = ((-2.5, 0.0), (2.5, 0.0))


def mixture(weight: float = 0.5, means: Sequence[Sequence[float]] = _MIXTURE_MEANS, sd: float = 1.0) -> Model:
    """Two round Gaussians: ``weight * Normal(means[0], sd I) + (1 - weight) * Normal(means[1], sd I)``.

    Modes 5 sds apart by default: one Gaussian guide can sit on one mode (what the exclusive KL of
    the ELBO prefers) or stretch over both (what mass-covering objectives such as Renyi with
    ``alpha < 1`` lean towards). With equal weights the midpoint is a saddle, not a mode: start a
    fit off it (``init_values={"x": ...}``) so the starting stage finds a mode.
    """
    weight, sd = _check_weight(weight), float(sd)
    means = jnp.asarray(_check_means(means), jnp.float32)
    log_weights = jnp.log(jnp.array([weight, 1.0 - weight]))

    def log_density(x):
        components = dist.Normal(means, sd).to_event(1).log_prob(x[None])  # (2,)
        return logsumexp(log_weights + components)

    return _plane(log_density, "mixture")


def mixture_moments(weight: float = 0.5, means: Sequence[Sequence[float]] = _MIXTURE_MEANS, sd: float = 1.0) -> Moments:
    """``mean = sum_k w_k m_k``; ``cov = sd**2 I + sum_k w_k (m_k - mean)(m_k - mean)^T``."""
    weight = _check_weight(weight)
    means = _check_means(means)
    w = np.array([weight, 1.0 - weight])
    mean = w @ means
    centred = means - mean
    cov = sd**2 * np.eye(2) + np.einsum("k,ki,kj->ij", w, centred, centred)
    return Moments(mean, cov)


def correlated_gaussian(rho: float = 0.95) -> Model:
    """A Gaussian with mean 0, unit variances and correlation ``rho``.

    The exact guide is full-rank; the best mean-field guide (under the ELBO's exclusive KL) keeps
    the mean but shrinks each sd to the conditional one, ``sqrt(1 - rho**2)`` (Bishop 2006, 10.1.2).
    """
    cov = jnp.asarray(_correlation(rho), jnp.float32)
    target = dist.MultivariateNormal(jnp.zeros(2), covariance_matrix=cov)
    return _plane(target.log_prob, "correlated_gaussian")


def correlated_gaussian_moments(rho: float = 0.95) -> Moments:
    """Mean 0 and covariance ``[[1, rho], [rho, 1]]``."""
    return Moments(np.zeros(2), _correlation(rho))


def _correlation(rho) -> np.ndarray:
    rho = float(rho)
    if not -1.0 < rho < 1.0:
        raise ValueError(f"rho must be a correlation strictly between -1 and 1, got {rho}")
    return np.array([[1.0, rho], [rho, 1.0]])


def _check_weight(weight) -> float:
    weight = float(weight)
    if not 0.0 < weight < 1.0:
        raise ValueError(f"weight must be strictly between 0 and 1 (the first component's share), got {weight}")
    return weight


def _check_means(means) -> np.ndarray:
    means = np.asarray(means, np.float64)
    if means.shape != (2, 2):
        raise ValueError(f"means must be two 2-D points, shape (2, 2), got shape {means.shape}")
    return means
