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
from numpyro.primitives import Messenger
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to
from numpyro.infer import init_to_median
from numpyro.infer.util import constrain_fn, initialize_model, log_density, potential_energy, unconstrain_fn

from ._parts import Density, as_device_array, check_batch_size, count_data, name_of, ravel

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
        if not callable(model_fn):
            raise TypeError(f"Model.from_numpyro expects a NumPyro model function, got {type(model_fn).__name__}")
        plates = _check_numpyro_sites(model_fn, args, kwargs)
        return _numpyro_model(model_fn, args, kwargs, plates, None)

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


class _Plates(Messenger):
    """Resolve subsampled plates: every index (``key`` None), or ``batch`` indices (the model's own
    ``subsample_size`` when None) drawn with replacement: unbiased, and O(batch) rather than the
    O(N) permutation NumPyro's own sampler needs."""

    def __init__(self, fn, plates: dict, key, batch: Optional[int]):
        super().__init__(fn)
        self.plates, self.key, self.batch = plates, key, batch

    def process_message(self, msg):
        if msg["type"] != "plate" or msg["name"] not in self.plates:
            return
        size = self.plates[msg["name"]][0]
        if self.key is None:
            msg["value"], msg["args"] = jnp.arange(size), (size, size)
        else:
            batch = self.batch or self.plates[msg["name"]][1]
            key = jax.random.fold_in(self.key, sorted(self.plates).index(msg["name"]))
            msg["value"], msg["args"] = jax.random.randint(key, (batch,), 0, size), (size, batch)


_ALL_DATA = 0  # rebuild's batch for "every data point", where None means the plates' own subsample_size


def _numpyro_model(model_fn, args, kwargs, plates: dict, batch: Optional[int]) -> Model:
    leaves, treedef = jax.tree.flatten((args, kwargs))
    dynamic = [i for i, leaf in enumerate(leaves) if isinstance(leaf, (np.ndarray, jax.Array)) and np.ndim(leaf) >= 1]
    data = tuple(as_device_array(leaves[i]) for i in dynamic)

    def arguments(arrays):
        new = list(leaves)
        for i, array in zip(dynamic, arrays):
            new[i] = array
        return jax.tree.unflatten(treedef, new)

    def resolved(key):
        return _Plates(model_fn, plates, key, batch) if plates else model_fn

    full = resolved(None)
    try:
        info = initialize_model(
            jax.random.key(0),
            full,
            init_strategy=init_to_median(num_samples=15),
            model_args=args,
            model_kwargs=kwargs,
        )
    except RuntimeError as err:
        raise ValueError(
            f"the log density of {name_of(model_fn)} is not finite at any initial point tried "
            f"{_nonfinite_sites(model_fn, args, kwargs)}; check the data for NaN or values "
            "outside the likelihood's support, and that the priors and data shapes agree"
        ) from err
    except (ValueError, TypeError, IndexError) as err:
        raise _call_error(model_fn, "evaluating its log density", err) from err
    init_z, unravel = ravel(info.param_info.z)

    def bind(arrays, key):
        fn = resolved(key)
        a, k = arguments(arrays)

        def latent(z):
            return constrain_fn(fn, a, k, unravel(z), return_deterministic=False)

        return Density(
            lambda z: -potential_energy(fn, a, k, unravel(z)),
            lambda z: log_density(fn, a, k, latent(z))[0],
        )

    def latent(z):
        return constrain_fn(full, args, kwargs, unravel(z), return_deterministic=False)

    def unconstrain(values):
        merged = {**latent(init_z), **{k: jnp.asarray(v) for k, v in values.items()}}
        return ravel_pytree(unconstrain_fn(full, args, kwargs, merged))[0]

    own = bind(data, None)
    first = sorted(plates)[0] if plates else None
    return Model(
        log_density=own.log_density,
        log_joint=own.log_joint,
        constrain=lambda z: info.postprocess_fn(unravel(z)),
        unconstrain=unconstrain,
        init_z=init_z,
        sites={name: tuple(np.shape(v)) for name, v in latent(init_z).items()},
        name=name_of(model_fn),
        numpyro_model=model_fn,
        model_args=args,
        model_kwargs=kwargs,
        data=data,
        bind=bind,
        batch_size=(batch or plates[first][1]) if plates and batch != _ALL_DATA else None,
        num_data=plates[first][0] if plates else None,
        rebuild=(lambda b: _numpyro_model(model_fn, args, kwargs, plates, _ALL_DATA if b is None else b)) if plates else None,
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


def _call_error(model_fn, doing: str, err: Exception) -> ValueError:
    return ValueError(
        f"{name_of(model_fn)} raised {type(err).__name__} while vibench was {doing}: {str(err).rstrip('.')}. Check that the "
        "data passed to Model.from_numpyro have the shapes the model expects (each observed array's "
        "shape must agree with its plates and its distribution's batch shape)"
    )


def _trace(model_fn, args, kwargs) -> dict:
    # Values from the init strategy rather than prior draws: improper priors cannot be sampled.
    seeded = handlers.substitute(handlers.seed(model_fn, 0), substitute_fn=init_to_median(num_samples=15))
    return handlers.trace(seeded).get_trace(*args, **kwargs)


def _check_numpyro_sites(model_fn, args, kwargs) -> dict:
    """Check the latent sites; return the subsampled plates, ``{name: (size, subsample_size)}``."""
    try:
        trace = _trace(model_fn, args, kwargs)
    except (ValueError, TypeError, IndexError) as err:
        raise _call_error(model_fn, "tracing it", err) from err
    plates = {
        name: tuple(site["args"])
        for name, site in trace.items()
        if site["type"] == "plate" and site["args"][1] is not None and site["args"][1] != site["args"][0]
    }
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
        local = [frame.name for frame in site["cond_indep_stack"] if frame.name in plates]
        if local:
            raise ValueError(
                f"latent site {name!r} lies inside the subsampled plate {local[0]!r}: one latent per data "
                "point cannot be covered by a guide over the global parameters when each step sees another "
                "minibatch. Fit it without subsample_size, or marginalise the local latent out "
                "(see docs/scale.md on amortised guides)"
            )
        latent.append(name)
    if not latent:
        raise ValueError(f"{name_of(model_fn)} has no latent sample sites: there is no posterior to fit")
    return plates


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
