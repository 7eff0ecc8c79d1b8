"""The Workbench driven through its widgets, without a browser: buttons are clicked and values set
as a person would, and the Fit, the traces and the plots are checked."""

import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import vibench as vb
from vibench import arviz_compat
from vibench.engine import trace_count
from vibench.widgets.views import forest_figure

from oracles import one_fit_sizes
from oracles import workbench_config as _config


def _until(predicate, timeout=60.0):
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for the Workbench")
        time.sleep(0.01)


def _paused_at(wb):
    _until(lambda: wb.runner.status.phase == "paused")
    return wb.runner.status.step


def _run_then_pause(wb, at=1000):
    """Run, pause once ``at`` steps are done (the program is compiled by then); the paused step."""
    wb.run()
    _until(lambda: wb.runner.status.step >= at)
    wb.pause()
    return _paused_at(wb)


def test_not_a_model_is_refused(schools):
    with pytest.raises(TypeError, match="vibench.Model.*Model.from_numpyro"):
        vb.Workbench(vb.models.eight_schools_noncentered_model)
    with pytest.raises(TypeError, match="config must be a vibench.Config"):
        vb.Workbench(schools, config={"guide": "meanfield"})
    with pytest.raises(ValueError, match="refresh_hz"):
        vb.Workbench(schools, refresh_hz=0)


def test_run_click_trains_and_draws(schools):
    wb = vb.Workbench(schools, _config(num_steps=3000))
    assert wb.fit is None
    wb.run_button.click()
    assert wb.wait(120)
    fit = wb.fit
    assert fit.num_steps == 3000 and fit.stop_reason == "completed"
    assert wb.trace_view.data["steps"] == 3000
    assert np.isfinite(wb.trace_view.data["elbo"])
    assert wb.trace_view.renders >= 2 and len(wb.trace_view.image.value) > 1000  # a PNG was drawn
    assert "finished" in wb.status.value and wb.step_label.value == "3000"
    # The posterior tab draws the guide's marginals: eight schools' mu is near 4.4 with sd ~3.3.
    wb.tabs.selected_index = 1
    wb.refresh(force=True)
    mean, sd = wb.marginals_view.data["mu"]
    assert abs(mean - 4.4) < 1.5 and 1.5 < sd < 5.0
    assert wb.pair_view.data["x"] == "mu"
    wb.close()


@pytest.mark.slow
def test_pause_and_resume_continue_exactly(schools):
    config = _config(num_steps=300_000)
    headless = vb.fit(schools, config, progress_bar=False)
    wb = vb.Workbench(schools, config)
    wb.run_button.click()
    _until(lambda: wb.runner.status.step >= 1000)
    wb.pause_button.click()  # pauses after the current chunk
    step = _paused_at(wb)
    assert 0 < step < config.num_steps
    wb.refresh()
    assert wb.pause_button.description == "Resume" and "paused" in wb.status.value
    time.sleep(0.3)
    assert wb.runner.status.step == step  # frozen while paused
    assert wb.fit.num_steps == step and int(wb.fit.state.step) == step
    wb.pause_button.click()  # now reads Resume
    assert wb.wait(120)
    # Pausing loses nothing: the same trace, step for step, as one uninterrupted fit.
    np.testing.assert_array_equal(wb.fit.trace.elbo, headless.trace.elbo)
    np.testing.assert_allclose(wb.fit.mean()["mu"], headless.mean()["mu"], rtol=1e-6)
    wb.close()


@pytest.mark.slow
def test_learning_rate_change_mid_run_takes_effect_without_recompiling(schools):
    config = _config(num_steps=400_000)
    wb = vb.Workbench(schools, config)
    step = _run_then_pause(wb)
    compiled = trace_count()
    wb.controls.learning_rate.value = 1e-3
    assert wb.config.learning_rate == pytest.approx(1e-3)
    wb.controls.clip_norm.value = 5.0
    wb.controls.stl.value = False
    wb.resume()
    assert wb.wait(120)
    assert trace_count() == compiled  # numbers are runtime values: nothing traced again
    fit = wb.fit
    assert float(fit.state.hyper.learning_rate) == pytest.approx(1e-3)
    assert float(fit.state.hyper.clip_norm) == pytest.approx(5.0)
    assert not bool(fit.state.hyper.stl)
    assert fit.num_steps == config.num_steps and fit.config.learning_rate == pytest.approx(1e-3)
    # The run went on from where it paused: its first part is the old learning rate's trace.
    start = vb.fit(schools, config.replace(num_steps=step), progress_bar=False)
    np.testing.assert_array_equal(fit.trace.elbo[:step], start.trace.elbo)
    wb.close()


