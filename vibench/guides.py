"""Guide families over the flat unconstrained space.

A guide family is a :class:`Guide`: a name and a few pure functions over a params pytree. Every
reparameterised family draws ``z = transform(params, eps)`` from standard-normal noise ``eps`` of
shape ``(n, noise_dim(params))``, so the engine can draw a whole chunk's noise in one call. Guides
know nothing of models. A new family is registered with :func:`register_guide`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

__all__ = [
    "Guide",
    "GUIDES",
    "register_guide",
    "get_guide",
    "draw",
    "MeanFieldParams",
    "FullRankParams",
    "LowRankParams",
    "DeltaParams",
]


class Guide(NamedTuple):
    """A guide family: pure functions over its params pytree (``d`` is the model's dimension).

    - ``init(key, loc, scale, options) -> params``: ``loc``, ``scale`` of shape ``(d,)``.
    - ``noise_dim(params) -> int``: width of the standard-normal noise ``transform`` takes.
    - ``transform(params, eps) -> z``: ``eps`` ``(n, noise_dim)`` to draws ``z`` ``(n, d)``.
    - ``log_prob(params, z) -> (n,)``: log density of draws ``z`` ``(n, d)``.
    - ``entropy(params) -> ()``: closed-form entropy, or ``None`` when the family has none.
    - ``mean(params) -> (d,)`` and ``std(params) -> (d,)``: marginal moments in the flat space.
    - ``point``: True for point-mass families (MAP), which are fitted on the log joint.
    - ``whitening``: ``"full"`` or ``"diag"``: the preconditioner the family is optimised under
      (a full square root of the starting covariance, or its diagonal).
    """

    name: str
    init: Callable[..., Any]
    noise_dim: Callable[[Any], int]
    transform: Callable[[Any, jax.Array], jax.Array]
    log_prob: Callable[[Any, jax.Array], jax.Array]
    entropy: Optional[Callable[[Any], jax.Array]]
    mean: Callable[[Any], jax.Array]
    std: Callable[[Any], jax.Array]
    point: bool = False
    whitening: str = "diag"


GUIDES: dict[str, Guide] = {}


def register_guide(guide: Guide) -> Guide:
    """Add ``guide`` to the registry under ``guide.name`` (replacing any family of that name)."""
    if not isinstance(guide, Guide):
        raise TypeError(f"register_guide expects a vibench.guides.Guide, got {type(guide).__name__}")
    GUIDES[guide.name] = guide
    return guide


def get_guide(name: str) -> Guide:
    """The registered family called ``name``; a ValueError lists the known names otherwise."""
    try:
        return GUIDES[name]
    except KeyError:
        raise ValueError(f"unknown guide {name!r}; known guides: {sorted(GUIDES)}") from None


def draw(guide: Guide, params: Any, key: jax.Array, n: int) -> jax.Array:
    """``n`` draws ``(n, d)`` from the guide, using ``key`` for the noise."""
    eps = jax.random.normal(key, (n, guide.noise_dim(params)))
    return guide.transform(params, eps)


def _highest_precision(fn):
    # NVIDIA GPUs run float32 products as TF32 by default; Cholesky factors and triangular solves
    # lose too many digits that way, so the guides' linear algebra asks for full float32.
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return fn(*args, **kwargs)

    return wrapped


def _normal_entropy_const(d: int) -> float:
    return 0.5 * d * (1.0 + jnp.log(2.0 * jnp.pi))


# ---------------------------------------------------------------- mean-field Normal (ADVI)


class MeanFieldParams(NamedTuple):
    loc: jax.Array  # (d,)
    log_scale: jax.Array  # (d,)


def _meanfield_init(key, loc, scale, options):
    del key
    _no_options("meanfield", options)
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


def _scale_tril(params):
    raw = params.tril
    return jnp.tril(raw, -1) + jnp.diag(jnp.exp(jnp.diagonal(raw)))


def _fullrank_init(key, loc, scale, options):
    del key
    _no_options("fullrank", options)
    return FullRankParams(loc, jnp.diag(jnp.log(scale)))


@_highest_precision
def _fullrank_transform(params, eps):
    return params.loc[None] + eps @ _scale_tril(params).T


@_highest_precision
def _fullrank_log_prob(params, z):
    return dist.MultivariateNormal(params.loc, scale_tril=_scale_tril(params), validate_args=False).log_prob(z)


def _fullrank_entropy(params):
    return jnp.sum(jnp.diagonal(params.tril)) + _normal_entropy_const(params.loc.shape[-1])


@_highest_precision
def _fullrank_std(params):
    return jnp.sqrt(jnp.sum(_scale_tril(params) ** 2, axis=-1))


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


@_highest_precision
def _lowrank_transform(params, eps):
    rank = params.cov_factor.shape[-1]
    return params.loc[None] + eps[:, :rank] @ params.cov_factor.T + jnp.exp(params.log_diag)[None] * eps[:, rank:]


def _lowrank_dist(params):
    return dist.LowRankMultivariateNormal(params.loc, params.cov_factor, jnp.exp(2 * params.log_diag), validate_args=False)


@_highest_precision
def _lowrank_log_prob(params, z):
    return _lowrank_dist(params).log_prob(z)


@_highest_precision
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


# ---------------------------------------------------------------- Delta (a point: MAP)


class DeltaParams(NamedTuple):
    loc: jax.Array  # (d,)


def _delta_init(key, loc, scale, options):
    del key, scale
    _no_options("delta", options)
    return DeltaParams(loc)


DELTA = register_guide(
    Guide(
        name="delta",
        init=_delta_init,
        noise_dim=lambda params: 0,
        transform=lambda params, eps: jnp.broadcast_to(params.loc, eps.shape[:1] + params.loc.shape),
        log_prob=lambda params, z: jnp.zeros(z.shape[:-1], z.dtype),
        entropy=None,
        mean=lambda params: params.loc,
        std=lambda params: jnp.zeros_like(params.loc),
        point=True,
    )
)


def _no_options(name, options):
    if options:
        raise ValueError(f"guide {name!r} takes no options, got {sorted(options)}")
