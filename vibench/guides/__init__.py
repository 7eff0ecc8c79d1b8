"""Guide families over the flat unconstrained space.

A guide family is a :class:`Guide`: a name and a few pure functions over a params pytree. Every
reparameterised family draws ``z = transform(params, eps)`` from standard-normal noise ``eps`` of
shape ``(n, noise_dim(params))``, so the engine can draw a whole chunk's noise in one call. Guides
know nothing of models, nor of how they are fitted (that is :mod:`vibench.methods`). A new family
is registered with :func:`register_guide`.

- ``_guide``: the protocol, the registry and the helpers every family uses.
- ``gaussian``: ``meanfield``, ``fullrank``, ``lowrank`` (and ``laplace``, ``pathfinder``: the
  full-rank family under those fitting methods).
- ``point``: ``delta``, fitted as a MAP.
- ``flows``: ``iaf`` and ``bnaf``.
"""

from ._guide import GUIDES, Guide, dimension, draw, get_guide, register_guide, transform_log_prob
from .flows import FlowParams
from .gaussian import FullRankParams, LowRankParams, MeanFieldParams
from .point import DeltaParams

__all__ = [
    "Guide",
    "GUIDES",
    "register_guide",
    "get_guide",
    "draw",
    "transform_log_prob",
    "dimension",
    "MeanFieldParams",
    "FullRankParams",
    "LowRankParams",
    "DeltaParams",
    "FlowParams",
]
