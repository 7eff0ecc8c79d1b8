"""The Gaussian families: mean-field (ADVI), full-rank (Cholesky) and low-rank plus diagonal.

``laplace`` and ``pathfinder`` are the full-rank family under another fitting method
(:mod:`vibench.methods`): the same params and functions, registered under their own names.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

from ._guide import Guide, highest_precision, no_options, register_guide

__all__ = ["MeanFieldParams", "FullRankParams", "LowRankParams", "scale_tril", "fullrank_params",
           "MEANFIELD", "FULLRANK", "LOWRANK", "LAPLACE", "PATHFINDER"]


def _normal_entropy_const(d: int) -> float:
    return 0.5 * d * (1.0 + jnp.log(2.0 * jnp.pi))


# ---------------------------------------------------------------- mean-field Normal (ADVI)


class MeanFieldParams(NamedTuple):
    loc: jax.Array  # (d,)
    log_scale: jax.Array  # (d,)


def _meanfield_init(key, loc, scale, options):
    del key
    no_options("meanfield", options)
    return MeanFieldParams(loc, jnp.log(scale))


def _meanfield_transform(params, eps):
    return params.loc[None] + jnp.exp(params.log_scale)[None] * eps


def _meanfield_log_prob(params, z):
    return dist.Normal(params.loc, jnp.exp(params.log_scale), validate_args=False).log_prob(z).sum(-1)


def _meanfield_entropy(params):
    return jnp.sum(params.log_scale) + _normal_entropy_const(params.loc.shape[-1])


MEANFIELD = register_guide(
    Guide(
        name="meanfield",
        init=_meanfield_init,
        noise_dim=lambda params: params.loc.shape[-1],
        transform=_meanfield_transform,
        log_prob=_meanfield_log_prob,
        entropy=_meanfield_entropy,
        mean=lambda params: params.loc,
        std=lambda params: jnp.exp(params.log_scale),
    )
)


# ---------------------------------------------------------------- full-rank Normal (Cholesky)


class FullRankParams(NamedTuple):
    loc: jax.Array  # (d,)
    tril: jax.Array  # (d, d): strictly-lower part of the Cholesky factor, log of its diagonal


def scale_tril(params: FullRankParams) -> jax.Array:
    """The Cholesky factor ``(d, d)`` of the covariance of full-rank ``params``."""
    raw = params.tril
    return jnp.tril(raw, -1) + jnp.diag(jnp.exp(jnp.diagonal(raw)))


def fullrank_params(loc: jax.Array, chol: jax.Array) -> FullRankParams:
    """Full-rank params with location ``loc`` ``(d,)`` and Cholesky factor ``chol`` ``(d, d)``."""
    return FullRankParams(loc, jnp.tril(chol, -1) + jnp.diag(jnp.log(jnp.diagonal(chol))))


def _fullrank_init(key, loc, scale, options, name="fullrank"):
    del key
    no_options(name, options)
    return FullRankParams(loc, jnp.diag(jnp.log(scale)))


@highest_precision
def _fullrank_transform(params, eps):
    return params.loc[None] + eps @ scale_tril(params).T


@highest_precision
def _fullrank_log_prob(params, z):
    return dist.MultivariateNormal(params.loc, scale_tril=scale_tril(params), validate_args=False).log_prob(z)


def _fullrank_entropy(params):
    return jnp.sum(jnp.diagonal(params.tril)) + _normal_entropy_const(params.loc.shape[-1])


@highest_precision
def _fullrank_std(params):
    return jnp.sqrt(jnp.sum(scale_tril(params) ** 2, axis=-1))


FULLRANK = register_guide(
    Guide(
        name="fullrank",
        init=_fullrank_init,
        noise_dim=lambda params: params.loc.shape[-1],
        transform=_fullrank_transform,
        log_prob=_fullrank_log_prob,
        entropy=_fullrank_entropy,
        mean=lambda params: params.loc,
        std=_fullrank_std,
        whitening="full",
    )
)


def _fitted_by(method: str) -> Guide:
    """The full-rank family under its own name, fitted by ``method``."""
    return register_guide(FULLRANK._replace(name=method, init=lambda *args: _fullrank_init(*args, name=method), method=method))


LAPLACE = _fitted_by("laplace")
PATHFINDER = _fitted_by("pathfinder")


# ---------------------------------------------------------------- low-rank plus diagonal Normal


class LowRankParams(NamedTuple):
    loc: jax.Array  # (d,)
    cov_factor: jax.Array  # (d, r): covariance is cov_factor @ cov_factor.T + diag(exp(2 log_diag))
    log_diag: jax.Array  # (d,)


def _lowrank_init(key, loc, scale, options):
    rank = options.get("rank", min(4, loc.shape[-1]))
    unknown = set(options) - {"rank"}
    if unknown:
        raise ValueError(f"guide 'lowrank' takes only the option 'rank', got {sorted(unknown)}")
    if not isinstance(rank, int) or not 1 <= rank <= loc.shape[-1]:
        raise ValueError(
            f"rank must be an integer in [1, {loc.shape[-1]}] (the model's dimension), got {rank!r}"
        )
    # A zero factor is a saddle of the entropy; a small random one lets every column move.
    factor = 1e-2 * scale[:, None] * jax.random.normal(key, (loc.shape[-1], rank), loc.dtype)
    return LowRankParams(loc, factor, jnp.log(scale))


@highest_precision
def _lowrank_transform(params, eps):
    rank = params.cov_factor.shape[-1]
    return params.loc[None] + eps[:, :rank] @ params.cov_factor.T + jnp.exp(params.log_diag)[None] * eps[:, rank:]


def _lowrank_dist(params):
    return dist.LowRankMultivariateNormal(params.loc, params.cov_factor, jnp.exp(2 * params.log_diag), validate_args=False)


@highest_precision
def _lowrank_log_prob(params, z):
    return _lowrank_dist(params).log_prob(z)


@highest_precision
def _lowrank_entropy(params):
    return _lowrank_dist(params).entropy()


LOWRANK = register_guide(
    Guide(
        name="lowrank",
        init=_lowrank_init,
        noise_dim=lambda params: params.cov_factor.shape[-1] + params.loc.shape[-1],
        transform=_lowrank_transform,
        log_prob=_lowrank_log_prob,
        entropy=_lowrank_entropy,
        mean=lambda params: params.loc,
        std=lambda params: jnp.sqrt(jnp.sum(params.cov_factor**2, -1) + jnp.exp(2 * params.log_diag)),
        whitening="full",
    )
)
