"""``Model``: a posterior as a log density over one flat unconstrained vector ``z`` of shape ``(d,)``.

Two front doors: :meth:`Model.from_numpyro` (NumPyro does the tracing, constraints and transforms)
and :meth:`Model.from_log_density` (a plain JAX function of named constrained values, with declared
supports turned into transforms by ``numpyro.distributions.transforms.biject_to``).

Each front door's builder has a module of its own (``numpyro``, ``log_density``), as does
:func:`shard_data` (``sharding``); the pieces they share are in ``_parts``, which imports none of them.
"""

from ._model import Model, check_model
from ._parts import Density
from .sharding import shard_data

__all__ = ["Model", "Density", "check_model", "shard_data"]
