"""The :class:`Model` a fit runs on, its two front doors, and the check every entry point makes on
what it is handed; the builders behind the front doors live in ``numpyro`` and ``log_density``."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

import jax
import numpy as np

from ._parts import Density, check_batch_size, name_of
from .log_density import build as build_from_log_density
from .numpyro import build as build_from_numpyro


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A posterior over a flat unconstrained vector ``z`` ``(dim,)``.

    - ``log_density(z) -> ()``: log p(data, constrain(z)) plus the log-Jacobian of the transforms;
      the density VI fits in the flat space.
    - ``log_joint(z) -> ()``: log p(data, constrain(z)) without the Jacobian; the MAP objective in the
      model's own parameterisation.
    - ``constrain(z) -> dict``: named values in their natural space (deterministic sites included).
    - ``unconstrain(values) -> (dim,)``: the inverse, from constrained latent values.
    - ``init_z``: the model's initial point ``(dim,)``; ``sites``: latent site name -> shape.
    - ``data``: the arrays the density reads, handed to compiled code as arguments (so data placed
      on several devices with :func:`shard_data` is computed on where it lies); :meth:`density`
      evaluates the model on other arrays of the same shapes, or on a random minibatch.
    - ``batch_size``, ``num_data``: set for subsampled models (each step then sees ``batch_size``
      of ``num_data`` data points, the likelihood scaled by ``num_data / batch_size``).
    """

    log_density: Callable[[jax.Array], jax.Array]
    log_joint: Callable[[jax.Array], jax.Array]
    constrain: Callable[[jax.Array], dict]
    unconstrain: Callable[[Mapping[str, Any]], jax.Array]
    init_z: jax.Array
    sites: dict
    name: str = "model"
    numpyro_model: Optional[Callable] = None
    model_args: tuple = ()
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    data: tuple = ()
    bind: Optional[Callable[[tuple, Optional[jax.Array]], Density]] = None
    batch_size: Optional[int] = None
    num_data: Optional[int] = None
    rebuild: Optional[Callable[[Optional[int]], "Model"]] = dataclasses.field(default=None, repr=False)

    @property
    def dim(self) -> int:
        """Length of the flat unconstrained vector."""
        return int(self.init_z.shape[0])

    def density(self, data: Optional[tuple] = None, key: Optional[jax.Array] = None) -> Density:
        """The log densities over ``data`` (default: the model's own). With ``key`` and a subsampled
        model, an unbiased estimate from a random minibatch of ``batch_size`` data points."""
        if self.bind is None:
            return Density(self.log_density, self.log_joint)
        return self.bind(self.data if data is None else data, key if self.batch_size else None)

    def with_batch_size(self, batch_size: Optional[int]) -> "Model":
        """This model with each step seeing ``batch_size`` data points (None: all of them)."""
        if self.rebuild is None:
            raise ValueError(
                f"{self.name} declares no data to subsample: use numpyro.plate(..., subsample_size=B) in a "
                "NumPyro model, or Model.from_log_density(..., data=..., log_likelihood=...)"
            )
        return self.rebuild(check_batch_size(batch_size, self.num_data))

    def initial_point(self, init_values: Optional[Mapping[str, Any]] = None) -> jax.Array:
        """The flat starting point ``(dim,)``: ``init_z``, or ``init_values`` (constrained values by
        site name; sites left out keep their initial values)."""
        if init_values is None:
            return self.init_z
        if not isinstance(init_values, Mapping):
            raise TypeError(f"init_values must be a dict of site name -> constrained value, got {type(init_values).__name__}")
        unknown = set(init_values) - set(self.sites)
        if unknown:
            raise ValueError(f"init_values names unknown site(s) {sorted(unknown)}; the model's sites: {sorted(self.sites)}")
        for name, value in init_values.items():
            if np.shape(value) != tuple(self.sites[name]):
                raise ValueError(f"init_values[{name!r}] has shape {np.shape(value)}; the site's shape is {tuple(self.sites[name])}")
            if not np.all(np.isfinite(np.asarray(self.unconstrain({name: value})))):
                raise ValueError(f"init_values[{name!r}] = {value!r} lies outside the site's support; give a value inside it")
        return self.unconstrain(init_values)

    def __repr__(self) -> str:
        sites = ", ".join(f"{k}: {tuple(v)}" for k, v in self.sites.items())
        return f"Model({self.name!r}, dim={self.dim}, sites={{{sites}}})"

    @classmethod
    def from_numpyro(cls, model_fn: Callable, *args, **kwargs) -> "Model":
        """Wrap a NumPyro model called as ``model_fn(*args, **kwargs)``.

        Latent sites must be continuous sample sites: ``numpyro.param``/``mutable`` sites and
        discrete latents raise a ValueError naming the site. Array arguments (``ndim >= 1``) are the
        model's ``data``. A ``numpyro.plate(name, N, subsample_size=B)`` makes each step see a fresh
        random minibatch of ``B`` (drawn with replacement, the likelihood scaled by ``N / B``);
        exports, diagnostics and the starting stage use all ``N``.
        """
        return build_from_numpyro(cls, model_fn, args, kwargs)

    @classmethod
    def from_log_density(
        cls,
        log_density: Callable[[dict], jax.Array],
        supports: Mapping[str, Any],
        *,
        shapes: Optional[Mapping[str, tuple]] = None,
        init: Optional[Mapping[str, Any]] = None,
        name: Optional[str] = None,
        data: Any = None,
        log_likelihood: Optional[Callable[[dict, Any], jax.Array]] = None,
        batch_size: Optional[int] = None,
    ) -> "Model":
        """Wrap ``log_density(values) -> ()``, a function of a dict of constrained values.

        ``supports`` maps each name to a ``numpyro.distributions.constraints`` object (e.g.
        ``constraints.positive``); ``shapes`` gives each value's shape (default scalar); ``init``
        gives constrained starting values (default: the transform of 0).

        With ``data`` (a pytree of arrays sharing a leading axis of ``N`` data points) and
        ``log_likelihood(values, data) -> (N,)`` (the log-likelihood of each data point), the
        posterior is ``log_density(values) + sum(log_likelihood(values, data))``; a ``batch_size``
        ``B`` then makes each step see ``B`` random data points, the sum scaled by ``N / B``.
        """
        return build_from_log_density(
            cls, log_density, supports, shapes=shapes, init=init, name=name, data=data,
            log_likelihood=log_likelihood, batch_size=batch_size,
        )


def check_model(obj, where: str) -> Model:
    """``obj`` if it is a :class:`Model`; else a TypeError that says how to build one. Every entry
    point that takes a model (``fit``, ``Fit.load``, the Workbench) calls this, so all say the same."""
    if isinstance(obj, Model):
        return obj
    if callable(obj):
        hint = (
            f"; wrap the function first: vb.Model.from_numpyro({name_of(obj)}, *args, **kwargs) for a NumPyro "
            f"model, or vb.Model.from_log_density({name_of(obj)}, supports) for a log density of named values"
        )
    else:
        hint = "; build one with vb.Model.from_numpyro(model_fn, *args, **kwargs) or vb.Model.from_log_density(...)"
    raise TypeError(f"{where} expects a vibench.Model, got {type(obj).__name__}{hint}")
