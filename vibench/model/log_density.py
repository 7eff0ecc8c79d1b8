"""Building a Model from a plain JAX log density of named constrained values, with declared supports
turned into transforms by ``numpyro.distributions.transforms.biject_to``."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to

from ._parts import Density, as_device_array, check_batch_size, count_data, name_of, ravel


def build(
    cls: Callable,
    log_density: Callable[[dict], jax.Array],
    supports: Mapping[str, Any],
    *,
    shapes: Optional[Mapping[str, tuple]] = None,
    init: Optional[Mapping[str, Any]] = None,
    name: Optional[str] = None,
    data: Any = None,
    log_likelihood: Optional[Callable[[dict, Any], jax.Array]] = None,
    batch_size: Optional[int] = None,
):
    """``cls(...)``, a Model over ``z`` ``(dim,)`` for ``log_density(values) -> ()``; the arguments as
    ``Model.from_log_density`` takes them. ``cls`` is passed in (and passed on to ``rebuild``) so
    this module never imports the Model class."""
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
        rebuild=None if data is None else (lambda b: build(cls, log_density, supports, batch_size=b, **arguments)),
    )
