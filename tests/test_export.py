import contextlib
import logging
import warnings

import arviz as az
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
import xarray as xr
from scipy import stats

import vibench as vb
from vibench import arviz_compat
from vibench.diagnostics import importance_draws
from vibench.state import Precond
from vibench.guides import DeltaParams
from vibench.start import Start

from oracles import (
    NORMAL_Y,
    SIGMA,
    LOG_SCALE_Y,
    bimodal,
    correlated,
    draws_of,
    fit_at,
    fullrank_params,
    gaussian,
    gaussian_log_z,
    log_scale_model,
    log_scale_posterior,
    meanfield_params,
    normal_mean_model,
    normal_mean_posterior,
    one_fit_sizes,
    whitened,
)

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def schools_fit():
    model = vb.models.eight_schools()
    config = vb.Config(guide="fullrank", schedule="constant", num_steps=300, chunk_size=300, seed=0)
    return vb.fit(model, config, progress_bar=False)


@pytest.fixture(scope="module")
def normal_fit():
    """The exact posterior of the conjugate Normal-mean model as a full-rank guide (in whitened
    coordinates, as the engine keeps it)."""
    model = vb.Model.from_numpyro(normal_mean_model, y=NORMAL_Y)
    mean, sd = normal_mean_posterior()
    return fit_at(model, *whitened([mean], [[sd]]), guide="fullrank")


def _schema(data):
    groups = {name: arviz_compat.group(data, name) for name in arviz_compat.group_names(data)}
    return {group: {name: (var.dims, var.shape) for name, var in ds.data_vars.items()} for group, ds in groups.items()}


def _loo(data):
    """``(elpd, p, pareto_k (n,))`` of ArviZ's own PSIS-LOO of independent draws (r_eff 1)."""
    if arviz_compat.MAJOR >= 1:
        import arviz_stats as azs

        result = azs.loo(data, pointwise=True, reff=1.0)
        return result.elpd, result.p, result.pareto_k.values
    result = az.loo(data, pointwise=True, reff=1.0)
    return result.elpd_loo, result.p_loo, result.pareto_k.values


def test_the_export_is_the_installed_arvizs_container(schools_fit):
    data = schools_fit.to_arviz(num_draws=10, log_likelihood=False)
    assert isinstance(data, xr.DataTree if arviz_compat.MAJOR >= 1 else az.InferenceData)


def test_schema_of_a_numpyro_model(schools_fit):
    idata = schools_fit.to_arviz(num_draws=100, key=jax.random.key(0))
    per_step = (("chain", "step"), (1, 300))
    per_chain = (("chain",), (1,))
    sizes = one_fit_sizes(100)
    scalar = (("chain", "draw"), sizes)
    school = (("chain", "draw", "school"), (*sizes, 8))
    assert _schema(idata) == {
        "posterior": {"mu": scalar, "tau": scalar, "theta": school, "theta_trans": school},
        "posterior_predictive": {"obs": school},
        "log_likelihood": {"obs": school},
        "sample_stats": {"lp": scalar, "log_q": scalar, "log_weight": scalar},
        "observed_data": {"obs": (("school",), (8,))},
        "constant_data": {"sigma": (("school",), (8,))},
        "vi_trace": {
            "loss": per_step, "elbo": per_step, "grad_norm": per_step, "rejected": per_step,
            "config": per_chain, "start_method": per_chain, "start_message": per_chain, "start_seconds": per_chain,
            "num_steps": per_chain, "wall_time": per_chain, "stop_reason": per_chain, "khat": per_chain,
        },
    }
    np.testing.assert_array_equal(idata.observed_data["obs"], vb.models.EIGHT_SCHOOLS["y"])
    np.testing.assert_array_equal(idata.constant_data["sigma"], vb.models.EIGHT_SCHOOLS["sigma"])
    np.testing.assert_array_equal(idata.vi_trace["elbo"].values[0], schools_fit.trace.elbo)
    # theta is the deterministic mu + tau * theta_trans, draw by draw.
    post = idata.posterior
    np.testing.assert_allclose(post["theta"], post["mu"] + post["tau"] * post["theta_trans"], rtol=1e-5, atol=1e-5)
    # tau is positive: the posterior is in the constrained space.
    assert float(post["tau"].min()) > 0
    assert vb.export.read_configs(idata) == [schools_fit.config]
    assert idata.posterior.attrs["inference_library"] == "vibench"
    # How the fit started: the Laplace stage by default, its time part of the wall time.
    start = schools_fit.start
    assert (str(idata.vi_trace["start_method"].values[0]), str(idata.vi_trace["start_message"].values[0])) == (start.method, start.message)
    assert start.method == "laplace" and 0 < idata.vi_trace["start_seconds"].values[0] == start.seconds < schools_fit.wall_time


