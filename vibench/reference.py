"""A fit against reference draws (say, long MCMC): a table of moments and an overlay of marginals.

Both sides may be a :class:`vibench.Fit` (``num_draws`` guide draws are taken), an
``xarray.DataTree`` or ``arviz.InferenceData`` (its ``posterior``, chains pooled), an
``xarray.Dataset`` or a dict of draws
``{name: (draws, *shape)}`` or ``{name: (chains, draws, *shape)}``. Variables are matched by name
and by position within their shape, so coordinates need not agree.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from ._checks import as_key
from .arviz_compat import group, kde

__all__ = ["compare", "plot_compare", "scalar_draws", "scalar_labels"]


def compare(approx, reference, var_names: Optional[Sequence[str]] = None, num_draws: int = 4000, key=None):
    """A pandas DataFrame, one row per scalar parameter, of ``mean``, ``sd``, ``ref_mean``,
    ``ref_sd``, ``std_mean_error`` = (mean - ref_mean) / ref_sd and ``sd_ratio`` = sd / ref_sd.

    A standardised mean error near 0 and an sd ratio near 1 mean the fit matches the reference;
    VI with the exclusive KL typically shows sd ratios below 1.
    """
    import pandas as pd

    rows, labels = [], []
    for name, (a, r, label) in _paired(approx, reference, var_names, num_draws, key).items():
        a_mean, a_sd = a.mean(0), a.std(0, ddof=1)
        r_mean, r_sd = r.mean(0), r.std(0, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            sme, ratio = (a_mean - r_mean) / r_sd, a_sd / r_sd
        rows.append(np.stack([a_mean, a_sd, r_mean, r_sd, sme, ratio], -1))
        labels.extend(label)
    columns = ["mean", "sd", "ref_mean", "ref_sd", "std_mean_error", "sd_ratio"]
    return pd.DataFrame(np.concatenate(rows), index=labels, columns=columns)


def plot_compare(approx, reference, var_names: Optional[Sequence[str]] = None, num_draws: int = 4000, key=None,
                 max_panels: int = 16, labels: Sequence[str] = ("vi", "reference"), figsize=None):
    """A matplotlib Figure of marginal densities (ArviZ's KDE), the fit over the reference, one
    panel per scalar parameter (the first ``max_panels``)."""
    from matplotlib.figure import Figure

    if isinstance(max_panels, bool) or not isinstance(max_panels, int) or max_panels < 1:
        raise ValueError(f"max_panels must be an integer >= 1, got {max_panels!r}")
    panels = []
    for a, r, label in _paired(approx, reference, var_names, num_draws, key).values():
        panels.extend(zip(label, a.T, r.T))
    panels = panels[:max_panels]
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=figsize or (3.2 * cols, 2.4 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (label, a, r) in zip(axes, panels):
        for values, name, style in ((r, labels[1], dict(color="0.3", linestyle="--")), (a, labels[0], dict(color="C0"))):
            if np.ptp(values) == 0:  # a point guide: no density to estimate
                ax.axvline(values[0], label=name, **style)
            else:
                grid, density = kde(values)
                ax.plot(grid, density, label=name, **style)
        ax.set_title(label, fontsize="medium")
        ax.set_yticks([])
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    axes[0].legend(fontsize="small")
    return fig


def scalar_draws(source, num_draws: int = 4000, key=None) -> dict:
    """``{label: (S,) float64 draws}``, one entry per scalar parameter (``"theta[3]"``), from a
    :class:`vibench.Fit` (``num_draws`` guide draws), DataTree, InferenceData, Dataset or dict of draws."""
    draws, coords = _draws(source, num_draws, as_key(key), None)
    out = {}
    for name, values in draws.items():
        flat = values.reshape(len(values), -1)
        out.update(zip(scalar_labels(name, values.shape[1:], coords.get(name)), flat.T))
    return out


def _paired(approx, reference, var_names, num_draws, key) -> dict:
    """``{name: (approx (S, p), reference (R, p), labels (p,))}`` with every site flattened."""
    import jax

    # Two fits of one model must not share their noise.
    a_key, r_key = jax.random.split(as_key(key))
    a_draws, a_coords = _draws(approx, num_draws, a_key, None)
    r_draws, _ = _draws(reference, num_draws, r_key, {k: v.shape[1:] for k, v in a_draws.items()})
    common = [k for k in a_draws if k in r_draws]
    if var_names is None:
        if not common:
            raise ValueError(f"the fit ({sorted(a_draws)}) and the reference ({sorted(r_draws)}) share no variable")
        var_names = common
    else:
        var_names = [var_names] if isinstance(var_names, str) else list(var_names)
        missing = [k for k in var_names if k not in common]
        if missing:
            raise ValueError(f"var_names {missing} are not in both the fit ({sorted(a_draws)}) and the reference ({sorted(r_draws)})")
    out = {}
    for name in var_names:
        a, r = a_draws[name], r_draws[name]
        if a.shape[1:] != r.shape[1:]:
            raise ValueError(f"{name!r} has shape {a.shape[1:]} in the fit but {r.shape[1:]} in the reference")
        shape = a.shape[1:]
        out[name] = (a.reshape(len(a), -1), r.reshape(len(r), -1), scalar_labels(name, shape, a_coords.get(name)))
    return out


def _draws(source, num_draws, key, shapes) -> tuple[dict, dict]:
    """``({name: (S, *shape)}, {name: [coordinate values per axis]})`` from any accepted source."""
    import xarray as xr

    from .result import Fit

    if isinstance(source, Fit):
        return {k: np.asarray(v, np.float64) for k, v in source.sample(key, num_draws).items()}, {}
    posterior = None if isinstance(source, (dict, xr.Dataset)) else group(source, "posterior")
    if posterior is not None:
        source = posterior
    if isinstance(source, xr.Dataset):
        draws, coords = {}, {}
        for name, var in source.data_vars.items():
            if var.dims[:2] != ("chain", "draw"):
                continue
            draws[name] = np.asarray(var.values, np.float64).reshape((-1,) + var.shape[2:])
            coords[name] = [np.asarray(var[d].values) for d in var.dims[2:]]
        return draws, coords
    if isinstance(source, dict):
        draws = {}
        for name, value in source.items():
            value = np.asarray(value, np.float64)
            shape = tuple(shapes[name]) if shapes and name in shapes else value.shape[1:]
            lead = value.ndim - len(shape)
            if lead not in (1, 2) or value.shape[lead:] != shape:
                raise ValueError(f"draws of {name!r} have shape {value.shape}; expected (draws, *{shape}) or (chains, draws, *{shape})")
            draws[name] = value.reshape((-1,) + shape)
        return draws, {}
    raise TypeError(
        "expected a vibench.Fit, an xarray.DataTree, arviz.InferenceData or xarray.Dataset with a posterior, or a dict "
        f"of draws, got {type(source).__name__}"
    )


def scalar_labels(name: str, shape: tuple, coords=None) -> list:
    """Labels of a site's scalar elements: ``["theta[0]", ...]`` (by coordinate values when given)."""
    if not shape:
        return [name]
    coords = coords or [np.arange(n) for n in shape]
    return [f"{name}[{', '.join(str(coords[axis][i]) for axis, i in enumerate(index))}]" for index in np.ndindex(*shape)]
