"""Fits set against reference draws: compare, scalar_draws and plot_compare (vibench/reference.py)."""

import jax
import matplotlib
import numpy as np
import pytest
import xarray as xr
from matplotlib.figure import Figure

import vibench as vb
from vibench import arviz_compat

from oracles import fit_at, gaussian, whitened

matplotlib.use("Agg")


def test_compare_against_a_reference_with_known_moments():
    rng = np.random.default_rng(0)

    def exact(mean, sd, n):
        # Draws with exactly this sample mean and sd (ddof=1).
        z = rng.standard_normal((n,) + np.shape(mean))
        z = (z - z.mean(0)) / z.std(0, ddof=1)
        return mean + sd * z

    approx = {"a": exact(1.0, 1.0, 1000), "b": exact(np.array([0.0, 2.0]), np.array([0.5, 3.0]), 1000)}
    reference = arviz_compat.from_dict({"posterior": {
        "a": exact(1.5, 2.0, 2000).reshape(2, 1000),
        "b": exact(np.array([0.0, 1.0]), np.array([1.0, 3.0]), 2000).reshape(2, 1000, 2),
        "c": np.zeros((2, 1000)),
    }})
    table = vb.diagnostics.compare(approx, reference)
    assert list(table.index) == ["a", "b[0]", "b[1]"]
    np.testing.assert_allclose(table["std_mean_error"], [-0.25, 0.0, 1 / 3], atol=1e-9)
    np.testing.assert_allclose(table["sd_ratio"], [0.5, 0.5, 1.0], atol=1e-9)
    np.testing.assert_allclose(table["ref_mean"], [1.5, 0.0, 1.0], atol=1e-9)

    # A fit against draws from its own target: errors within Monte Carlo noise.
    cov, mean = np.diag([1.0, 4.0]), [1.0, -1.0]
    fit = fit_at(gaussian(cov, mean), *whitened(mean, [1.0, 1.0]))
    draws = {"x": rng.multivariate_normal(mean, cov, 20_000)}
    table = vb.diagnostics.compare(fit, draws, num_draws=20_000, key=jax.random.key(0))
    np.testing.assert_allclose(table["std_mean_error"], 0.0, atol=0.04)
    np.testing.assert_allclose(table["sd_ratio"], [1.0, 0.5], rtol=0.03)
    with pytest.raises(ValueError, match="share no variable"):
        vb.diagnostics.compare(fit, {"y": np.zeros(10)})
    with pytest.raises(ValueError, match="expected"):
        vb.diagnostics.compare(fit, {"x": np.zeros((10, 3))})


def test_scalar_draws_label_every_scalar_parameter():
    draws = {"a": np.arange(6.0), "b": np.arange(24.0).reshape(6, 2, 2)}
    flat = vb.reference.scalar_draws(draws)
    assert list(flat) == ["a", "b[0, 0]", "b[0, 1]", "b[1, 0]", "b[1, 1]"]
    np.testing.assert_array_equal(flat["b[1, 0]"], np.arange(6.0) * 4 + 2)
    idata = arviz_compat.from_dict({"posterior": {"t": np.ones((2, 5, 3))}}, coords={"school": ["x", "y", "z"]},
                                   dims={"t": ["school"]})
    assert list(vb.reference.scalar_draws(idata)) == ["t[x]", "t[y]", "t[z]"]
    assert vb.reference.scalar_draws(idata)["t[y]"].shape == (10,)
    # A DataTree whichever ArviZ is installed (ArviZ 1.x's container, or a netCDF file opened with xarray).
    tree = xr.DataTree.from_dict({"posterior": arviz_compat.group(idata, "posterior")})
    assert list(vb.reference.scalar_draws(tree)) == ["t[x]", "t[y]", "t[z]"]


def test_plot_compare_returns_a_figure_with_both_marginals():
    rng = np.random.default_rng(1)
    approx = {"a": rng.normal(0, 1, 500), "b": rng.normal(0, 1, (500, 3))}
    reference = {"a": rng.normal(0, 2, 500), "b": rng.normal(1, 1, (500, 3))}
    fig = vb.diagnostics.plot_compare(approx, reference, max_panels=3)
    assert isinstance(fig, Figure)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["a", "b[0]", "b[1]"]
    for ax in visible:
        assert [line.get_label() for line in ax.get_lines()] == ["reference", "vi"]
    # The vi curve of "a" is a density of sd 1: its peak is near 1 / sqrt(2 pi).
    grid, density = visible[0].get_lines()[1].get_data()
    assert density.max() == pytest.approx(1 / np.sqrt(2 * np.pi), rel=0.15)
    point = {"a": np.zeros(50)}
    fig = vb.diagnostics.plot_compare(point, reference, var_names="a")
    assert fig.axes[0].get_lines()[1].get_xdata()[0] == 0.0