def test_draws_and_densities_are_those_of_the_fit(schools_fit):
    # The guide lives in whitened coordinates; the export speaks in the model's flat space.
    key = jax.random.key(9)
    draws = importance_draws(schools_fit, key, 100)
    np.testing.assert_allclose(draws.z, schools_fit.sample_unconstrained(key, 100), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(draws.log_q, schools_fit.log_q(draws.z), rtol=1e-4, atol=1e-4)
    values = schools_fit.sample(key, 100)
    for name in ("mu", "tau", "theta"):
        np.testing.assert_allclose(draws.values[name], values[name], rtol=1e-5, atol=1e-5)
    log_density = jax.vmap(schools_fit.model.log_density)(draws.z)
    np.testing.assert_allclose(draws.log_weight, log_density - draws.log_q, rtol=1e-5, atol=1e-4)


def test_same_key_same_export_and_draws_follow_the_guide(schools_fit):
    a = schools_fit.to_arviz(num_draws=100, key=jax.random.key(5))
    b = schools_fit.to_arviz(num_draws=100, key=jax.random.key(5))
    for group in arviz_compat.group_names(a):
        for name in a[group].data_vars:
            np.testing.assert_array_equal(a[group][name].values, b[group][name].values)
    assert not np.array_equal(a.posterior["mu"], schools_fit.to_arviz(num_draws=100, key=jax.random.key(6)).posterior["mu"])
    # The mean log importance weight is the ELBO.
    log_weight = draws_of(a, "sample_stats", "log_weight")
    elbo = schools_fit.elbo(jax.random.key(7), num_particles=1000)
    stderr = log_weight.std() * np.sqrt(1 / 100 + 1 / 1000)
    assert abs(log_weight.mean() - elbo) < 4 * stderr


def test_pointwise_log_likelihood_equals_the_closed_form(normal_fit):
    idata = normal_fit.to_arviz(num_draws=200, key=jax.random.key(1))
    mu = idata.posterior["mu"].values  # (1, 200)
    expected = stats.norm.logpdf(NORMAL_Y, mu[..., None], SIGMA)
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "obs_id")
    np.testing.assert_allclose(idata.log_likelihood["y"].values, expected, rtol=1e-5, atol=1e-5)
    # lp is the log joint: prior plus likelihood, in the model's own parameterisation.
    lp = stats.norm.logpdf(mu, 0.0, 10.0) + expected.sum(-1)
    np.testing.assert_allclose(idata.sample_stats["lp"].values, lp, rtol=1e-5)


def test_posterior_predictive_is_drawn_afresh(normal_fit):
    idata = normal_fit.to_arviz(num_draws=4000, key=jax.random.key(2))
    pp = draws_of(idata, "posterior_predictive", "y")  # (4000, 12)
    mean, sd = normal_mean_posterior()
    # y_new ~ N(mu, SIGMA), mu ~ N(mean, sd): mean `mean`, variance SIGMA^2 + sd^2, for each i.
    assert not np.any(pp == NORMAL_Y)
    np.testing.assert_allclose(pp.mean(), mean, atol=4 * np.sqrt(SIGMA**2 + sd**2) / np.sqrt(4000))
    np.testing.assert_allclose(pp.var(0).mean(), SIGMA**2 + sd**2, rtol=0.03)


