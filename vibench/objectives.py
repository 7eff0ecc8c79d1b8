"""Monte Carlo variational objectives and their gradient estimators.

An objective is built once from a model, a guide family and a particle count (the things that fix
the program's shapes) and then only called::

    loss_fn = OBJECTIVES["elbo"].build(model, guide, num_particles=8)
    loss, aux = loss_fn(params, eps, hyper)   # eps: (8, guide.noise_dim(params))

``loss`` is the quantity minimised (the negative of a lower bound, CHIVI's upper bound, or the
forward KL's surrogate); ``aux["elbo"]`` is the Monte Carlo ELBO from the same particles whatever
the objective, so traces of different objectives compare. ``chivi`` and ``forward_kl`` are
mass-covering: their optima spread over the target where the ELBO's shrink inside it. Numbers a
user changes live (``hyper.alpha``, ``hyper.stl``) are runtime values: changing them does not
recompile. Objectives serve the ``"vi"`` fitting method; how a MAP, a Laplace mode or a Pathfinder
fit is trained is :mod:`vibench.methods`'s business, not theirs.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from ._registry import Registry
from .guides import Guide, transform_log_prob

__all__ = ["Objective", "OBJECTIVES", "register_objective", "get_objective", "particle_log_densities"]


class Objective(NamedTuple):
    """A registered objective.

    - ``build(model, guide, num_particles) -> fn(params, eps, hyper) -> (loss, aux)``
    - ``check(guide, stl, num_particles) -> None``: raises ValueError for pairs it cannot serve.
    - ``default_stl``: whether stick-the-landing is on when the Config leaves it unset.
    """

    name: str
    build: Callable[..., Callable]
    check: Callable[[Guide, bool, int], None]
    default_stl: bool = False


OBJECTIVES = Registry(Objective, "vibench.objectives.Objective", "objective", "objectives", "register_objective")


def register_objective(objective: Objective) -> Objective:
    """Add ``objective`` to the registry under ``objective.name``."""
    return OBJECTIVES.add(objective)


def get_objective(name: str) -> Objective:
    """The registered objective called ``name``; a ValueError lists the known names otherwise."""
    return OBJECTIVES.lookup(name)


def _log_density_batch(log_density, z):
    # vmap over a single particle made gradients several times slower on CPU: skip it.
    if z.shape[0] == 1:
        return log_density(z[0])[None]
    return jax.vmap(log_density)(z)


def _maybe_stop(params, stl):
    # d/dp where(stl, stop_gradient(p), p) is 0 or 1 at runtime: STL on/off without a recompile.
    return jax.tree.map(lambda p: jnp.where(stl, jax.lax.stop_gradient(p), p), params)


def particle_log_densities(model, guide: Guide, params, eps: jax.Array, stl) -> tuple:
    """``(log_p, log_q)``, each ``(K,)``: the model's flat log density and the guide's at the
    guide's draws from noise ``eps`` ``(K, noise_dim)``; with ``stl`` (a runtime bool) log q's
    params are frozen, dropping the score term."""
    if guide.supports_stl:
        z = guide.transform(params, eps)
        log_q = guide.log_prob(_maybe_stop(params, stl), z)
    else:  # stl is validated off: the draws' log density comes with them (a flow's forward pass)
        z, log_q = transform_log_prob(guide, params, eps)
    log_p = _log_density_batch(model.log_density, z)
    return log_p, log_q


# ---------------------------------------------------------------- elbo


def _build_elbo(model, guide, num_particles):
    def fn(params, eps, hyper):
        log_p, log_q = particle_log_densities(model, guide, params, eps, hyper.stl)
        elbo = jnp.mean(log_p - log_q)
        return -elbo, {"elbo": elbo}

    return fn


def _check_elbo(guide, stl, num_particles):
    if stl and not guide.supports_stl:
        raise ValueError(
            f"stl=True needs guide {guide.name!r}'s log density at its draws under frozen params, which "
            "it cannot evaluate cheaply (a flow's inverse); use stl=False"
        )


register_objective(Objective("elbo", _build_elbo, _check_elbo, default_stl=True))


# ---------------------------------------------------------------- elbo_analytic


def _build_elbo_analytic(model, guide, num_particles):
    def fn(params, eps, hyper):
        del hyper
        log_p, log_q = particle_log_densities(model, guide, params, eps, True)
        bound = jnp.mean(log_p) + guide.entropy(params)
        return -bound, {"elbo": jnp.mean(log_p - log_q)}

    return fn


def _check_elbo_analytic(guide, stl, num_particles):
    _needs_draws(guide, "elbo_analytic")
    if guide.entropy is None:
        raise ValueError(f"objective 'elbo_analytic' needs a closed-form entropy, which guide {guide.name!r} lacks")
    if stl:
        raise ValueError(
            "stl=True has no meaning with objective 'elbo_analytic': the closed-form entropy has no "
            "score term to drop; use stl=False, or objective='elbo' with stl=True"
        )


register_objective(Objective("elbo_analytic", _build_elbo_analytic, _check_elbo_analytic))


# ---------------------------------------------------------------- renyi


def _build_renyi(model, guide, num_particles):
    log_k = jnp.log(num_particles)

    def fn(params, eps, hyper):
        log_p, log_q = particle_log_densities(model, guide, params, eps, False)
        log_w = log_p - log_q
        one_minus_alpha = 1.0 - hyper.alpha
        bound = (logsumexp(one_minus_alpha * log_w) - log_k) / one_minus_alpha
        return -bound, {"elbo": jnp.mean(log_w)}

    return fn


def _multi_particle_check(name: str, stl_reason: str, one_particle_reason: str):
    """The check of a bound over several particles that takes no STL and no point guide."""

    def check(guide, stl, num_particles):
        _needs_draws(guide, name)
        if stl:
            raise ValueError(f"stl=True {stl_reason}; use stl=False")
        if num_particles < 2:
            raise ValueError(f"objective {name!r} needs num_particles >= 2: {one_particle_reason}; got num_particles={num_particles}")

    return check


_check_renyi = _multi_particle_check(
    "renyi", "with objective 'renyi' gives a biased gradient (it needs the doubly-reparameterised estimator)",
    "with one particle the Renyi bound equals the ELBO for every alpha")
register_objective(Objective("renyi", _build_renyi, _check_renyi))


# ---------------------------------------------------------------- chivi

CHIVI_ORDER = 2.0  # n of the chi^n divergence; fixed at build time (it is not a Config field)


def _build_chivi(model, guide, num_particles):
    log_k = jnp.log(num_particles)

    def fn(params, eps, hyper):
        del hyper
        log_p, log_q = particle_log_densities(model, guide, params, eps, False)
        log_w = log_p - log_q
        # log CUBO_n = (1/n) log mean_k w_k^n, through logsumexp so w^n never over- or underflows.
        cubo = (logsumexp(CHIVI_ORDER * log_w) - log_k) / CHIVI_ORDER
        return cubo, {"elbo": jnp.mean(log_w)}

    return fn


_check_chivi = _multi_particle_check(
    "chivi", "with objective 'chivi' gives a biased gradient (dropping the score term of log q is exact for the "
    "ELBO alone)", "with one particle the chi^2 bound equals the ELBO")
register_objective(Objective("chivi", _build_chivi, _check_chivi))


# ---------------------------------------------------------------- forward_kl


def _build_forward_kl(model, guide, num_particles):
    def fn(params, eps, hyper):
        del hyper
        # The draws are data to the wake-phase update: only log q's own dependence on its params
        # is differentiated (through the draws, log q of a location-scale family is constant).
        z = jax.lax.stop_gradient(guide.transform(params, eps))
        log_p = _log_density_batch(model.log_density, z)
        log_q = guide.log_prob(params, z)
        log_w = log_p - log_q
        weights = jax.nn.softmax(jax.lax.stop_gradient(log_w))
        loss = -jnp.sum(weights * log_q)
        return loss, {"elbo": jnp.mean(log_w)}

    return fn


_check_forward_kl_particles = _multi_particle_check(
    "forward_kl", "has no meaning with objective 'forward_kl': its gradient is the score of log q at fixed draws, "
    "with no path term", "its self-normalised importance weights are all 1 with one particle, which fits nothing")


def _check_forward_kl(guide, stl, num_particles):
    _check_forward_kl_particles(guide, stl, num_particles)
    if guide.log_prob is None:
        raise ValueError(
            f"objective 'forward_kl' needs the guide's log density at fixed points, which guide "
            f"{guide.name!r} cannot evaluate (it has no inverse); use guide='iaf' or a Gaussian family"
        )


register_objective(Objective("forward_kl", _build_forward_kl, _check_forward_kl))


def _needs_draws(guide: Guide, objective: str) -> None:
    if guide.point:
        raise ValueError(
            f"guide {guide.name!r} is a point (a MAP fit) and has no density for objective "
            f"{objective!r}; use objective='elbo'"
        )
