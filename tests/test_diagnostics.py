import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import vibench as vb
from vibench import arviz_compat
from vibench.diagnostics import SHIFT_THRESHOLD, Diagnosis, elbo_convergence, khat_reading, psis, psis_shift
from vibench.guides import DeltaParams
from vibench.start import Start

from oracles import (
    SKEW_MEAN,
    correlated,
    draws_of,
    fit_at,
    gaussian,
    gaussian_log_z,
    skew_normal,
    whitened,
)


def test_khat_reading_and_its_sample_size_threshold():
    assert khat_reading(0.3, 1000).reading == "good"
    assert khat_reading(0.6, 1000).reading == "usable"
    # 1000 draws: the threshold is 1 - 1/3, below 0.7.
    assert khat_reading(0.68, 1000) == (0.68, "unreliable", pytest.approx(2 / 3), 1000)
    assert khat_reading(0.68, 100_000) == (0.68, "usable", 0.7, 100_000)
    assert khat_reading(0.75, 100_000).reading == "unreliable"
    assert khat_reading(0.45, 100).threshold == pytest.approx(0.5)
    assert khat_reading(float("inf"), 4000).reading == "unreliable"
    assert khat_reading(float("-inf"), 4000).reading == "good"


def _gaussian_ratios(scale, dims, n):
    """Log ratios N(z; 0, I) / N(z; 0, scale^2 I) at ``n`` draws of the second: a proposal too
    narrow (scale < 1) has heavy-tailed ratios, one too wide bounded ratios."""
    z = np.random.default_rng(1).normal(size=(n, dims)) * scale
    return -0.5 * np.sum(z**2, 1) * (1 - 1 / scale**2) + dims * np.log(scale)


# k-hat of those ratios by ArviZ 0.23's psislw, recorded. ArviZ 1.x smooths with arviz-stats, whose
# tail length and GPD fit differ in detail: the same weights must read the same within 0.02.
KHAT_ARVIZ_023 = {(1.3, 2, 4000): -0.9536, (0.9, 2, 4000): 0.1268, (0.8, 4, 4000): 0.3975, (0.7, 2, 1000): 0.6453,
                  (0.6, 3, 4000): 0.6075, (0.75, 5, 8000): 0.2305, (0.5, 2, 2000): 0.7536}


@pytest.mark.parametrize("case", sorted(KHAT_ARVIZ_023))
def test_khat_agrees_with_arviz_023_on_the_same_weights(case):
    smoothed, k = psis(_gaussian_ratios(*case))
    assert k == pytest.approx(KHAT_ARVIZ_023[case], abs=0.02)
    assert np.logaddexp.reduce(smoothed) == pytest.approx(0.0, abs=1e-9)


def test_psis_matches_arviz_and_treats_constant_ratios_as_exact():
    log_w = np.random.default_rng(0).standard_normal(2000)
    smoothed, k = psis(log_w)
    expected, expected_k = arviz_compat.psislw(log_w)
    np.testing.assert_allclose(smoothed, expected)
    assert k == pytest.approx(expected_k)
    smoothed, k = psis(np.full(500, 3.0))
    assert k == -np.inf
    np.testing.assert_allclose(np.exp(smoothed), 1 / 500)
    with pytest.raises(ValueError, match="NaN"):
        psis(np.array([0.0, np.nan, 1.0]))


def test_khat_is_small_for_a_fullrank_guide_on_a_gaussian():
    model = gaussian(correlated(0.9))
    fit = vb.fit(model, vb.Config(guide="fullrank", num_particles=4, num_steps=2000, chunk_size=2000), progress_bar=False)
    k = fit.khat(num_draws=4000, key=jax.random.key(1))
    assert k.khat < 0.5 and k.reading == "good" and k.num_draws == 4000


def test_khat_is_large_for_a_meanfield_guide_on_a_correlated_gaussian():
    rho = 0.99
    # The mean-field optimum of KL(q || p): the conditional sd sqrt(1 - rho^2) on each axis.
    scale = np.full(2, np.sqrt(1 - rho**2))
    fit = fit_at(gaussian(correlated(rho)), *whitened(np.zeros(2), scale))
    k = fit.khat(num_draws=4000, key=jax.random.key(2))
    assert k.khat > 0.7 and k.reading == "unreliable"