@pytest.mark.parametrize("place", ["whitened", "model space"])
def test_sample_stats_of_an_exact_gaussian_guide(place):
    cov, mean = correlated(0.8), [1.0, -2.0]
    if place == "whitened":
        fit = fit_at(gaussian(cov, mean), *whitened(mean, np.linalg.cholesky(cov)), guide="fullrank")
    else:
        fit = fit_at(gaussian(cov, mean), fullrank_params(cov, mean), guide="fullrank")
    idata = fit.to_arviz(num_draws=500, key=jax.random.key(3), log_likelihood=False)
    x = draws_of(idata, "posterior", "x")
    np.testing.assert_allclose(draws_of(idata, "sample_stats", "log_q"), stats.multivariate_normal(mean, cov).logpdf(x), rtol=1e-4)
    # q equals the normalised target: every log weight is log Z.
    np.testing.assert_allclose(draws_of(idata, "sample_stats", "log_weight"), gaussian_log_z(cov), atol=2e-4)
    assert idata.vi_trace["khat"].values[0] == -np.inf


def test_arviz_functions_run_on_the_export(normal_fit):
    idata = normal_fit.to_arviz(num_draws=2000, key=jax.random.key(4))
    elpd, p_loo, pareto_k = _loo(idata)
    # p_waic is the sum over i of Var[log N(y_i | mu, SIGMA)] with mu ~ N(m, s^2), in closed form:
    # (4 (y_i - m)^2 s^2 + 2 s^4) / (4 SIGMA^4); p_loo is close to it.
    m, s = normal_mean_posterior()
    p_waic = np.sum(4 * (NORMAL_Y - m) ** 2 * s**2 + 2 * s**4) / (4 * SIGMA**4)
    np.testing.assert_allclose(p_loo, p_waic, rtol=0.1)
    assert np.all(pareto_k < 0.5)
    lppd = np.sum(np.log(np.mean(np.exp(draws_of(idata, "log_likelihood", "y")), 0)))
    np.testing.assert_allclose(elpd, lppd - p_loo, rtol=1e-6)
    table = az.summary(idata)
    mean, sd = normal_mean_posterior()
    assert abs(table.loc["mu", "mean"] - mean) < 4 * sd / np.sqrt(2000)
    assert table.loc["mu", "ess_bulk"] > 1500  # independent draws
    if arviz_compat.MAJOR >= 1:
        import arviz_plots as azp

        plots = azp.plot_dist(idata, backend="matplotlib")
        assert plots.viz["title"]["mu"].item().get_text() == "mu"
        plots = azp.plot_forest(idata, backend="matplotlib")
        assert list(plots.viz["plot"]["column"].values) == ["labels", "forest"]
    else:
        np.testing.assert_allclose(az.waic(idata).p_waic, p_waic, rtol=0.1)
        axes = az.plot_density(idata)  # plot_posterior, on matplotlib >= 3.11, warns of its removal in 3.13
        assert np.atleast_1d(axes).ravel()[0].get_title() == "mu"
        axes = az.plot_forest(idata)
        assert len(np.atleast_1d(axes)) == 1
    matplotlib.pyplot.close("all")


