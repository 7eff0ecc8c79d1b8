"""Fits in ArviZ's format: a thin :func:`to_arviz` over a converter with one method per group.

The container is the installed ArviZ's own (an ``xarray.DataTree`` on ArviZ 1.x, an
``arviz.InferenceData`` on 0.23), built by :mod:`vibench.arviz_compat`. Groups, each with a
leading ``chain`` axis (one chain per fit) and ``draw`` axis (guide draws):

- ``posterior``: constrained draws of every latent and deterministic site; NumPyro plates name
  the dims (``dims=`` / ``coords=`` as in ArviZ's converters override and extend them).
- ``sample_stats``: ``lp`` (log joint in the model's parameterisation), ``log_q`` (the guide's log
  density in the flat space) and ``log_weight`` (log p(y, z) - log q(z) in the flat space, which
  PSIS smooths; its mean is the ELBO).
- ``log_likelihood``, ``posterior_predictive``, ``observed_data``, ``constant_data``: NumPyro
  models only (``numpyro.infer.log_likelihood`` and ``Predictive``), unless ``log_likelihood`` is
  given as a function.
- ``vi_trace``: how the posterior was obtained: per step ``loss``, ``elbo``, ``grad_norm``,
  ``rejected`` (``(chain, step)``, NaN-padded past ``num_steps`` when fits differ in length) and
  per chain ``config`` (the Config as JSON; :func:`read_configs` reads it back), the starting
  stage's ``start_method``, ``start_message`` and ``start_seconds`` (see :class:`vibench.start.Start`;
  empty and NaN for a fit made without one), ``num_steps``, ``wall_time``, ``stop_reason`` and
  ``khat`` (PSIS k-hat of the guide's draws, before any reweighting; NaN for point guides).
"""

from __future__ import annotations

import inspect
import os
import warnings
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Union

import jax
import numpy as np

from . import arviz_compat
from .config import Config
from ._checks import as_key, check_count
from ._version import __version__
from .diagnostics import diagnose, khat_reading, psis
from .evaluation import Draws, importance_draws
from .model_info import ModelInfo, log_likelihood_fn, model_info, predictive_fn

__all__ = ["to_arviz", "summary", "read_configs", "loo_approximate_posterior", "InferenceDataConverter", "TRACE_GROUP"]

TRACE_GROUP = "vi_trace"


def to_arviz(fits, num_draws: int = 1000, key: Optional[jax.Array] = None, posterior_predictive: bool = True,
             log_likelihood: Union[bool, Callable] = True, dims: Optional[Mapping[str, Sequence[str]]] = None,
             coords: Optional[Mapping[str, Any]] = None, psis_reweight: bool = False):
    """One :class:`~vibench.Fit`, or several fits of one model as chains (so R-hat across restarts
    flags multimodal or unstable fits), as the installed ArviZ's container: an ``xarray.DataTree``
    on ArviZ 1.x, an ``arviz.InferenceData`` on 0.23.

    ``num_draws`` guide draws per fit. ``log_likelihood`` may be a function ``fn(values) ->
    {name: (n_obs,)}`` of one draw's constrained values, the only way to give a model built with
    ``Model.from_log_density`` a ``log_likelihood`` group (and LOO). ``psis_reweight=True``
    resamples each chain's draws with their Pareto-smoothed importance weights (systematic
    resampling), moving them toward the posterior when k-hat is small (point guides: ValueError).
    """
    return InferenceDataConverter(
        fits, num_draws=num_draws, key=key, posterior_predictive=posterior_predictive,
        log_likelihood=log_likelihood, dims=dims, coords=coords, psis_reweight=psis_reweight,
    ).to_inference_data()


