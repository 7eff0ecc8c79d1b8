"""Building a Model from a NumPyro model: NumPyro does the tracing, constraints and transforms, and
a ``numpyro.plate(..., subsample_size=B)`` makes each step see a random minibatch."""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.primitives import Messenger
from numpyro.infer import init_to_median
from numpyro.infer.util import constrain_fn, initialize_model, log_density, potential_energy, unconstrain_fn

from ._parts import Density, as_device_array, name_of, ravel


def build(cls: Callable, model_fn: Callable, args: tuple, kwargs: dict):
    """``cls(...)``, a Model over ``z`` ``(dim,)`` for the NumPyro model called as ``model_fn(*args, **kwargs)``;
    ``cls`` is passed in (and passed on to ``rebuild``) so this module never imports the Model class."""
    if not callable(model_fn):
        raise TypeError(f"Model.from_numpyro expects a NumPyro model function, got {type(model_fn).__name__}")
    plates = _check_numpyro_sites(model_fn, args, kwargs)
    return _numpyro_model(cls, model_fn, args, kwargs, plates, None)


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


def _numpyro_model(cls, model_fn, args, kwargs, plates: dict, batch: Optional[int]):
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
    return cls(
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
        rebuild=(lambda b: _numpyro_model(cls, model_fn, args, kwargs, plates, _ALL_DATA if b is None else b)) if plates else None,
    )


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
