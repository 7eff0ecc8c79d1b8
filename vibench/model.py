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
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to
from numpyro.infer import init_to_median
from numpyro.infer.util import constrain_fn, initialize_model, log_density, unconstrain_fn

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

    @property
    def dim(self) -> int:
        """Length of the flat unconstrained vector."""
        return int(self.init_z.shape[0])

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
        discrete latents raise a ValueError naming the site.
        """
        if not callable(model_fn):
            raise TypeError(f"Model.from_numpyro expects a NumPyro model function, got {type(model_fn).__name__}")
        _check_numpyro_sites(model_fn, args, kwargs)
        try:
            info = initialize_model(
                jax.random.key(0),
                model_fn,
                init_strategy=init_to_median(num_samples=15),
                model_args=args,
                model_kwargs=kwargs,
            )
        except RuntimeError as err:
            raise ValueError(
                f"the log density of {_name(model_fn)} is not finite at any initial point tried "
                f"{_nonfinite_sites(model_fn, args, kwargs)}; check the data for NaN or values "
                "outside the likelihood's support, and that the priors and data shapes agree"
            ) from err
        except (ValueError, TypeError, IndexError) as err:
            raise _call_error(model_fn, "evaluating its log density", err) from err
        init_z, unravel = ravel_pytree(info.param_info.z)

        def latent(z):
            return constrain_fn(model_fn, args, kwargs, unravel(z), return_deterministic=False)

        def unconstrain(values):
            full = {**latent(init_z), **{k: jnp.asarray(v) for k, v in values.items()}}
            return ravel_pytree(unconstrain_fn(model_fn, args, kwargs, full))[0]

        sites = {name: tuple(np.shape(v)) for name, v in latent(init_z).items()}
        return cls(
            log_density=lambda z: -info.potential_fn(unravel(z)),
            log_joint=lambda z: log_density(model_fn, args, kwargs, latent(z))[0],
            constrain=lambda z: info.postprocess_fn(unravel(z)),
            unconstrain=unconstrain,
            init_z=init_z,
            sites=sites,
            name=_name(model_fn),
            numpyro_model=model_fn,
            model_args=args,
            model_kwargs=kwargs,
        )

    @classmethod
    def from_log_density(
        cls,
        log_density: Callable[[dict], jax.Array],
        supports: Mapping[str, Any],
        *,
        shapes: Optional[Mapping[str, tuple]] = None,
        init: Optional[Mapping[str, Any]] = None,
        name: Optional[str] = None,
    ) -> "Model":
        """Wrap ``log_density(values) -> ()``, a function of a dict of constrained values.

        ``supports`` maps each name to a ``numpyro.distributions.constraints`` object (e.g.
        ``constraints.positive``); ``shapes`` gives each value's shape (default scalar); ``init``
        gives constrained starting values (default: the transform of 0).
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
        init_z, unravel = ravel_pytree(z0)

        def constrain(z):
            u = unravel(z)
            return {k: transforms[k](u[k]) for k in transforms}

        def flat_log_density(z):
            u = unravel(z)
            x = {k: transforms[k](u[k]) for k in transforms}
            log_det = sum(jnp.sum(transforms[k].log_abs_det_jacobian(u[k], x[k])) for k in transforms)
            return log_density(x) + log_det

        def unconstrain(values):
            return ravel_pytree({k: transforms[k].inv(jnp.asarray(values[k])) if k in values else v for k, v in unravel(init_z).items()})[0]

        label = name or _name(log_density)
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
        return cls(
            log_density=flat_log_density,
            log_joint=lambda z: log_density(constrain(z)),
            constrain=constrain,
            unconstrain=unconstrain,
            init_z=init_z,
            sites={k: tuple(np.shape(v)) for k, v in constrain(init_z).items()},
            name=label,
        )


def check_model(obj, where: str) -> Model:
    """``obj`` if it is a :class:`Model`; else a TypeError that says how to build one. Every entry
    point that takes a model (``fit``, ``Fit.load``, the Workbench) calls this, so all say the same."""
    if isinstance(obj, Model):
        return obj
    if callable(obj):
        hint = (
            f"; wrap the function first: vb.Model.from_numpyro({_name(obj)}, *args, **kwargs) for a NumPyro "
            f"model, or vb.Model.from_log_density({_name(obj)}, supports) for a log density of named values"
        )
    else:
        hint = "; build one with vb.Model.from_numpyro(model_fn, *args, **kwargs) or vb.Model.from_log_density(...)"
    raise TypeError(f"{where} expects a vibench.Model, got {type(obj).__name__}{hint}")


def _name(fn) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def _call_error(model_fn, doing: str, err: Exception) -> ValueError:
    return ValueError(
        f"{_name(model_fn)} raised {type(err).__name__} while vibench was {doing}: {str(err).rstrip('.')}. Check that the "
        "data passed to Model.from_numpyro have the shapes the model expects (each observed array's "
        "shape must agree with its plates and its distribution's batch shape)"
    )


def _trace(model_fn, args, kwargs) -> dict:
    # Values from the init strategy rather than prior draws: improper priors cannot be sampled.
    seeded = handlers.substitute(handlers.seed(model_fn, 0), substitute_fn=init_to_median(num_samples=15))
    return handlers.trace(seeded).get_trace(*args, **kwargs)


def _check_numpyro_sites(model_fn, args, kwargs) -> None:
    try:
        trace = _trace(model_fn, args, kwargs)
    except (ValueError, TypeError, IndexError) as err:
        raise _call_error(model_fn, "tracing it", err) from err
    latent = []
    for name, site in trace.items():
        if site["type"] in ("param", "mutable"):
            raise ValueError(
                f"site {name!r} is a numpyro.{site['type']} site: vibench fits the posterior of sample "
                "sites only; give it a prior with numpyro.sample, or pass it to the model as data"
            )
        if site["type"] != "sample" or site["is_observed"] or site["infer"].get("is_auxiliary"):
            continue
        if site["fn"].support.is_discrete:
            raise ValueError(
                f"latent site {name!r} is discrete ({type(site['fn']).__name__}): Gaussian-family VI needs "
                "continuous latents; marginalise it out of the model (e.g. a logsumexp over its values)"
            )
        latent.append(name)
    if not latent:
        raise ValueError(f"{_name(model_fn)} has no latent sample sites: there is no posterior to fit")


def _nonfinite_sites(model_fn, args, kwargs) -> str:
    """Names of the sites whose log density is not finite at the initial point, as a phrase."""
    try:
        trace = _trace(model_fn, args, kwargs)
        bad = [
            name
            for name, site in trace.items()
            if site["type"] == "sample" and not np.all(np.isfinite(np.asarray(site["fn"].log_prob(site["value"]))))
        ]
    except Exception:  # noqa: BLE001 - this only decorates an error message
        return ""
    return f"(not finite at the initial point: {', '.join(map(repr, bad))})" if bad else ""