def test_psis_reweighted_draws_move_a_biased_mean_toward_the_truth():
    # A mass-covering Gaussian, N(0.5, 1.2^2), over a skew-normal (sd 1 on its heavy side): the
    # ratios p/q are bounded (small k-hat) but the mean is off by 0.28.
    fit = fit_at(skew_normal(), *whitened([0.5], [1.2]))
    key = jax.random.key(11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a plain log density: no log-likelihood, said in a warning
        plain = fit.to_arviz(num_draws=4000, key=key)
        reweighted = fit.to_arviz(num_draws=4000, key=key, psis_reweight=True)
    assert plain.vi_trace["khat"].values[0] < 0.5
    assert reweighted.posterior.attrs["psis_reweighted"] == 1
    raw_error = abs(float(plain.posterior["x"].mean()) - SKEW_MEAN)
    reweighted_error = abs(float(reweighted.posterior["x"].mean()) - SKEW_MEAN)
    assert raw_error > 0.1
    assert reweighted_error < 0.35 * raw_error
    # Resampling the same candidates matches their self-normalised PSIS estimate.
    smoothed, _ = psis(draws_of(plain, "sample_stats", "log_weight"))
    weighted_mean = np.sum(np.exp(smoothed) * draws_of(plain, "posterior", "x"))
    assert abs(float(reweighted.posterior["x"].mean()) - weighted_mean) < 0.02


def test_psis_shift_measures_how_far_importance_weights_move_the_mean():
    # Weights from N(0, 1) draws to N(mu, 1): the weighted mean is mu, one sd from the draws' mean.
    x = np.asarray(jax.random.normal(jax.random.key(3), (20_000, 1)), np.float64)
    for mu in (0.0, 0.5):
        smoothed, _ = psis(mu * x[:, 0] - mu**2 / 2)
        assert psis_shift(x, smoothed) == pytest.approx(mu, abs=0.04)


def test_diagnose_flags_a_shifted_guide_that_k_hat_calls_usable():
    """A wide Gaussian half a guide sd off a skew-normal's mean: bounded ratios, so a small k-hat,
    yet a biased mean; the mean shift says so, and nothing is flagged for the exact answer."""
    shifted = fit_at(skew_normal(), *whitened([SKEW_MEAN + 0.6], [1.2]))
    report = shifted.diagnose(num_draws=8000, key=jax.random.key(4))
    assert report.khat.khat < 0.7
    assert report.psis_shift > SHIFT_THRESHOLD and "biased" in repr(report)
    exact = fit_at(gaussian(np.eye(2)), *whitened([0.0, 0.0], [1.0, 1.0]), guide="meanfield")
    report = exact.diagnose(num_draws=8000, key=jax.random.key(4))
    assert report.psis_shift < 0.1 and "biased" not in repr(report)


def test_elbo_convergence_on_traces_with_known_answers():
    n, w = 400, 100
    rejected = np.zeros(n, bool)
    flat = vb.Trace(None, -10.0 + 0.1 * np.random.default_rng(0).standard_normal(n), None, rejected)
    c = elbo_convergence(flat, window=w)
    assert c.converged and abs(c.z_change) < 2 and c.window == w
    # A line of slope 0.01 per step: the last window's mean is w * 0.01 = 1 above the one before.
    line = vb.Trace(None, -100.0 + 0.01 * np.arange(n), None, rejected)
    c = elbo_convergence(line, window=w, rtol=1e-3)
    assert c.change == pytest.approx(1.0) and c.relative_change == pytest.approx(1.0 / abs(-100 + 0.01 * 249.5))
    assert c.elbo == pytest.approx(-100 + 0.01 * 349.5) and not c.converged
    assert elbo_convergence(line, window=w, rtol=0.02).converged
    # Rejected steps are left out: NaN there changes nothing.
    holes = rejected.copy()
    holes[::7] = True
    elbo = np.where(holes, np.nan, 0.01 * np.arange(n))
    c = elbo_convergence(vb.Trace(None, elbo, None, holes), window=w)
    accepted = 0.01 * np.arange(n)[~holes]
    assert c.elbo == pytest.approx(accepted[-w:].mean())
    with pytest.raises(ValueError, match="at least 2 \\* window"):
        elbo_convergence(line, window=300)


def test_diagnose_and_summary():
    model = gaussian(correlated(0.5))
    config = vb.Config(guide="fullrank", schedule="constant", num_steps=1000, chunk_size=500, learning_rate=2e-2)
    fit = vb.fit(model, config, progress_bar=False)
    report = fit.diagnose(num_draws=1000, key=jax.random.key(0))
    assert isinstance(report, Diagnosis)
    assert report.khat.reading == "good" and report.convergence.converged
    # At the optimum the ELBO is the log normaliser of the target.
    assert report.convergence.elbo == pytest.approx(gaussian_log_z(correlated(0.5)), abs=0.01)
    assert (report.num_steps, report.num_rejected, report.stop_reason) == (1000, 0, "completed")
    assert report.wall_time == fit.wall_time
    assert (report.start_method, report.start_message) == ("laplace", "")
    assert 0 < report.start_seconds == fit.start.seconds < fit.wall_time
    text = repr(report)
    assert "k-hat" in text and "good" in text and "0 rejected" in text and "wall time" in text
    assert f"start       laplace ({fit.start.seconds:.2f} s)" in text
    assert report.to_dict()["khat"]["reading"] == "good"

    table = fit.summary(num_draws=1000, key=jax.random.key(0))
    assert isinstance(table, pd.DataFrame)
    # ArviZ 1.x reports the 89% equal-tailed interval, ArviZ 0.23 the 94% HDI.
    interval = ["eti89_lb", "eti89_ub"] if arviz_compat.MAJOR >= 1 else ["hdi_3%", "hdi_97%"]
    assert list(table.index) == ["x[0]", "x[1]"] and list(table.columns) == ["mean", "sd", *interval]
    np.testing.assert_allclose(table["sd"], 1.0, atol=0.1)
    # A standard normal's 89% ETI is +-1.598 and its 94% HDI +-1.881.
    np.testing.assert_allclose(table[interval[1]] - table["mean"], 1.598 if arviz_compat.MAJOR >= 1 else 1.881, rtol=0.15)
    assert isinstance(table.attrs["diagnosis"], Diagnosis) and table.attrs["diagnosis"].start_method == "laplace"
    # The table's diagnosis is the fit's own, from the same draws.
    same = fit.diagnose(num_draws=1000, key=jax.random.key(0))
    assert (table.attrs["diagnosis"].khat, table.attrs["diagnosis"].psis_shift) == (same.khat, same.psis_shift)

    # The default plateau schedule stops once the ELBO no longer moves at its smallest step size.
    converged = vb.fit(model, config.replace(schedule="plateau", num_steps=50_000), progress_bar=False)
    report = converged.diagnose(num_draws=1000, key=jax.random.key(0))
    assert report.stop_reason == "converged" and report.convergence.converged
    assert report.num_steps == converged.num_steps < 50_000 and report.num_steps % 500 == 0
    idata = converged.to_arviz(num_draws=10, log_likelihood=False)
    assert str(idata.vi_trace["stop_reason"].values[0]) == "converged"
    assert idata.vi_trace["elbo"].shape == (1, converged.num_steps)

    point = fit_at(model, DeltaParams(jnp.zeros(2)), guide="delta")
    report = point.diagnose()
    assert report.khat is None and "undefined" in repr(report) and report.convergence is None
    assert report.psis_shift is None
    with pytest.raises(ValueError, match="point.*no density"):
        point.khat()


def test_diagnose_reads_rejected_steps_and_a_start_that_fell_back():
    rejected = np.zeros(400, bool)
    rejected[[10, 11, 250, 399]] = True
    elbo = np.where(rejected, np.nan, -3.0 + 0.01 * np.random.default_rng(0).standard_normal(400))
    trace = vb.Trace(-elbo, elbo, np.where(rejected, np.inf, 1.0), rejected)
    message = "no MAP: BFGS left the region where the log density is finite; started from the model's initial point"
    params, precond = whitened(np.zeros(2), np.ones(2))
    fit = fit_at(gaussian(np.eye(2)), params, precond, trace=trace, start=Start("prior", precond, 0.1, message, 1.5))
    report = vb.diagnostics.diagnose(fit, num_draws=1000, key=jax.random.key(0), window=100)
    assert (report.num_steps, report.num_rejected) == (400, 4)
    # The rejected steps are left out of the windows: the last 100 accepted steps, not the last 100.
    assert report.convergence.elbo == pytest.approx(elbo[~rejected][-100:].mean())
    assert report.convergence.converged
    # q is the normalised target: every importance ratio is the normaliser.
    assert report.khat.khat == -np.inf and report.khat.reading == "good"
    assert (report.start_method, report.start_message, report.start_seconds) == ("prior", message, 1.5)
    text = repr(report)
    assert "400 (4 rejected as not finite), completed" in text and f"prior (1.50 s): {message}" in text
    assert report.to_dict()["start_message"] == message
    made_by_hand = fit_at(fit.model, fit.params, fit.precond)
    report = made_by_hand.diagnose(num_draws=100)
    assert report.start_method is None and "start       not recorded" in repr(report)
