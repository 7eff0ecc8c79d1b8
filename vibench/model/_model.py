"""``Model``: a posterior as a log density over one flat unconstrained vector ``z`` of shape ``(d,)``.

Two front doors: :meth:`Model.from_numpyro` (NumPyro does the tracing, constraints and transforms)
and :meth:`Model.from_log_density` (a plain JAX function of named constrained values, with declared
supports turned into transforms by ``numpyro.distributions.transforms.biject_to``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to

from ._parts import Density, as_device_array, check_batch_size, count_data, name_of, ravel
from .numpyro import build as build_from_numpyro

__all__ = ["Model", "check_model"]


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
        if not callable(log_density):
            raise TypeError(f"log_density must be callable, got {type(log_density).__name__}")
        if not isinstance(supports, Mapping):
            raise TypeError(f"supports must be a dict of name -> numpyro constraint, got {type(supports).__name__}")
        if not supports:
            raise ValueError(
                "supports is empty: the model has no latent sites, so there is no posterior to fit; "
                "declare each latent, e.g. supports={'x': constraints.real}"
            )
        if (data is None) != (log_likelihood is None):
            raise ValueError("data and log_likelihood go together: pass both (per-datum log-likelihood) or neither")
        shapes = dict(shapes or {})
        init = dict(init or {})
        for extra, what in ((set(shapes) - set(supports), "shapes"), (set(init) - set(supports), "init")):
            if extra:
                raise ValueError(f"{what} names {sorted(extra)} that are not in supports {sorted(supports)}")
        transforms = {}
        for key, support in supports.items():
            if not isinstance(support, constraints.Constraint):
                raise TypeError(f"supports[{key!r}] must be a numpyro constraint, got {support!r}")
            if support.is_discrete:
                raise ValueError(
                    f"supports[{key!r}] is discrete ({support}): vibench fits continuous latents only; "
                    "marginalise the discrete variable out of log_density (e.g. a logsumexp over its values)"
                )
            transforms[key] = biject_to(support)
        z0 = {}
        for key, t in transforms.items():
            shape = tuple(shapes.get(key, np.shape(init[key]) if key in init else ()))
            if key in init:
                z0[key] = jnp.asarray(t.inv(jnp.broadcast_to(jnp.asarray(init[key], jnp.float32), shape)))
            else:
                z0[key] = jnp.zeros(t.inverse_shape(shape), jnp.float32)
        init_z, unravel = ravel(z0)
        label = name or name_of(log_density)

        def constrain(z):
            u = unravel(z)
            return {k: transforms[k](u[k]) for k in transforms}

        def unconstrain(values):
            return ravel_pytree({k: transforms[k].inv(jnp.asarray(values[k])) if k in values else v for k, v in unravel(init_z).items()})[0]

        def flat(joint):
            def flat_log_density(z):
                u = unravel(z)
                x = {k: transforms[k](u[k]) for k in transforms}
                log_det = sum(jnp.sum(transforms[k].log_abs_det_jacobian(u[k], x[k])) for k in transforms)
                return joint(x) + log_det

            return flat_log_density

        num_data, bind = None, None
        if data is not None:
            data = jax.tree.map(as_device_array, data)
            num_data = count_data(data, label)
            batch_size = check_batch_size(batch_size, num_data)

            def bind(arrays, key):
                if key is None:
                    batch, weight = arrays, 1.0
                else:
                    index = jax.random.randint(key, (batch_size,), 0, num_data)
                    batch, weight = jax.tree.map(lambda a: a[index], arrays), num_data / batch_size

                def joint(values):
                    pointwise = log_likelihood(values, batch)
                    if jnp.ndim(pointwise) != 1:
                        raise ValueError(f"log_likelihood of {label} must return one value per data point, shape (N,); got shape {jnp.shape(pointwise)}")
                    return log_density(values) + weight * jnp.sum(pointwise)

                return Density(flat(joint), lambda z: joint(constrain(z)))

            own = bind(data, None)
            joint_fn, flat_log_density = own.log_joint, own.log_density
        else:
            batch_size = None
            flat_log_density, joint_fn = flat(log_density), lambda z: log_density(constrain(z))

        try:
            out = jax.eval_shape(flat_log_density, init_z)
        except (ValueError, TypeError, IndexError, KeyError) as err:
            given = {k: tuple(np.shape(v)) for k, v in constrain(init_z).items()}
            raise ValueError(
                f"log_density of {label} raised {type(err).__name__} when called with values of shapes {given}: "
                f"{str(err).rstrip('.')}. Check shapes= against the data the function uses"
            ) from err
        if out.shape != ():
            raise ValueError(f"log_density of {label} must return a scalar, got shape {out.shape}")
        value = float(flat_log_density(init_z))
        if not np.isfinite(value):
            raise ValueError(
                f"the log density of {label} is {value} at its initial point {dict(constrain(init_z))}; "
                "pass init= with values where it is finite"
            )
        arguments = dict(shapes=shapes, init=init, name=name, data=data, log_likelihood=log_likelihood)
        return cls(
            log_density=flat_log_density,
            log_joint=joint_fn,
            constrain=constrain,
            unconstrain=unconstrain,
            init_z=init_z,
            sites={k: tuple(np.shape(v)) for k, v in constrain(init_z).items()},
            name=label,
            data=() if data is None else data,
            bind=bind,
            batch_size=batch_size,
            num_data=num_data,
            rebuild=None if data is None else (lambda b: cls.from_log_density(log_density, supports, batch_size=b, **arguments)),
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
