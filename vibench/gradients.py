"""How noisy the gradient estimators are at a fitted guide: the variance of the objective's gradient
over independent noise draws, for comparing estimators (STL or not, particle counts, objectives).
Re-exported by :mod:`vibench.diagnostics`.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import as_key, check_count
from ._memo import per_model
from .state import Whitened, hyper_from_config
from .plan import resolve

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
    model, config = fit.model, fit.config
    if "objective" not in fit.plan.method.takes:
        raise ValueError(f"guide {fit.guide.name!r} is not fitted by an objective over its draws (fitted by "
                         f"{fit.plan.method.name!r}): its gradient draws no noise, so it has no variance")
    stl = fit.plan.stl if stl is None else stl
    num_particles = config.num_particles if num_particles is None else num_particles
    check_count("num_particles", num_particles)
    check_count("repeats", repeats)
    if not isinstance(stl, (bool, np.bool_)):
        raise TypeError(f"stl must be a bool, got {stl!r}")
    # The plan of the estimator asked for: the fit's, with the objective, STL and particles given.
    changes = {"stl": bool(stl), "num_particles": int(num_particles)}
    if objective is not None:
        changes["objective"] = objective
    plan = resolve(config.replace(**changes), fit.optimizer)
    if repeats < 2:
        raise ValueError(f"repeats must be >= 2 to estimate a variance, got {repeats}")
    hyper = hyper_from_config(plan)
    run = _variance_program(model, plan.program, int(repeats))
    mean, variance = jax.device_get(run(fit.params, fit.precond, as_key(key), hyper))
    total = float(sum(np.sum(v) for v in jax.tree.leaves(variance)))
    mean_norm = float(np.sqrt(sum(np.sum(np.square(m)) for m in jax.tree.leaves(mean))))
    return GradientVariance(total, mean_norm, variance, mean, plan.objective.name, bool(stl), int(num_particles),
                            int(repeats))


@per_model
def _variance_program(model, program, repeats: int):
    guide, num_particles = program.guide, program.num_particles

    def loss(params, eps, hyper, precond):
        # Built at trace time around the runtime preconditioner, as in the engine.
        build = program.method.build(Whitened(model, precond), guide, program.objective, num_particles)
        return build(params, eps, hyper)[0]

    grad = jax.grad(loss)

    def run(params, precond, key, hyper):
        eps = jax.random.normal(key, (repeats, num_particles, guide.noise_dim(params)))
        grads = jax.lax.map(lambda e: grad(params, e, hyper, precond), eps)
        mean = jax.tree.map(lambda g: jnp.mean(g, 0), grads)
        variance = jax.tree.map(lambda g: jnp.var(g, 0, ddof=1), grads)
        return mean, variance

    return jax.jit(run)