@pytest.mark.slow
def test_particle_count_change_keeps_the_guide(schools):
    wb = vb.Workbench(schools, _config(num_steps=400_000))
    step = _run_then_pause(wb)
    params = jax.tree.map(np.asarray, wb.fit.params)
    wb.controls.num_particles.value = 4
    assert "num_particles changed" in wb.runner.status.message
    assert wb.runner.config.num_particles == 4
    wb.pause()  # still paused: look at the state the new estimator starts from
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, wb.fit.params), params)
    wb.resume()
    assert wb.wait(120)
    assert wb.fit.config.num_particles == 4 and wb.fit.num_steps == 400_000 and step > 0
    wb.close()


def test_stop_keeps_the_last_good_state_and_resumes(schools):
    config = _config(num_steps=2_000_000)
    wb = vb.Workbench(schools, config)
    wb.run()
    _until(lambda: wb.runner.status.step >= 2000)
    wb.stop_button.click()
    assert wb.wait(60)
    fit = wb.fit
    assert fit.stop_reason == "stopped" and 2000 <= fit.num_steps < config.num_steps
    assert int(fit.state.step) == fit.num_steps
    assert "stopped" in wb.status.value
    more = vb.fit(schools, config.replace(num_steps=500), init=fit, progress_bar=False)
    assert more.num_steps == fit.num_steps + 500
    # It continues exactly: the same trace as one headless run of that many steps.
    unbroken = vb.fit(schools, config.replace(num_steps=more.num_steps), progress_bar=False)
    np.testing.assert_array_equal(more.trace.elbo, unbroken.trace.elbo)
    assert len(wb.runs) == 1 and wb.runs[0].fit.stop_reason == "stopped"
    wb.close()


def test_guide_change_restarts_and_says_so(schools):
    wb = vb.Workbench(schools, _config(num_steps=2_000_000))
    wb.run()
    _until(lambda: wb.runner.status.step >= 1000)
    wb.controls.guide.value = "fullrank"
    assert "restarting with a fresh fit" in wb.runner.status.message
    _until(lambda: wb.fit is not None and wb.fit.config.guide == "fullrank" and wb.runner.status.step > 0)
    wb.stop()
    assert wb.wait(60)
    assert [run.fit.config.guide for run in wb.runs] == ["meanfield", "fullrank"]
    assert wb.runs[0].fit.stop_reason == "restarted"
    wb.close()


def test_refused_values_are_put_back_with_a_reason(schools):
    wb = vb.Workbench(schools, _config(objective="renyi", num_particles=4, stl=False))
    wb.controls.stl.value = True  # STL with the Renyi bound is biased: refused
    assert wb.controls.stl.value is False and not wb.config.use_stl
    assert "stl=True with objective" in wb.message.value and "biased" in wb.message.value
    wb.controls.objective.value = "elbo"  # back to each objective's own STL default
    assert wb.config.objective == "elbo" and wb.config.use_stl
    wb.controls.num_particles.value = 1
    wb.controls.objective.value = "forward_kl"  # needs several particles: given 8
    assert wb.config.objective == "forward_kl" and wb.config.num_particles == 8 and not wb.config.use_stl
    wb.controls.objective.value = "elbo"
    wb.controls.guide.value = "delta"  # a MAP fit: one particle, no STL
    assert wb.config.num_particles == 1 and not wb.config.use_stl
    assert wb.controls.num_particles.disabled
    wb.close()


@pytest.mark.slow
def test_every_family_can_be_picked_and_the_controls_follow_what_it_serves(schools):
    wb = vb.Workbench(schools, _config(objective="forward_kl", num_particles=8, num_steps=2000))
    wb.controls.guide.value = "bnaf"  # no inverse: no forward KL, no STL
    assert wb.config.guide == "bnaf" and wb.config.objective == "elbo" and not wb.config.use_stl
    assert wb.controls.stl.disabled and not wb.controls.objective.disabled
    wb.controls.guide.value = "laplace"  # fitted at a mode: ELBO only, one particle
    assert wb.config.num_particles == 1 and wb.controls.objective.disabled and wb.controls.num_particles.disabled
    wb.controls.guide.value = "pathfinder"  # fitted by its start: particles only size the ELBO estimate
    assert wb.controls.objective.disabled and not wb.controls.num_particles.disabled
    wb.controls.guide.value = "iaf"
    assert wb.config.guide == "iaf" and not wb.controls.objective.disabled and wb.controls.stl.disabled
    wb.run()
    assert wb.wait(120)
    assert wb.fit.config.guide == "iaf" and wb.fit.num_steps == wb.config.num_steps
    wb.close()