def summary(fit, num_draws: int = 4000, key: Optional[jax.Array] = None, kind: str = "stats"):
    """ArviZ's ``summary`` of ``num_draws`` guide draws (a pandas DataFrame, one row per scalar
    parameter), with the fit's :class:`Diagnosis` in ``df.attrs["diagnosis"]``."""
    data = to_arviz(fit, num_draws=num_draws, key=key, log_likelihood=False, posterior_predictive=False)
    table = arviz_compat.summary(data, kind=kind)
    # The same diagnosis as fit.diagnose(num_draws, key): k-hat and the mean shift in the flat space.
    table.attrs["diagnosis"] = diagnose(fit, num_draws, key)
    return table


def read_configs(data) -> list:
    """The :class:`~vibench.Config` of each chain of an export (DataTree or InferenceData, as
    exported or read back from netCDF)."""
    trace = arviz_compat.group(data, TRACE_GROUP)
    if trace is None:
        raise ValueError(f"this {type(data).__name__} has no {TRACE_GROUP!r} group: it was not exported by vibench")
    return [Config.from_json(str(text)) for text in trace["config"].values]


def loo_approximate_posterior(data, var_name: Optional[str] = None):
    """PSIS-LOO of an export, corrected for its draws coming from the guide q, not the posterior
    (ArviZ 1.x's ``arviz_stats.loo_approximate_posterior``; the same estimate on 0.23).

    The target's log density must be over the guide's variables: the flat-space log joint
    ``log_weight + log_q`` (``lp`` plus the log-Jacobian), not ``lp``, which is in the model's
    constrained parameterisation. A point guide has no density: ValueError.
    """
    stats = arviz_compat.group(data, "sample_stats")
    if stats is None or "log_q" not in stats or "log_weight" not in stats:
        raise ValueError("loo_approximate_posterior needs sample_stats log_q and log_weight: a vibench export")
    log_q = stats["log_q"]
    if bool(np.isnan(log_q).any()):
        raise ValueError("log_q is NaN: a point guide (a MAP fit) has no density, so its LOO has no importance correction")
    return arviz_compat.loo_approximate_posterior(data, stats["log_weight"] + log_q, log_q, var_name=var_name)


class _Chain(NamedTuple):
    fit: Any
    draws: Draws
    khat: float
    predictive_key: jax.Array


