"""ArviZ 1.x and ArviZ 0.23 behind one set of functions: the only module that knows both APIs.

ArviZ 1.x (arviz-base, arviz-stats and arviz-plots; Python >= 3.12) keeps a posterior in an
``xarray.DataTree``; ArviZ 0.23, the only one on Python 3.10 and 3.11, in an
``arviz.InferenceData``. The rest of vibench builds, reads and smooths through these functions and
names neither API. ArviZ is imported inside them, so ``import vibench`` does not load it.

Groups are laid out with ArviZ's sample dims ``(chain, draw)`` on both: ArviZ 1.x's ``summary``
refuses a posterior without them (``from_numpyro_svi``'s single ``sample`` dim) unless told its
sample dims, and R-hat needs chains. The one difference is :func:`from_dict`'s, below.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Mapping, Optional

import numpy as np

__all__ = [
    "MAJOR",
    "SAMPLE_DIMS",
    "from_dict",
    "group_names",
    "group",
    "to_netcdf",
    "summary",
    "psislw",
    "kde",
    "loo_approximate_posterior",
]

MAJOR = int(version("arviz").split(".")[0])  # 0: InferenceData; 1: DataTree
SAMPLE_DIMS = ("chain", "draw")
# ArviZ 0.23 computes R-hat from at least two chains of at least four draws, and logs a warning
# from every diagnostic of fewer (az.summary's included); ArviZ 1.x answers NaN without a word.
_MIN_CHAINS, _MIN_DRAWS = 2, 4


def from_dict(groups: Mapping[str, Mapping[str, np.ndarray]], *, dims=None, coords=None, attrs=None, extra=None):
    """The installed ArviZ's container (a DataTree on 1.x, an InferenceData on 0.23) of ``groups``
    ``{group: {name: array}}`` as ArviZ's ``from_dict`` lays them out: arrays ``(chain, draw, *shape)``
    in sample groups and ``(*shape)`` in ``*_data`` groups, ``dims`` ``{name: [dim, ...]}`` naming
    the axes after the sample dims, event dims of ``log_likelihood`` left unnamed, ``attrs``
    ``{group: {key: value}}``. ``extra`` ``{group: xarray.Dataset}`` are added as they are.

    On ArviZ 0.23 a single chain's draws, independent as a guide's are, become two chains of half
    as many, in order (``values.reshape(-1, ...)`` gives them back), so that its diagnostics run
    without a warning; an odd count, or fewer than eight, stays one chain.
    """
    dims, coords, attrs, extra = dict(dims or {}), dict(coords or {}), dict(attrs or {}), dict(extra or {})
    if MAJOR >= 1:
        import xarray as xr
        from arviz_base import from_dict as base_from_dict

        tree = base_from_dict(dict(groups), sample_dims=list(SAMPLE_DIMS), dims=dims, coords=coords, attrs=attrs)
        for name, dataset in extra.items():
            tree[name] = xr.DataTree(dataset)
        return tree
    import arviz as az

    datasets = {
        name: az.dict_to_dataset(
            values if "data" in name else _split_one_chain(values), attrs=attrs.get(name), coords=coords,
            dims=dims, skip_event_dims="log_likelihood" in name, default_dims=[] if "data" in name else None,
        )
        for name, values in groups.items()
    }
    return az.InferenceData(**datasets, **extra)


def _split_one_chain(values: Mapping[str, np.ndarray]) -> dict:
    """``{name: (1, 2n, ...)}`` as ``{name: (2, n, ...)}``; other shapes unchanged."""
    shapes = {np.shape(v)[:2] for v in values.values()}
    if len(shapes) != 1:
        return dict(values)
    chains, draws = shapes.pop()
    if chains != 1 or draws % _MIN_CHAINS or draws // _MIN_CHAINS < _MIN_DRAWS:
        return dict(values)
    return {k: np.reshape(v, (_MIN_CHAINS, draws // _MIN_CHAINS) + np.shape(v)[2:]) for k, v in values.items()}


def group_names(data) -> list:
    """The names of the groups of a DataTree or an InferenceData (``["posterior", ...]``)."""
    import xarray as xr

    if isinstance(data, xr.DataTree):
        return list(data.children)
    groups = getattr(data, "groups", None)
    return list(groups()) if callable(groups) else []


def group(data, name: str):
    """Group ``name`` of a DataTree or an InferenceData as an ``xarray.Dataset``; None if absent."""
    import xarray as xr

    if name not in group_names(data):
        return None
    return data[name].to_dataset() if isinstance(data, xr.DataTree) else data[name]


def to_netcdf(data, path) -> str:
    """Write a DataTree or an InferenceData to netCDF (h5netcdf) at ``path``; returns the path.
    ``xarray.open_datatree`` (and ``az.from_netcdf``, either version) reads it back."""
    data.to_netcdf(str(path), engine="h5netcdf")
    return str(path)


def summary(data, kind: str = "all"):
    """ArviZ's summary table (a pandas DataFrame, one row per scalar parameter) of a container's
    posterior: on 1.x mean, sd, the 89% ETI (``eti89_lb``, ``eti89_ub``) and, unless
    ``kind="stats"``, ESS, R-hat and MCSE; on 0.23 the 94% HDI (``hdi_3%``, ``hdi_97%``) instead."""
    import arviz as az

    return az.summary(data, kind=kind)


def psislw(log_weights) -> tuple:
    """Pareto-smoothed log importance weights ``(n,)``, normalised to log-sum-exp 0, and the
    Pareto k-hat of 1-D log ratios ``log_weights`` ``(n,)`` (float64, finite).

    Tail values all tied give k-hat inf and the weights unsmoothed, as ArviZ 0.23 does (ArviZ 1.x
    raises there). arviz-stats smooths the negated ratios, its LOO's log-likelihood convention.
    """
    log_weights = np.asarray(log_weights, np.float64)
    if MAJOR >= 1:
        from arviz_stats.base import array_stats

        try:
            smoothed, k = array_stats.psislw(-log_weights)
        except ValueError as err:
            if "tail values are the same" not in str(err):
                raise
            return log_weights - np.logaddexp.reduce(log_weights), float("inf")
        return np.asarray(smoothed), float(k)
    import arviz as az

    smoothed, k = az.psislw(log_weights.copy())
    return np.asarray(smoothed), float(k)


def kde(values) -> tuple:
    """ArviZ's kernel density estimate of 1-D ``values`` ``(n,)``: ``(grid (512,), density (512,))``."""
    values = np.asarray(values, np.float64)
    if MAJOR >= 1:
        from arviz_stats.base import array_stats

        grid, density, _ = array_stats.kde(values)
        return np.asarray(grid), np.asarray(density)
    import arviz as az

    grid, density = az.kde(values)
    return np.asarray(grid), np.asarray(density)


