"""The point family (Delta): a single location, fitted as a MAP by the ``"map"`` method."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._guide import Guide, no_options, register_guide

__all__ = ["DeltaParams", "DELTA"]


class DeltaParams(NamedTuple):
    loc: jax.Array  # (d,)


def _delta_init(key, loc, scale, options):
    del key, scale
    no_options("delta", options)
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
        method="map",
    )
)