class InferenceDataConverter:
    """Draws once per fit at construction; each group's method returns its arrays ``{name:
    (chain, draw, ...)}`` (``None`` where it does not apply; ``vi_trace`` an xarray Dataset) and
    :meth:`to_inference_data` gathers them into the installed ArviZ's container."""

    def __init__(self, fits, *, num_draws=1000, key=None, posterior_predictive=True, log_likelihood=True,
                 dims=None, coords=None, psis_reweight=False):
        self.fits = _check_fits(fits)
        check_count("num_draws", num_draws)
        if not callable(log_likelihood) and not isinstance(log_likelihood, (bool, np.bool_)):
            raise TypeError(f"log_likelihood must be a bool or a function values -> {{name: array}}, got {log_likelihood!r}")
        if not isinstance(posterior_predictive, (bool, np.bool_)):
            raise TypeError(f"posterior_predictive must be a bool, got {posterior_predictive!r}")
        if psis_reweight:
            _check_no_point(self.fits, "psis_reweight=True")
        self.model = self.fits[0].model
        self.is_numpyro = self.model.numpyro_model is not None
        self.with_predictive = bool(posterior_predictive)
        self.log_likelihood_fn = log_likelihood if callable(log_likelihood) else bool(log_likelihood)
        self.info = model_info(self.model) if self.is_numpyro else ModelInfo({}, {}, (), {}, {})
        self.dims = {**self.info.dims, **self.info.constant_dims, **{k: list(v) for k, v in (dims or {}).items()}}
        self.coords = dict(coords or {})
        self.psis_reweight = bool(psis_reweight)
        self._attrs = {"inference_library": "vibench", "inference_library_version": __version__}
        if self.log_likelihood_fn is True and not self.is_numpyro:
            _warn(
                f"model {self.model.name!r} is a plain log density: its export has posterior, sample_stats "
                f"and {TRACE_GROUP} but no log_likelihood (which LOO needs), posterior_predictive "
                "or observed_data; pass log_likelihood=fn, fn(values) -> {name: pointwise log-likelihood}, to add "
                "one, or log_likelihood=False to export without this warning"
            )
        key = as_key(key)
        self.chains = [self._chain(fit, k, num_draws) for fit, k in zip(self.fits, jax.random.split(key, len(self.fits)))]

    def _chain(self, fit, key, num_draws) -> _Chain:
        draw_key, resample_key, predictive_key = jax.random.split(key, 3)
        draws, k = importance_draws(fit, draw_key, num_draws), float("nan")
        if not fit.guide.point:
            try:
                smoothed, k = psis(draws.log_weight)
            except ValueError:
                if self.psis_reweight:
                    raise
            if self.psis_reweight:
                reading = khat_reading(k, num_draws)
                if reading.reading == "unreliable":
                    _warn(f"PSIS-reweighted draws are unreliable: {reading}")
                index = _systematic_resample(smoothed, resample_key)
                draws = jax.tree.map(lambda x: x[index], draws)
        return _Chain(fit, draws, k, predictive_key)

    def _stacked(self, get) -> dict:
        per_chain = [get(chain) for chain in self.chains]
        return {name: np.stack([np.asarray(values[name]) for values in per_chain]) for name in per_chain[0]}

    def posterior(self) -> dict:
        return self._stacked(lambda c: c.draws.values)

    def sample_stats(self) -> dict:
        return self._stacked(lambda c: {"lp": c.draws.lp, "log_q": c.draws.log_q, "log_weight": c.draws.log_weight})

    def log_likelihood(self) -> Optional[dict]:
        if self.log_likelihood_fn is False:
            return None
        if callable(self.log_likelihood_fn):
            return self._stacked(lambda c: _user_log_likelihood(self.log_likelihood_fn, c.draws.values))
        if not self.is_numpyro or not (self.info.observed or self.info.factors):
            return None
        return self._stacked(lambda c: log_likelihood_fn(self.model, len(c.draws.z))(self._latent(c)))

    def posterior_predictive(self) -> Optional[dict]:
        if not (self.with_predictive and self.is_numpyro and self.info.observed):
            return None
        sites = tuple(self.info.observed)
        return self._stacked(lambda c: predictive_fn(self.model, len(c.draws.z), sites)(c.predictive_key, self._latent(c)))

    def observed_data(self) -> Optional[dict]:
        return dict(self.info.observed) or None

    def constant_data(self) -> Optional[dict]:
        return dict(self.info.constant) or None

    def vi_trace(self):
        import xarray as xr

        steps = max(chain.fit.num_steps for chain in self.chains)

        def padded(name, fill):
            rows = [np.asarray(getattr(c.fit.trace, name)) for c in self.chains]
            return np.stack([np.concatenate([r, np.full(steps - len(r), fill, r.dtype)]) for r in rows])

        per_step = {name: (("chain", "step"), padded(name, np.nan)) for name in ("loss", "elbo", "grad_norm")}
        per_step["rejected"] = (("chain", "step"), padded("rejected", False))
        starts = [_start(c.fit) for c in self.chains]
        per_chain = {
            "config": np.array([c.fit.config.to_json() for c in self.chains], dtype=object),
            "start_method": np.array([s["method"] for s in starts], dtype=object),
            "start_message": np.array([s["message"] for s in starts], dtype=object),
            "start_seconds": np.array([s["seconds"] for s in starts], np.float64),
            "num_steps": np.array([c.fit.num_steps for c in self.chains], np.int64),
            "wall_time": np.array([c.fit.wall_time for c in self.chains], np.float64),
            "stop_reason": np.array([c.fit.stop_reason for c in self.chains], dtype=object),
            "khat": np.array([c.khat for c in self.chains], np.float64),
        }
        data = {**per_step, **{k: (("chain",), v) for k, v in per_chain.items()}}
        attrs = {**self._attrs, "model": self.model.name}
        return xr.Dataset(data, coords={"chain": np.arange(len(self.chains)), "step": np.arange(steps)}, attrs=attrs)

    def to_inference_data(self):
        """The installed ArviZ's container (DataTree or InferenceData) of every group that applies."""
        groups = {
            "posterior": self.posterior(),
            "sample_stats": self.sample_stats(),
            "log_likelihood": self.log_likelihood(),
            "posterior_predictive": self.posterior_predictive(),
            "observed_data": self.observed_data(),
            "constant_data": self.constant_data(),
        }
        groups = {name: values for name, values in groups.items() if values is not None}
        attrs = {name: dict(self._attrs) for name in groups}
        attrs["posterior"].update(num_draws=self.chains[0].draws.z.shape[0], psis_reweighted=int(self.psis_reweight))
        return arviz_compat.from_dict(groups, dims=self.dims, coords=self.coords, attrs=attrs,
                                      extra={TRACE_GROUP: self.vi_trace()})

    def _latent(self, chain) -> dict:
        return {name: chain.draws.values[name] for name in self.model.sites}


