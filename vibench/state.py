"""The engine's data: the training ``State``, the runtime numbers ``Hyper``, the per-step ``Trace``
and the preconditioner ``Precond`` that maps the guide's whitened coordinates to the model's flat
space. All NamedTuples of arrays: nothing is mutated, and each passes through ``jax.jit`` as a
pytree.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .plan import as_plan

__all__ = ["Hyper", "Precond", "State", "Trace", "Whitened", "identity_precond", "hyper_from_config"]


class Hyper(NamedTuple):
    """Runtime numbers (float32 / bool scalars); changing them does not recompile."""

    learning_rate: Any
    clip_norm: Any  # inf when clipping is off
    alpha: Any
    stl: Any
    decay_steps: Any
    warmup_steps: Any
    final_lr_ratio: Any


class Precond(NamedTuple):
    """An affine map ``z = shift + scale @ u`` from the guide's whitened coordinates ``u`` to the
    model's flat space ``z``; ``scale`` is a lower-triangular ``(d, d)`` or a diagonal ``(d,)``."""

    shift: Any  # (d,)
    scale: Any  # (d, d) lower-triangular, or (d,)
    log_det: Any  # (), log |det scale|

    def to_z(self, u):
        """``u`` ``(..., d)`` to ``z`` ``(..., d)``."""
        if self.scale.ndim == 2:
            with jax.default_matmul_precision("highest"):
                return self.shift + u @ self.scale.T
        return self.shift + u * self.scale

    def to_u(self, z):
        """The inverse map, ``z`` ``(..., d)`` to ``u``."""
        if self.scale.ndim == 2:
            with jax.default_matmul_precision("highest"):
                return jax.scipy.linalg.solve_triangular(self.scale, (z - self.shift).T, lower=True).T
        return (z - self.shift) / self.scale


def identity_precond(shift, whitening: str) -> Precond:
    """No preconditioning: ``z = shift + u``, with the scale in the family's form."""
    d = shift.shape[-1]
    scale = jnp.eye(d, dtype=shift.dtype) if whitening == "full" else jnp.ones(d, shift.dtype)
    return Precond(jnp.asarray(shift), scale, jnp.zeros((), shift.dtype))


class Whitened(NamedTuple):
    """``model`` seen from the whitened coordinates of ``precond``: the log density includes
    ``log |det scale|``, so ELBOs equal those in the model's own flat space."""

    model: Any
    precond: Precond

    def log_density(self, u):
        return self.model.log_density(self.precond.to_z(u)) + self.precond.log_det

    def log_joint(self, u):
        return self.model.log_joint(self.precond.to_z(u))

    def flat_log_density(self, u):
        """The model's own flat log density at ``z(u)``, without the whitening's ``log |det|``:
        the value a mode is reported with."""
        return self.model.log_density(self.precond.to_z(u))


class State(NamedTuple):
    params: Any  # the guide's params pytree, in the whitened coordinates u
    opt_state: Any  # optax state of the base optimizer
    key: jax.Array  # base key; step t's noise is a function of (key, t)
    step: jax.Array  # int32, steps taken (rejected ones included)
    num_rejected: jax.Array  # int32
    hyper: Hyper
    precond: Precond  # runtime arrays: a new starting point never recompiles


class Trace(NamedTuple):
    """Per-step record, shape ``(n,)`` each: ``loss`` is the minimised objective, ``elbo`` the Monte
    Carlo ELBO from the same particles (the log joint for point guides), ``grad_norm`` the global
    gradient norm before clipping, ``rejected`` True where the step was not finite and skipped."""

    loss: Any
    elbo: Any
    grad_norm: Any
    rejected: Any


def hyper_from_config(config, model=None) -> Hyper:
    """The runtime numbers of ``config`` (a Config or its :class:`~vibench.plan.Plan`).

    For a subsampled ``model`` the step size is ``learning_rate * sqrt(batch_size / num_data)``:
    minibatch gradient noise grows as ``sqrt(num_data / batch_size)``, and an adaptive optimizer's
    jitter about the optimum with it; the scaling keeps a minibatch fit as still as a full-batch
    one at the same ``learning_rate``.
    """
    plan = as_plan(config)
    config = plan.config
    f32 = np.float32
    learning_rate = config.learning_rate
    if model is not None and model.batch_size:
        learning_rate *= float(np.sqrt(model.batch_size / model.num_data))
    return Hyper(
        learning_rate=f32(learning_rate),
        clip_norm=f32(np.inf if config.clip_norm is None else config.clip_norm),
        alpha=f32(config.alpha),
        stl=np.bool_(plan.stl),
        decay_steps=f32(config.num_steps),
        warmup_steps=f32(config.warmup_steps),
        final_lr_ratio=f32(config.final_lr_ratio),
    )