def loo_approximate_posterior(data, log_p, log_q, var_name: Optional[str] = None):
    """PSIS-LOO of draws from an approximate posterior q: each draw's LOO weight divides by
    ``p / q``, ``log_p`` and ``log_q`` ``(chain, draw)`` DataArrays of the target's and the guide's
    log densities over the same variables (Magnusson et al. 2019). ArviZ 1.x's
    ``arviz_stats.loo_approximate_posterior``; on 0.23 the same estimate as an ``az.loo`` result.
    Pointwise: ``pareto_k`` ``(n,)`` per observation.
    """
    if MAJOR >= 1:
        from arviz_stats import loo_approximate_posterior as stats_loo

        return stats_loo(data, log_p=log_p, log_q=log_q, pointwise=True, var_name=var_name)
    return _loo_approximate_posterior_023(data, log_p, log_q, var_name)


def _loo_approximate_posterior_023(data, log_p, log_q, var_name):
    """ArviZ 0.23 has no LOO for approximate posteriors: arviz-stats' estimate, on az.psislw."""
    import warnings

    import arviz as az
    import xarray as xr

    log_likelihood = group(data, "log_likelihood")
    if log_likelihood is None or (var_name is None and len(log_likelihood.data_vars) != 1):
        raise TypeError("loo_approximate_posterior needs a log_likelihood group with one variable, or var_name")
    samples = log_likelihood[var_name or next(iter(log_likelihood.data_vars))].stack(__sample__=SAMPLE_DIMS)
    correction = (log_p - log_q).stack(__sample__=SAMPLE_DIMS)
    ratios = -samples + (correction - correction.max())
    core = {"input_core_dims": [["__sample__"]]}
    smoothed, pareto_k = xr.apply_ufunc(psislw, ratios - ratios.max("__sample__"), output_core_dims=[["__sample__"], []],
                                        vectorize=True, **core)
    loo_i = xr.apply_ufunc(np.logaddexp.reduce, smoothed + samples, kwargs={"axis": -1}, **core)
    n_samples, n_data_points = samples.sizes["__sample__"], loo_i.size
    lppd = float(xr.apply_ufunc(np.logaddexp.reduce, samples, kwargs={"axis": -1}, **core).sum()) - n_data_points * np.log(n_samples)
    elpd, good_k = float(loo_i.sum()), min(1 - 1 / np.log10(n_samples), 0.7)
    warn = bool(np.any(pareto_k > good_k))
    if warn:
        warnings.warn(f"Estimated shape parameter of Pareto distribution is greater than {good_k:.2f} for one or more "
                      "samples: the guide is not a reliable proposal for some leave-one-out posteriors")
    return az.ELPDData(
        data=[elpd, float(np.sqrt(n_data_points * np.var(loo_i.values))), lppd - elpd, n_samples, n_data_points, warn,
              loo_i.rename("loo_i"), pareto_k.rename("pareto_shape"), "log", good_k],
        index=["elpd_loo", "se", "p_loo", "n_samples", "n_data_points", "warning", "loo_i", "pareto_k", "scale", "good_k"],
    )
