"""Compiled evaluations of a fitted guide: draws, constrained samples, log q, ELBO values and the
importance draws the diagnostics and the export read.

Each program is built once per (model, family, size) by ``@per_model`` and takes the guide's
``params`` and the preconditioner ``precond`` as arguments, so every fit of a model with one
family shares it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ._checks import check_count
from ._memo import per_model
from .state import Whitened
from .guides import Guide, transform_log_prob

__all__ = ["Draws", "draw_program", "sample_program", "log_q_program", "elbo_values_program", "elbo_program",
           "importance_draws"]


class Draws(NamedTuple):
    """Guide draws with the densities importance sampling needs, each with leading axis ``n``.

    ``z`` ``(n, dim)`` draws in the model's flat space; ``values`` constrained ``{site: (n, *shape)}``;
    ``lp`` the log joint log p(y, theta) in the model's own parameterisation; ``log_weight`` the
    log importance ratio in the flat space, log p(y, z) - log q(z) (lp plus the log-Jacobian minus
    ``log_q``); ``log_q`` the guide's log density there, as ``fit.log_q`` (NaN for point guides,
    which have none).
    """

    z: Any
    values: dict
    lp: Any
    log_q: Any
    log_weight: Any


@per_model
def draw_program(model, guide: Guide, n: int):
    """Jitted ``(params, precond, key) -> z`` ``(n, dim)``: guide draws in the model's flat space."""

    def draw(params, precond, key):
        u = guide.transform(params, jax.random.normal(key, (n, guide.noise_dim(params))))
        return precond.to_z(u)

    return jax.jit(draw)


@per_model
def sample_program(model, guide: Guide, n: int):
    """Jitted ``(params, precond, key) -> {site: (n, *shape)}``: constrained draws of every site."""
    draw = draw_program(model, guide, n)
    return jax.jit(lambda params, precond, key: jax.vmap(model.constrain)(draw(params, precond, key)))


@per_model
def log_q_program(model, guide: Guide):
    """Jitted ``(params, precond, z) -> (n,)``: the guide's log density at flat points ``z`` ``(n, dim)``."""
    return jax.jit(lambda params, precond, z: guide.log_prob(params, precond.to_u(z)) - precond.log_det)


@per_model
def elbo_values_program(model, guide: Guide, num_particles: int):
    """Jitted ``(params, precond, key) -> (num_particles,)``: log p - log q at the guide's draws, on
    all of the model's data (point guides: the log joint at the point)."""
    batch = min(num_particles, 256)
    num_batches = -(-num_particles // batch)

    def one_batch(params, precond, key):
        whitened = Whitened(model, precond)
        if guide.point:
            return jnp.full((batch,), whitened.log_joint(params.loc))
        u, log_q = transform_log_prob(guide, params, jax.random.normal(key, (batch, guide.noise_dim(params))))
        return jax.vmap(whitened.log_density)(u) - log_q

    def values(params, precond, key):
        # Batches bound the memory of a large particle count.
        keys = jax.random.split(key, num_batches)
        out = jax.lax.map(lambda k: one_batch(params, precond, k), keys)
        return out.reshape(-1)[:num_particles]

    return jax.jit(values)


@per_model
def elbo_program(model, guide: Guide, num_particles: int):
    """Jitted ``(params, precond, key) -> ()``: the mean of :func:`elbo_values_program`."""
    values = elbo_values_program(model, guide, num_particles)
    return jax.jit(lambda params, precond, key: jnp.mean(values(params, precond, key)))


def importance_draws(fit, key: jax.Array, n: int) -> Draws:
    """``n`` guide draws of ``fit`` with their constrained values, ``lp``, ``log_q`` and ``log_weight``
    (host arrays).

    The draws are those of ``fit.sample_unconstrained(key, n)``: the guide's whitened draws ``u``
    mapped to the model's flat space by ``fit.precond``; ``log_q`` includes that map's Jacobian.
    """
    n = check_count("num_draws", n)
    run = _importance_program(fit.model, fit.guide, n)
    return jax.device_get(run(fit.params, fit.precond, key))


@per_model
def _importance_program(model, guide: Guide, n: int):
    def per_draw(z):
        return model.constrain(z), model.log_joint(z), model.log_density(z)

    def run(params, precond, key):
        u, log_q_u = transform_log_prob(guide, params, jax.random.normal(key, (n, guide.noise_dim(params))))
        z = precond.to_z(u)
        # Batches bound the memory of a model with much data.
        values, lp, log_density = jax.lax.map(per_draw, z, batch_size=min(n, 256))
        # The density of z = shift + scale @ u is q(u) / |det scale|; computed from u, no solve.
        log_q = log_q_u - precond.log_det
        return Draws(z, values, lp, log_q, log_density - log_q)

    return jax.jit(run)