def test_compare_ranks_runs_by_a_precise_elbo(schools):
    wb = vb.Workbench(schools, _config(num_steps=3000, guide="fullrank"))
    wb.run()
    assert wb.wait(120)
    wb.controls.learning_rate.value = 1e-5  # far too small: this run stays near its start
    wb.run()
    assert wb.wait(120)
    assert len(wb.runs) == 2
    good, poor = wb.runs
    assert good.elbo > poor.elbo
    assert good.khat is not None and np.isfinite(good.khat)
    wb.tabs.selected_index = 2
    wb.refresh(force=True)
    table = wb.compare_table.value
    # Ranked by ELBO: the first row is run #1 although it ran first and #2 ran last.
    assert table.index("<td>1</td><td>#1</td>") < table.index("<td>2</td><td>#2</td>")
    assert "lr=1e-05" in table and wb.compare_view.data["runs"] == 2
    wb.close()


def test_a_failing_view_stops_the_run_and_keeps_its_state(schools):
    wb = vb.Workbench(schools, _config(num_steps=2_000_000))

    def broken(trace):
        raise RuntimeError("the plot broke")

    wb.trace_view.update = broken
    wb.run()
    assert wb.wait(60)
    assert "error in a view" in wb.message.value and "the plot broke" in wb.message.value
    fit = wb.fit
    assert fit.stop_reason == "stopped" and 0 < fit.num_steps < 2_000_000
    assert "the plot broke" in wb.runner.status.message
    wb.close()


def test_non_finite_steps_are_skipped_and_counted_in_the_status():
    model = vb.Model.from_log_density(
        lambda v: jnp.where(v["x"] > 3.0, jnp.nan, dist.Normal(2.0, 1.0).log_prob(v["x"])), {"x": dist.constraints.real})
    wb = vb.Workbench(model, _config(num_steps=2000, chunk_size=250))
    wb.run()
    assert wb.wait(120)
    fit = wb.fit
    assert fit.stop_reason == "completed" and 0 < fit.num_rejected < 2000
    assert f"{fit.num_rejected:,} non-finite steps skipped" in wb.status.value
    wb.close()


def test_export_and_diagnose_buttons(schools, tmp_path):
    wb = vb.Workbench(schools, _config(num_steps=3000, guide="fullrank"))
    with pytest.raises(ValueError, match="run the Workbench first"):
        wb.export()
    wb.run()
    assert wb.wait(120)
    path = tmp_path / "schools.nc"
    wb.export_path.value = str(path)
    wb.export_draws.value = 200
    wb.export_button.click()
    assert "exported" in wb.export_status.value, wb.export_status.value
    assert path.exists()
    groups = arviz_compat.group_names(wb.idata)
    assert set(groups) >= {"posterior", "log_likelihood", "sample_stats", "vi_trace"}
    assert wb.export_status.value.endswith(", ".join(groups))
    assert (wb.idata.posterior.sizes["chain"], wb.idata.posterior.sizes["draw"]) == one_fit_sizes(200)
    assert vb.export.read_configs(wb.idata) == [wb.fit.config]
    wb.diagnose_button.click()
    assert "PSIS" in wb.diagnosis.value and "k-hat" in wb.diagnosis.value
    assert len(wb.diagnostics_plot.value) > 1000  # the forest plot of the current fit
    wb.close()


