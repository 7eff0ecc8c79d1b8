"""How noisy the gradient estimators are at a fitted guide: the variance of the objective's gradient
over independent noise draws, for comparing estimators (STL or not, particle counts, objectives).
Re-exported by :mod:`vibench.diagnostics`.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from .engine import Whitened, cached, hyper_from_config
from .objectives import check_combination, make_objective

__all__ = ["GradientVariance", "gradient_variance"]


class GradientVariance(NamedTuple):
    """The objective's gradient at the current guide over ``repeats`` independent noise draws.

    ``variance`` and ``mean`` have the guide params' structure (whitened coordinates, as
    optimised); ``total_variance`` is the sum of the per-coordinate variances (the trace of the
    gradient's covariance).
    """

    total_variance: float
    mean_norm: float
    variance: Any
    mean: Any
    objective: str
    stl: bool
    num_particles: int
    repeats: int


def gradient_variance(fit, stl: Optional[bool] = None, num_particles: Optional[int] = None, repeats: int = 100,
                      key: Optional[jax.Array] = None, objective: Optional[str] = None) -> GradientVariance:
    """Variance of the gradient of ``objective`` (default: the fit's) w.r.t. the guide params at
    ``fit.params``, over ``repeats`` independent draws of ``num_particles`` particles.

    The gradient is the one the optimiser sees: w.r.t. the params in the whitened coordinates of
    ``fit.precond``, of the objective of the model seen from there (as the engine builds it).

    ``stl`` and ``num_particles`` default to the fit's Config. With STL the ELBO gradient vanishes
    for every draw where the guide equals the posterior, so its variance goes to zero at an exact
    fit; the standard estimator keeps the score term's variance (Roeder et al. 2017).
    """
    from .diagnostics import _check_count, _default_key

    model, guide, config = fit.model, fit.guide, fit.config
    if guide.fitted_on != "draws":
        raise ValueError(f"guide {guide.name!r} is not fitted by an objective over its draws (fitted on "
                         f"{guide.fitted_on!r}): its gradient draws no noise, so it has no variance")
    objective = config.objective if objective is None else objective
    stl = config.use_stl if stl is None else stl
    num_particles = config.num_particles if num_particles is None else num_particles
    _check_count("num_particles", num_particles)
    _check_count("repeats", repeats)
    if not isinstance(stl, (bool, np.bool_)):
        raise TypeError(f"stl must be a bool, got {stl!r}")
    check_combination(guide, objective, bool(stl), num_particles)
    if repeats < 2:
        raise ValueError(f"repeats must be >= 2 to estimate a variance, got {repeats}")
    hyper = hyper_from_config(config)._replace(stl=np.bool_(stl))

    def build():
        def loss(params, eps, hyper, precond):
            # Built at trace time around the runtime preconditioner, as in the engine.
            return make_objective(objective, Whitened(model, precond), guide, num_particles)(params, eps, hyper)[0]

        grad = jax.grad(loss)

        def run(params, precond, key, hyper):
            eps = jax.random.normal(key, (repeats, num_particles, guide.noise_dim(params)))
            grads = jax.lax.map(lambda e: grad(params, e, hyper, precond), eps)
            mean = jax.tree.map(lambda g: jnp.mean(g, 0), grads)
            variance = jax.tree.map(lambda g: jnp.var(g, 0, ddof=1), grads)
            return mean, variance

        return jax.jit(run)

    build_key = ("gradient_variance", guide.name, objective, int(num_particles), int(repeats))
    mean, variance = jax.device_get(cached(model, build_key, build)(fit.params, fit.precond, _default_key(key), hyper))
    total = float(sum(np.sum(v) for v in jax.tree.leaves(variance)))
    mean_norm = float(np.sqrt(sum(np.sum(np.square(m)) for m in jax.tree.leaves(mean))))
    return GradientVariance(total, mean_norm, variance, mean, objective, bool(stl), int(num_particles), int(repeats))