@contextlib.contextmanager
def _no_warning():
    """Fails on any warning, and on any record ArviZ logs at WARNING (ArviZ 0.23 logs its
    'Shape validation failed' instead of warning)."""
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    loggers = [logging.getLogger(name) for name in ("arviz", "arviz_base", "arviz_stats", "arviz_plots")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    assert not records, [record.getMessage() for record in records]


def test_arviz_reads_the_export_without_a_warning(normal_fit, tmp_path):
    data = normal_fit.to_arviz(num_draws=2000, key=jax.random.key(4))
    with _no_warning():
        table = az.summary(data)
        _loo(data)
        vb.export.loo_approximate_posterior(data)
        if arviz_compat.MAJOR >= 1:
            import arviz_plots as azp

            azp.plot_dist(data, backend="matplotlib")
        else:
            az.plot_density(data)
        back = xr.open_datatree(arviz_compat.to_netcdf(data, tmp_path / "fit.nc"))
        assert vb.export.read_configs(back) == [normal_fit.config]
    assert np.isfinite(table.loc["mu", "ess_bulk"])
    matplotlib.pyplot.close("all")


def test_loo_of_an_exact_guide_needs_no_correction():
    model = vb.Model.from_numpyro(log_scale_model, y=LOG_SCALE_Y)
    mean, sd = log_scale_posterior()
    fit = fit_at(model, *whitened([mean], [sd]), guide="meanfield")
    data = fit.to_arviz(num_draws=4000, key=jax.random.key(10), posterior_predictive=False)
    corrected = vb.export.loo_approximate_posterior(data)
    elpd, p_loo, pareto_k = _loo(data)
    # q is the posterior over log s: p / q is constant, so the corrected LOO is plain PSIS-LOO.
    corrected_elpd = corrected.elpd if arviz_compat.MAJOR >= 1 else corrected.elpd_loo
    np.testing.assert_allclose(corrected_elpd, elpd, rtol=1e-4)
    # lp is the density of s, not of log s: against q's variable it is off by the Jacobian s.
    stats_group = arviz_compat.group(data, "sample_stats")
    wrong = arviz_compat.loo_approximate_posterior(data, stats_group["lp"], stats_group["log_q"])
    wrong_elpd = wrong.elpd if arviz_compat.MAJOR >= 1 else wrong.elpd_loo
    assert abs(wrong_elpd - elpd) > 0.05
    point = fit_at(model, DeltaParams(jnp.zeros(1)), guide="delta")
    with pytest.raises(ValueError, match="point guide"):
        vb.export.loo_approximate_posterior(point.to_arviz(num_draws=10))


def test_netcdf_round_trip_keeps_every_group(schools_fit, tmp_path):
    idata = schools_fit.to_arviz(num_draws=100, key=jax.random.key(8))
    path = arviz_compat.to_netcdf(idata, tmp_path / "fit.nc")
    back = az.from_netcdf(path)
    assert type(back) is type(idata)
    assert arviz_compat.group_names(back) == arviz_compat.group_names(idata)
    for group in arviz_compat.group_names(idata):
        assert set(back[group].data_vars) == set(idata[group].data_vars)
        for name, var in idata[group].data_vars.items():
            assert back[group][name].dims == var.dims
            np.testing.assert_array_equal(back[group][name].values, var.values)
    assert back.vi_trace["rejected"].dtype == bool
    assert vb.export.read_configs(back) == [schools_fit.config]
    assert str(back.vi_trace["stop_reason"].values[0]) == "completed"
    assert str(back.vi_trace["start_method"].values[0]) == schools_fit.start.method
    assert back.vi_trace["start_seconds"].values[0] == pytest.approx(schools_fit.start.seconds)
    assert back.vi_trace["wall_time"].values[0] == pytest.approx(schools_fit.wall_time)


def test_the_starting_stage_is_kept_per_chain(tmp_path):
    model = gaussian(np.eye(2))
    params = meanfield_params(np.zeros(2), np.ones(2))
    precond = Precond(jnp.zeros(2), jnp.ones(2), jnp.float32(0.0))
    message = "no MAP: BFGS left the region where the log density is finite; started from the model's initial point"
    fell_back = fit_at(model, params, start=Start("prior", precond, 0.1, message, 0.25), init="laplace")
    without = fit_at(model, params, init="prior")  # made by hand: no starting stage recorded
    idata = vb.to_arviz([fell_back, without], num_draws=10, log_likelihood=False)
    back = az.from_netcdf(arviz_compat.to_netcdf(idata, tmp_path / "starts.nc"))
    for data in (idata, back):
        assert [str(m) for m in data.vi_trace["start_method"].values] == ["prior", ""]
        assert [str(m) for m in data.vi_trace["start_message"].values] == [message, ""]
        np.testing.assert_array_equal(data.vi_trace["start_seconds"].values, [0.25, np.nan])
        assert [c.init for c in vb.export.read_configs(data)] == ["laplace", "prior"]


def test_user_dims_and_coords(schools_fit):
    names = ["Choate", "Deerfield", "Phillips Andover", "Phillips Exeter", "Hotchkiss", "Lawrenceville", "St. Paul's", "Mt. Hermon"]
    idata = schools_fit.to_arviz(num_draws=100, key=jax.random.key(0), coords={"school": names}, dims={"theta": ["name"]})
    assert list(idata.posterior["theta_trans"].coords["school"].values) == names
    assert idata.posterior["theta"].dims == ("chain", "draw", "name")
    assert list(idata.observed_data["obs"].coords["school"].values) == names


def test_several_fits_export_as_chains_and_rhat_flags_two_modes():
    model = bimodal()
    config = vb.Config(guide="meanfield", schedule="constant", num_steps=600, chunk_size=600, learning_rate=5e-2)
    left = vb.fit(model, config, init_values={"x": -3.0}, progress_bar=False)
    right = vb.fit(model, config, init_values={"x": 3.0}, progress_bar=False)
    left_again = vb.fit(model, config.replace(seed=1), init_values={"x": -3.5}, progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a plain log density: no log-likelihood, said in a warning
        two_modes = vb.to_arviz([left, right], num_draws=500, key=jax.random.key(0))
        one_mode = vb.to_arviz([left, left_again], num_draws=500, key=jax.random.key(0))
    assert two_modes.posterior["x"].shape == (2, 500)
    np.testing.assert_allclose(two_modes.posterior["x"].mean("draw"), [-4.0, 4.0], atol=0.2)
    # Rank-normalised R-hat of two chains with no overlap saturates near 1.8; ArviZ flags > 1.01.
    assert float(az.rhat(two_modes)["x"]) > 1.5
    assert float(az.rhat(one_mode)["x"]) < 1.01
    assert two_modes.vi_trace["elbo"].shape == (2, 600)
    assert [c.seed for c in vb.export.read_configs(one_mode)] == [0, 1]


def test_fits_of_different_guide_families_export_as_chains():
    cov, mean = np.diag([1.0, 4.0]), [1.0, -1.0]
    model = gaussian(cov, mean)
    meanfield = fit_at(model, *whitened(mean, [1.0, 2.0]), guide="meanfield")
    fullrank = fit_at(model, *whitened(mean, np.linalg.cholesky(cov)), guide="fullrank")
    point = fit_at(model, DeltaParams(jnp.asarray(mean, jnp.float32)), guide="delta")  # at the mode
    idata = vb.to_arviz([meanfield, fullrank], num_draws=4000, key=jax.random.key(2), log_likelihood=False)
    assert [c.guide for c in vb.export.read_configs(idata)] == ["meanfield", "fullrank"]
    # Both are the exact posterior: the chains agree.
    assert float(az.rhat(idata)["x"].max()) < 1.01
    np.testing.assert_allclose(idata.posterior["x"].std(("chain", "draw")), [1.0, 2.0], rtol=0.03)
    with_point = vb.to_arviz([fullrank, point], num_draws=100, log_likelihood=False)
    np.testing.assert_array_equal(np.isnan(with_point.vi_trace["khat"].values), [False, True])
    np.testing.assert_array_equal(with_point.posterior["x"].values[1], np.broadcast_to(mean, (100, 2)))


def test_fits_of_different_lengths_pad_the_trace():
    model = gaussian(np.eye(2))
    short = vb.fit(model, schedule="constant", num_steps=100, chunk_size=100, progress_bar=False)
    longer = vb.fit(model, init=short, num_steps=100, chunk_size=100, progress_bar=False)
    idata = vb.to_arviz([short, longer], num_draws=20, log_likelihood=False)
    assert list(idata.vi_trace["num_steps"].values) == [100, 200]
    elbo = idata.vi_trace["elbo"].values
    np.testing.assert_array_equal(elbo[0, :100], short.trace.elbo)
    assert np.all(np.isnan(elbo[0, 100:])) and not np.any(idata.vi_trace["rejected"].values[0, 100:])
    np.testing.assert_array_equal(elbo[1], longer.trace.elbo)


def test_a_plain_log_density_exports_without_log_likelihood_and_says_so():
    fit = fit_at(gaussian(np.eye(3)), meanfield_params(np.zeros(3), np.ones(3)))
    with pytest.warns(UserWarning, match="plain log density.*no log_likelihood"):
        idata = fit.to_arviz(num_draws=20)
    assert set(arviz_compat.group_names(idata)) == {"posterior", "sample_stats", "vi_trace"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "log_likelihood" not in arviz_compat.group_names(fit.to_arviz(num_draws=20, log_likelihood=False))

    # A pointwise log-likelihood given as a function of one draw's values.
    y = np.array([0.5, -1.0, 2.0], np.float32)

    def log_likelihood(values):
        return {"y": jax.scipy.stats.norm.logpdf(y, values["x"], 1.0)}

    idata = fit.to_arviz(num_draws=20, key=jax.random.key(1), log_likelihood=log_likelihood)
    x = idata.posterior["x"].values
    np.testing.assert_allclose(idata.log_likelihood["y"].values, stats.norm.logpdf(y, x, 1.0), rtol=1e-5)
    with pytest.raises(TypeError, match="non-empty dict"):
        fit.to_arviz(num_draws=20, log_likelihood=lambda values: values["x"])


def test_point_guide_exports_its_point():
    model = vb.models.eight_schools()
    # The point in the model's flat space is precond.to_z(loc): (mu, log tau, ...) = 1 + 2 * loc.
    precond = Precond(jnp.ones(10), jnp.full(10, 2.0), jnp.float32(10 * np.log(2.0)))
    fit = fit_at(model, DeltaParams(jnp.arange(10, dtype=jnp.float32) / 10), precond, guide="delta")
    idata = fit.to_arviz(num_draws=5, key=jax.random.key(0))
    assert np.all(idata.posterior["mu"].values == 1.0)
    np.testing.assert_allclose(idata.posterior["tau"].values, np.exp(1.2), rtol=1e-6)
    assert np.all(np.isnan(idata.sample_stats["log_q"])) and np.all(np.isfinite(idata.sample_stats["lp"]))
    assert np.isnan(idata.vi_trace["khat"].values[0])
    with pytest.raises(ValueError, match="point"):
        fit.to_arviz(num_draws=5, psis_reweight=True)


def test_bad_input_gets_a_clear_error(schools_fit):
    with pytest.raises(ValueError, match="num_draws must be an integer >= 1, got 0"):
        schools_fit.to_arviz(num_draws=0)
    centered = vb.models.eight_schools(centered=True)
    other = fit_at(centered, DeltaParams(jnp.zeros(centered.dim)), guide="delta")
    with pytest.raises(ValueError, match="fits of one model"):
        vb.to_arviz([schools_fit, other])
    with pytest.raises(TypeError, match="non-empty list"):
        vb.to_arviz([])
    with pytest.raises(TypeError, match="item 1"):
        vb.to_arviz([schools_fit, "fit"])
    with pytest.raises(TypeError, match="log_likelihood"):
        schools_fit.to_arviz(log_likelihood="yes")
    with pytest.raises(TypeError, match="JAX random key"):
        schools_fit.to_arviz(key=0)
    with pytest.raises(ValueError, match="not exported by vibench"):
        vb.export.read_configs(arviz_compat.from_dict({"posterior": {"a": np.zeros((1, 3))}}))
