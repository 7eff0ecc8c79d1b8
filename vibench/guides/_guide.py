"""The guide protocol and registry: what every family provides, and the helpers built on it."""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from .._registry import Registry

__all__ = [
    "Guide",
    "GUIDES",
    "register_guide",
    "get_guide",
    "draw",
    "transform_log_prob",
    "dimension",
    "highest_precision",
    "no_options",
]


class Guide(NamedTuple):
    """A guide family: pure functions over its params pytree (``d`` is the model's dimension).

    - ``init(key, loc, scale, options) -> params``: ``loc``, ``scale`` of shape ``(d,)``.
    - ``noise_dim(params) -> int``: width of the standard-normal noise ``transform`` takes.
    - ``transform(params, eps) -> z``: ``eps`` ``(n, noise_dim)`` to draws ``z`` ``(n, d)``.
    - ``log_prob(params, z) -> (n,)``: log density at any points ``z`` ``(n, d)``, or ``None``
      when the family cannot evaluate it (a flow without an inverse).
    - ``entropy(params) -> ()``: closed-form entropy, or ``None`` when the family has none.
    - ``mean(params) -> (d,)`` and ``std(params) -> (d,)``: closed-form marginal moments in the
      flat space, or ``None`` (flows).
    - ``point``: True for point-mass families, which have no density.
    - ``whitening``: ``"full"`` or ``"diag"``: the preconditioner the family is optimised under
      (a full square root of the starting covariance, or its diagonal).
    - ``transform_log_prob(params, eps) -> (z, log_q)``: draws and their log density in one pass,
      where that is cheaper than ``log_prob`` (flows: no inverse); ``None`` to use ``log_prob``.
    - ``supports_stl``: whether stick-the-landing can be served (it needs ``log_prob`` at the
      draws under frozen params, an inverse pass for a flow).
    - ``method``: the name of the fitting method (:mod:`vibench.methods`) the family is fitted
      by: ``"vi"`` (an objective over its draws), ``"map"``, ``"laplace"`` or ``"pathfinder"``.
    """

    name: str
    init: Callable[..., Any]
    noise_dim: Callable[[Any], int]
    transform: Callable[[Any, jax.Array], jax.Array]
    log_prob: Optional[Callable[[Any, jax.Array], jax.Array]]
    entropy: Optional[Callable[[Any], jax.Array]]
    mean: Optional[Callable[[Any], jax.Array]]
    std: Optional[Callable[[Any], jax.Array]]
    point: bool = False
    whitening: str = "diag"
    transform_log_prob: Optional[Callable[[Any, jax.Array], tuple]] = None
    supports_stl: bool = True
    method: str = "vi"


GUIDES = Registry(Guide, "vibench.guides.Guide", "guide", "guides", "register_guide")


def register_guide(guide: Guide) -> Guide:
    """Add ``guide`` to the registry under ``guide.name``.

    A family registered again under a name already taken replaces the old one for every Config
    resolved from then on (re-running a notebook cell that defines it does what it says); fits
    made before keep the family they were fitted with, and compiled programs are kept per family
    object, so none is reused for the other.
    """
    return GUIDES.add(guide)


def get_guide(name: str) -> Guide:
    """The registered family called ``name``; a ValueError lists the known names otherwise."""
    return GUIDES.lookup(name)


def draw(guide: Guide, params: Any, key: jax.Array, n: int) -> jax.Array:
    """``n`` draws ``(n, d)`` from the guide, using ``key`` for the noise."""
    eps = jax.random.normal(key, (n, guide.noise_dim(params)))
    return guide.transform(params, eps)


def transform_log_prob(guide: Guide, params: Any, eps: jax.Array) -> tuple:
    """Draws ``z`` ``(n, d)`` from noise ``eps`` ``(n, noise_dim)`` and their log density ``(n,)``
    (point guides: NaN, they have none)."""
    if guide.point:
        z = guide.transform(params, eps)
        return z, jnp.full(z.shape[:-1], jnp.nan, z.dtype)
    if guide.transform_log_prob is not None:
        return guide.transform_log_prob(params, eps)
    z = guide.transform(params, eps)
    return z, guide.log_prob(params, z)


def dimension(guide: Guide, params: Any) -> int:
    """The dimension ``d`` of the space ``params`` is a guide over (no computation)."""
    shape = jax.eval_shape(guide.transform, params, jax.ShapeDtypeStruct((1, guide.noise_dim(params)), jnp.float32))
    return shape.shape[-1]


def highest_precision(fn):
    """``fn`` with matrix products in full float32.

    NVIDIA GPUs run float32 products as TF32 by default; Cholesky factors and triangular solves
    lose too many digits that way.
    """

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return fn(*args, **kwargs)

    return wrapped


def no_options(name: str, options: dict) -> None:
    """ValueError if a family that takes no options was given some."""
    if options:
        raise ValueError(f"guide {name!r} takes no options, got {sorted(options)}")