def _start(fit) -> dict:
    """The fit's starting stage as ``{method, message, seconds}``; blank for a fit made without one."""
    start = fit.start
    if start is None:
        return {"method": "", "message": "", "seconds": float("nan")}
    return {"method": start.method, "message": start.message, "seconds": float(start.seconds)}


def _user_log_likelihood(fn, values) -> dict:
    out = jax.lax.map(fn, values, batch_size=min(256, len(next(iter(values.values())))))
    if not isinstance(out, dict) or not out:
        raise TypeError(f"log_likelihood must return a non-empty dict of name -> pointwise log-likelihood, got {type(out).__name__}")
    return out


def _systematic_resample(log_weights, key) -> np.ndarray:
    """Indices ``(n,)`` drawn in proportion to ``exp(log_weights)`` (normalised), low-variance."""
    n = log_weights.shape[0]
    cumulative = np.cumsum(np.exp(log_weights - np.logaddexp.reduce(log_weights)))
    u = (float(jax.random.uniform(key)) + np.arange(n)) / n
    return np.minimum(np.searchsorted(cumulative, u), n - 1)


def _check_fits(fits) -> list:
    from .result import Fit

    fits = [fits] if isinstance(fits, Fit) else list(fits) if isinstance(fits, (list, tuple)) else fits
    if not isinstance(fits, list) or not fits:
        raise TypeError(f"to_arviz expects a vibench.Fit or a non-empty list of them, got {type(fits).__name__}")
    for i, fit in enumerate(fits):
        if not isinstance(fit, Fit):
            raise TypeError(f"to_arviz: item {i} is a {type(fit).__name__}, not a vibench.Fit")
        if not _same_model(fits[0].model, fit.model):
            raise ValueError(
                f"to_arviz exports fits of one model as chains; fit {i} is of {fit.model!r}, fit 0 of {fits[0].model!r}"
            )
    return fits


def _same_model(a, b) -> bool:
    if a is b:
        return True
    if (a.name, a.sites, a.dim) != (b.name, b.sites, b.dim) or a.numpyro_model is not b.numpyro_model:
        return False
    leaves_a, tree_a = jax.tree.flatten((a.model_args, a.model_kwargs))
    leaves_b, tree_b = jax.tree.flatten((b.model_args, b.model_kwargs))
    return tree_a == tree_b and all(
        np.shape(x) == np.shape(y) and np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(leaves_a, leaves_b)
    )


def _warn(message: str) -> None:
    """A UserWarning attributed to the first caller outside vibench."""
    frame, level = inspect.currentframe(), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, stacklevel=level)


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _check_no_point(fits, what) -> None:
    for fit in fits:
        if fit.guide.point:
            raise ValueError(
                f"{what} needs the guide's density, and guide {fit.guide.name!r} is a point (a MAP fit) with none"
            )