def test_forest_figure_draws_each_parameter_without_a_warning(schools):
    fit = vb.fit(schools, _config(num_steps=300, guide="meanfield"), progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ArviZ 0.23's forest plot warned of matplotlib 3.13
        fig = forest_figure(fit, jax.random.key(0), num_draws=400)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["mu", "tau"] + [f"theta[{i}]" for i in range(8)] + [f"theta_trans[{i}]" for i in range(8)]
    # Drawn top to bottom in that order; each point is the mean of the draws.
    draws = vb.reference.scalar_draws(fit, 400, jax.random.key(0))
    means = ax.lines[0].get_xdata()
    np.testing.assert_allclose(means[:2], [draws["mu"].mean(), draws["tau"].mean()], rtol=1e-6)


def test_reference_is_overlaid_and_compared(schools):
    reference = vb.fit(schools, _config(num_steps=3000, guide="fullrank"), progress_bar=False).sample(jax.random.key(0), 3000)
    wb = vb.Workbench(schools, _config(num_steps=3000, guide="fullrank"), reference=reference)
    wb.run()
    assert wb.wait(120)
    wb.diagnose()
    assert "Against the reference" in wb.diagnosis.value and "std_mean_error" in wb.diagnosis.value
    assert "theta_trans[7]" in wb.diagnosis.value  # vector sites compared element by element
    assert len(wb.reference_plot.value) > 1000
    wb.tabs.selected_index = 1
    wb.refresh(force=True)
    assert set(wb.marginals_view.data) == {"mu", "tau", "theta[0]", "theta[1]"}
    with pytest.raises(TypeError, match="expected a vibench.Fit"):
        vb.Workbench(schools, reference=[1, 2, 3])
    wb.close()


def test_start_stage_is_shown_and_switchable(schools):
    wb = vb.Workbench(vb.models.eight_schools(centered=True), _config(num_steps=1000, init="laplace"))
    wb.run()
    assert wb.wait(120)
    # The centred eight schools is a funnel with no MAP: the start falls back and says so.
    assert wb.fit.start.method == "prior" and "no MAP" in wb.fit.start.message
    assert "start: prior" in wb.status.value and "no MAP" in wb.status.value
    wb.controls.init.value = "prior"
    assert "init changed" in wb.runner.status.message
    wb.close()


def _subsampled_logistic(X, y=None, batch_size=None):
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0], subsample_size=batch_size) as index:
        numpyro.sample("y", dist.Bernoulli(logits=X[index] @ beta), obs=None if y is None else y[index])


@pytest.mark.slow
def test_batch_size_control_subsamples(schools):
    X, y = vb.models.logistic_regression_data(2000, 3)
    model = vb.Model.from_numpyro(_subsampled_logistic, X, y, batch_size=500)
    wb = vb.Workbench(model, _config(num_steps=1000))
    assert not wb.controls.batch.disabled and wb.controls.batch.max == 2000 and wb.controls.batch.value == 500
    wb.controls.batch.value = 100
    assert wb.runner.model.batch_size == 100 and "batch_size changed" in wb.runner.status.message
    wb.run()
    assert wb.wait(120)
    assert wb.fit.model.batch_size == 100 and "B=100" in wb.runs[-1].label
    wb.controls.batch.value = 0  # all data
    assert wb.runner.model.batch_size is None
    wb.controls.batch.value = 5000  # more than the data: refused by the widget's bounds
    assert wb.runner.model.batch_size in (None, 2000)
    assert vb.Workbench(schools).controls.batch.disabled  # eight schools declares no data to subsample


