"""Fitting methods: how a guide family is fitted, apart from what the family is.

- ``"vi"``: an objective over the guide's draws (:mod:`vibench.objectives`): every family that
  has draws and a density.
- ``"map"``: the location alone, at the mode of the log joint in the model's own parameterisation
  (no Jacobian); the family is a point (``delta``).
- ``"laplace"``: the location moves to the mode of the flat log density (Jacobian included, like
  NumPyro's AutoLaplaceApproximation) and :func:`laplace_refine` sets the covariance to the
  inverse of minus the Hessian there.
- ``"pathfinder"``: the starting stage (BlackJAX's Pathfinder) fits the Gaussian and whitens by
  it, so in its coordinates the family is the standard Normal its init gives; training steps only
  estimate its ELBO.

A :class:`Method` builds the training loss and says which Config settings it reads, so an
objective's own validity check never needs to know about MAP or Laplace.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from ._registry import Registry
from .guides import Guide
from .guides.gaussian import fullrank_params
from .guides._guide import highest_precision
from .objectives import Objective, particle_log_densities

__all__ = ["Method", "METHODS", "register_method", "get_method", "laplace_refine", "ESTIMATOR_FIELDS"]

#: The Config fields that choose a Monte Carlo estimator; a method reads those in its ``takes``.
ESTIMATOR_FIELDS = ("objective", "stl", "num_particles", "alpha")


class Method(NamedTuple):
    """How a family is fitted.

    - ``build(model, guide, objective, num_particles) -> fn(params, eps, hyper) -> (loss, aux)``:
      the loss the engine minimises (``aux["elbo"]``: what the trace reports as the ELBO).
    - ``check(guide, objective, stl, num_particles) -> None``: ValueError for settings it cannot
      serve (``objective`` is the registered :class:`~vibench.objectives.Objective`).
    - ``default_stl(guide, objective) -> bool``: stick-the-landing when the Config leaves it unset.
    - ``takes``: which of :data:`ESTIMATOR_FIELDS` the method reads (the others are fixed).
    - ``trains``: False when the starting stage fits the family and steps only estimate its ELBO
      (one chunk then says all there is).
    - ``refine(log_density, params) -> params``: params that follow from the location (Laplace's
      covariance), recomputed after every chunk; ``None`` for none.
    - ``start``: the starting stage the method needs whatever ``Config.init`` says (``None``: any).
    """

    name: str
    build: Callable[..., Callable]
    check: Callable[..., None]
    default_stl: Callable[[Guide, Objective], bool]
    takes: tuple = ESTIMATOR_FIELDS
    trains: bool = True
    refine: Optional[Callable] = None
    start: Optional[str] = None


METHODS = Registry(Method, "vibench.methods.Method", "fitting method", "methods", "register_method")


def register_method(method: Method) -> Method:
    """Add ``method`` to the registry under ``method.name``."""
    return METHODS.add(method)


def get_method(name: str) -> Method:
    """The registered method called ``name``; a ValueError lists the known names otherwise."""
    return METHODS.lookup(name)


# ---------------------------------------------------------------- vi: an objective over draws


register_method(Method(
    name="vi",
    build=lambda model, guide, objective, num_particles: objective.build(model, guide, num_particles),
    check=lambda guide, objective, stl, num_particles: objective.check(guide, stl, num_particles),
    default_stl=lambda guide, objective: objective.default_stl and guide.supports_stl,
))


# ---------------------------------------------------------------- methods that train no objective


def _no_stl(guide, objective):
    return False


def _mode_loss(log_density):
    def fn(params, eps, hyper):
        del eps, hyper
        value = log_density(params.loc)
        return -value, {"elbo": value}

    return fn


def _mode_check(what: str, how: str):
    """The check of a method that moves the location alone: the ELBO objective, one particle, no STL."""

    def check(guide, objective, stl, num_particles):
        _elbo_only(guide, objective, what, how)
        if stl or num_particles != 1:
            raise ValueError(
                f"guide {guide.name!r} is {what}: it takes num_particles=1 and stl=False, "
                f"got num_particles={num_particles}, stl={stl}"
            )

    return check


def _elbo_only(guide, objective, what, how) -> None:
    if objective.name == "elbo":
        return
    if guide.point:
        raise ValueError(f"guide {guide.name!r} is {what} and has no density for objective {objective.name!r}; "
                         "use objective='elbo'")
    raise ValueError(
        f"guide {guide.name!r} is fitted {how}, not by an objective over its draws; objective "
        f"{objective.name!r} does not apply to it: use objective='elbo'"
    )


register_method(Method(
    name="map",
    build=lambda model, guide, objective, num_particles: _mode_loss(model.log_joint),
    check=_mode_check("a point (a MAP fit)", "at the mode of the log joint"),
    default_stl=_no_stl,
    takes=(),
))


@highest_precision
def laplace_refine(log_density, params):
    """Full-rank params at ``params.loc`` with the covariance the inverse of minus the Hessian of
    ``log_density`` there (eigenvalues floored, so a ridge or saddle still gives a finite one)."""
    precision = -jax.hessian(log_density)(params.loc)
    precision = 0.5 * (precision + precision.T)
    # A mode with flat or negative curvature (a ridge, a saddle) has no Laplace Gaussian; flooring
    # the eigenvalues keeps the covariance finite, and its PSIS k-hat then reports the poor fit.
    values, vectors = jnp.linalg.eigh(precision)
    values = jnp.maximum(values, LAPLACE_EIGEN_FLOOR * jnp.max(jnp.abs(values)) + jnp.finfo(values.dtype).tiny)
    covariance = (vectors / values) @ vectors.T
    return fullrank_params(params.loc, jnp.linalg.cholesky(0.5 * (covariance + covariance.T)))


LAPLACE_EIGEN_FLOOR = 1e-6  # directions flatter than this fraction of the sharpest one are floored

register_method(Method(
    name="laplace",
    # Reported in the model's own flat space, as a MAP's log joint is (same mode, same gradient).
    build=lambda model, guide, objective, num_particles: _mode_loss(getattr(model, "flat_log_density", model.log_density)),
    check=_mode_check("fitted at the mode of the log density", "at the mode of the log density"),
    default_stl=_no_stl,
    takes=(),
    refine=laplace_refine,
))


def _frozen_elbo(model, guide, objective, num_particles):
    def fn(params, eps, hyper):
        del hyper
        log_p, log_q = particle_log_densities(model, guide, jax.lax.stop_gradient(params), eps, False)
        elbo = jnp.mean(log_p - log_q)
        return -elbo, {"elbo": elbo}

    return fn


def _check_pathfinder(guide, objective, stl, num_particles):
    _elbo_only(guide, objective, "fitted by its starting stage", "by its starting stage")
    if stl:
        raise ValueError(f"guide {guide.name!r} is fitted by its starting stage: nothing is trained, so stl=True "
                         "has no meaning; use stl=False")


register_method(Method(
    name="pathfinder",
    build=_frozen_elbo,
    check=_check_pathfinder,
    default_stl=_no_stl,
    takes=("num_particles",),
    trains=False,
    start="pathfinder",
))
