"""What a NumPyro model says about its sites, for the export: plate dims, observed values and
constant data (from one trace at the model's initial point), and its pointwise log-likelihood and
posterior-predictive draws as jitted functions, each cached per model.
"""

from __future__ import annotations

import inspect
from typing import NamedTuple, Optional

import jax
import numpy as np

from ._memo import per_model

__all__ = ["ModelInfo", "model_info", "log_likelihood_fn", "predictive_fn"]


class ModelInfo(NamedTuple):
    dims: dict  # site -> dim names (plates; unnamed axes get ArviZ's default names)
    observed: dict  # observed site -> value (numpyro.factor sites left out)
    factors: tuple  # names of numpyro.factor sites (they have a log-likelihood, nothing to predict)
    constant: dict  # the model's array arguments that are not observed values
    constant_dims: dict


@per_model
def model_info(model) -> ModelInfo:
    """Dims, observed values and constant data of a NumPyro model, from one trace at its initial point."""
    from numpyro import handlers

    fn, args, kwargs = model.numpyro_model, model.model_args, model.model_kwargs
    init = jax.device_get(model.constrain(model.init_z))
    trace = handlers.trace(handlers.substitute(handlers.seed(fn, 0), data=init)).get_trace(*args, **kwargs)
    dims, observed, factors = {}, {}, []
    for name, site in trace.items():
        if site["type"] not in ("sample", "deterministic"):
            continue
        site_dims = _site_dims(name, site)
        if site_dims is not None:
            dims[name] = site_dims
        if site["type"] == "sample" and site["is_observed"]:
            if _is_factor(site["fn"]):
                factors.append(name)
            else:
                observed[name] = np.asarray(site["value"])
    constant = _constant_data(fn, args, kwargs, observed, set(trace))
    constant_dims = {}
    for name, value in constant.items():
        for obs, obs_value in observed.items():
            if obs in dims and obs_value.ndim >= 1 and value.shape[: obs_value.ndim] == obs_value.shape:
                constant_dims[name] = dims[obs] + [f"{name}_dim_{i}" for i in range(obs_value.ndim, value.ndim)]
                break
    return ModelInfo(dims, observed, tuple(factors), constant, constant_dims)


@per_model
def log_likelihood_fn(model, n):
    """Jitted ``latents {site: (n, ...)} -> {observed site: (n, *batch_shape)}``, cached per model."""
    from numpyro.infer import log_likelihood

    fn, args, kwargs = model.numpyro_model, model.model_args, model.model_kwargs
    return jax.jit(lambda latents: log_likelihood(fn, latents, *args, **kwargs))


@per_model
def predictive_fn(model, n, sites):
    """Jitted ``(key, latents) -> {site: (n, *shape)}`` posterior-predictive draws of ``sites``."""
    from numpyro.handlers import uncondition
    from numpyro.infer import Predictive

    fn, args, kwargs = model.numpyro_model, model.model_args, model.model_kwargs

    def predict(key, latents):
        # uncondition: the observed sites are drawn afresh instead of returning the data.
        predictive = Predictive(uncondition(fn), posterior_samples=latents, return_sites=list(sites), batch_ndims=1)
        return predictive(key, *args, **kwargs)

    return jax.jit(predict)


def _site_dims(name, site) -> Optional[list]:
    """Plate names placed on the axes they index (plate dim -k is batch axis -k)."""
    shape = np.shape(site["value"])
    batch_ndim = len(site["fn"].batch_shape) if site["type"] == "sample" else len(shape)
    named = [None] * len(shape)
    for frame in site.get("cond_indep_stack", []):
        axis = batch_ndim + frame.dim
        if 0 <= axis < len(shape) and shape[axis] == frame.size:
            named[axis] = frame.name
    for i, dim in enumerate(site.get("infer", {}).get("event_dims", [])):
        if batch_ndim + i < len(shape):
            named[batch_ndim + i] = dim
    if all(d is None for d in named):
        return None
    return [d if d is not None else f"{name}_dim_{i}" for i, d in enumerate(named)]


def _is_factor(fn) -> bool:
    from numpyro.distributions.distribution import Unit

    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return isinstance(fn, Unit)


def _constant_data(fn, args, kwargs, observed, site_names) -> dict:
    """Array arguments of the model (by parameter name) that are not its observed values."""
    try:
        bound = inspect.signature(fn).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return {}
    named = {}
    for name, value in bound.arguments.items():
        kind = bound.signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            named[name] = value
    constant = {}
    for name, value in named.items():
        if name in site_names or not isinstance(value, (np.ndarray, jax.Array)) or np.ndim(value) < 1:
            continue
        value = np.asarray(value)
        if not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
            continue
        if any(o.shape == value.shape and np.array_equal(o, value) for o in observed.values()):
            continue
        constant[name] = value
    return constant