def _assert_same_runs(records, fits):
    """Launched runs equal the Fits of a direct ``vb.fit_many`` call, to float rounding."""
    assert len(records) == len(fits)
    for record, fit in zip(records, fits):
        assert record.fit.config == fit.config and record.fit.num_steps == fit.num_steps
        np.testing.assert_allclose(record.fit.trace.elbo, fit.trace.elbo, rtol=1e-5, atol=1e-5)
        for a, b in zip(record.fit.params, fit.params):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_launch_of_seeds_equals_fit_many_and_joins_compare(schools):
    config = _config(num_steps=300)
    wb = vb.Workbench(schools, config)
    wb.run()  # one ordinary run of the same Config: the launch's throughput is set against it
    assert wb.wait(120)
    wb.tabs.selected_index = 2
    wb.restarts.value = 3
    wb.vary.value = "seed"
    wb.launch_button.click()
    # While the launch trains, the single-run commands are refused with a reason, and it goes on.
    assert wb.runner.launching and wb.runner.status.phase == "launching"
    wb.run()
    assert "Run must wait" in wb.message.value and "runs to its end" in wb.message.value
    wb.stop()
    assert "Stop: a launch of restarts runs to its end" in wb.message.value
    assert not wb.launch()
    assert "Launch refused" in wb.message.value and "another launch" in wb.message.value
    wb.refresh()
    assert wb.stop_button.disabled and wb.run_button.disabled and "launching" in wb.status.value
    assert wb.wait(120)
    assert not wb.stop_button.disabled and "launched 3 restarts" in wb.status.value
    ordinary, *launched = wb.runs
    assert wb.fit.config == config and wb.fit is ordinary.fit  # the current fit is left alone
    assert [run.fit.config.seed for run in launched] == [3, 4, 5]
    assert [run.label.split(" | ")[0] for run in launched] == ["seed 3", "seed 4", "seed 5"]
    _assert_same_runs(launched, vb.fit_many(schools, config, seeds=[3, 4, 5], progress_bar=False))
    assert len({float(run.fit.trace.elbo[-1]) for run in launched}) == 3  # different seeds, different runs
    # The first seed is the ordinary run's own: the same run, trained in a batch.
    np.testing.assert_allclose(launched[0].fit.trace.elbo, ordinary.fit.trace.elbo, rtol=1e-5, atol=1e-5)
    assert all(np.isfinite(run.elbo) and run.steps_per_second > 0 for run in launched)
    (launch,) = wb.runner.launches
    assert launch.runs == (1, 2, 3) and launch.num_steps == (300, 300, 300) and launch.wall_time > 0
    # The Compare tab shows all four runs, and the launch's throughput beside the ordinary run's time.
    assert wb.compare_view.data["runs"] == 4
    assert "seed 4 | meanfield" in wb.compare_table.value
    report = wb.launch_report.value
    assert "3 runs (seed 3 ... seed 5)" in report and "steps/s per run" in report
    assert "one ordinary run of this Config (#1)" in report
    wb.close()


def test_launch_of_learning_rates_is_log_spaced_and_equals_fit_many(schools):
    config = _config(num_steps=300, learning_rate=0.01)
    wb = vb.Workbench(schools, config)
    assert wb.launch(num_runs=4, vary="learning_rate")
    assert wb.wait(120)
    rates = [1e-3, 1e-3 * 100 ** (1 / 3), 1e-3 * 100 ** (2 / 3), 1e-1]
    np.testing.assert_allclose([run.fit.config.learning_rate for run in wb.runs], rates, rtol=1e-6)
    np.testing.assert_allclose([float(run.fit.state.hyper.learning_rate) for run in wb.runs], rates, rtol=1e-6)
    assert [run.label.split(" | ")[0] for run in wb.runs] == ["lr 1.0e-03", "lr 4.6e-03", "lr 2.2e-02", "lr 1.0e-01"]
    assert {run.fit.config.seed for run in wb.runs} == {3}  # only the learning rate varies
    _assert_same_runs(wb.runs, vb.fit_many(schools, [run.fit.config for run in wb.runs], progress_bar=False))
    assert wb.fit is None  # a launch does not become the current fit
    wb.tabs.selected_index = 2
    wb.refresh(force=True)
    assert "4 runs (lr 1.0e-03 ... lr 1.0e-01)" in wb.launch_report.value
    assert "ordinary run" not in wb.launch_report.value  # none to compare with
    wb.close()


@pytest.mark.slow
def test_launch_is_refused_with_a_reason(schools):
    X, y = vb.models.logistic_regression_data(500, 3)
    subsampled = vb.Workbench(vb.Model.from_numpyro(_subsampled_logistic, X, y, batch_size=100), _config(num_steps=300))
    assert not subsampled.launch()
    message = subsampled.message.value
    assert "does not run subsampled models" in message and "set the batch size to 0" in message
    assert subsampled.runs == [] and not subsampled.runner.running
    subsampled.close()

    wb = vb.Workbench(schools, _config(num_steps=2_000_000))
    assert not wb.launch(num_runs=1)
    assert "2 to 64 runs" in wb.message.value
    wb.run()
    _until(lambda: wb.runner.status.step >= 500)
    assert not wb.launch()
    assert "a run is going" in wb.message.value
    wb.pause()
    _paused_at(wb)
    assert not wb.launch()  # a paused run is still going
    wb.stop()
    assert wb.wait(60)
    assert len(wb.runs) == 1 and wb.runs[0].fit.stop_reason == "stopped" and wb.runner.launches == []
    wb.close()
