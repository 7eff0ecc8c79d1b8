"""End-to-end fits against exact posteriors and NUTS, and the driver's contract."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.infer import MCMC, NUTS

import vibench as vb
from vibench.engine import trace_count
from vibench.models import EIGHT_SCHOOLS, eight_schools_noncentered_model

from oracles import TWO_MEANS_Y, two_means_model, two_means_posterior

# ---------------------------------------------------------------- conjugate oracles


@pytest.fixture(scope="module")
def normal_model():
    return vb.Model.from_numpyro(two_means_model, TWO_MEANS_Y)


def test_fullrank_recovers_a_correlated_gaussian_posterior(normal_model):
    mean, cov = two_means_posterior()
    fit = vb.fit(normal_model, guide="fullrank", num_particles=8, num_steps=3000, learning_rate=0.02, progress_bar=False)
    draws = np.asarray(fit.sample(jax.random.key(1), 20_000)["theta"])
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_allclose(draws.mean(0), mean, atol=0.05 * sd.min())
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.05 * cov.max())
    assert np.corrcoef(draws.T)[0, 1] == pytest.approx(cov[0, 1] / np.prod(sd), abs=0.03)


@pytest.mark.parametrize(
    "settings",
    [
        dict(guide="meanfield", objective="elbo_analytic"),
        dict(guide="lowrank", rank=1, objective="elbo", stl=False),
        dict(guide="fullrank", objective="renyi", alpha=0.0, num_particles=16),
    ],
    ids=["meanfield-analytic", "lowrank-no-stl", "fullrank-iwae"],
)
def test_every_family_and_objective_finds_the_posterior_mean(normal_model, settings):
    mean, cov = two_means_posterior()
    settings = {"num_particles": 4, **settings}
    fit = vb.fit(normal_model, num_steps=3000, learning_rate=0.03, schedule="cosine", progress_bar=False, **settings)
    np.testing.assert_allclose(fit.mean(key=jax.random.key(2))["theta"], mean, atol=0.1 * np.sqrt(cov.diagonal()).min())


def beta_bernoulli(k, n):
    p = numpyro.sample("p", dist.Beta(2.0, 3.0))
    numpyro.sample("k", dist.Binomial(n, p), obs=k)


def gamma_poisson(x):
    rate = numpyro.sample("rate", dist.Gamma(3.0, 1.0))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("x", dist.Poisson(rate), obs=x)


@pytest.mark.parametrize(
    "model_fn, args, site, exact",
    [
        (beta_bernoulli, (62, 100), "p", dist.Beta(2.0 + 62, 3.0 + 38)),
        (gamma_poisson, (np.array([4, 7, 3, 5, 6, 4, 8, 5], np.float32),), "rate", dist.Gamma(3.0 + 42, 1.0 + 8)),
    ],
    ids=["beta-bernoulli", "gamma-poisson"],
)
def test_constrained_marginal_matches_the_exact_posterior(model_fn, args, site, exact):
    model = vb.Model.from_numpyro(model_fn, *args)
    fit = vb.fit(model, num_particles=8, num_steps=3000, learning_rate=0.02, progress_bar=False)
    draws = np.asarray(fit.sample(jax.random.key(3), 40_000)[site])
    exact_sd = float(jnp.sqrt(exact.variance))
    assert abs(draws.mean() - float(exact.mean)) < 0.1 * exact_sd  # a log-normal is not a Gamma
    assert draws.std() / exact_sd == pytest.approx(1.0, abs=0.05)


def test_delta_fits_the_map_in_the_models_own_parameterisation():
    model = vb.Model.from_numpyro(beta_bernoulli, 62, 100)
    fit = vb.fit(model, guide="delta", num_steps=3000, learning_rate=0.05, progress_bar=False)
    mode = (2.0 + 62 - 1) / (2.0 + 62 + 3.0 + 38 - 2)  # the Beta posterior's mode, not the logit's
    draws = fit.sample(jax.random.key(0), 3)["p"]
    np.testing.assert_allclose(draws, mode, rtol=1e-3)
    np.testing.assert_allclose(fit.trace.elbo[-1], model.log_joint(fit.precond.to_z(fit.params.loc)), rtol=1e-4)


# ---------------------------------------------------------------- eight schools vs NUTS


@pytest.mark.slow
def test_eight_schools_against_nuts():
    mcmc = MCMC(NUTS(eight_schools_noncentered_model), num_warmup=1000, num_samples=4000, progress_bar=False)
    mcmc.run(jax.random.key(0), **EIGHT_SCHOOLS)
    nuts = mcmc.get_samples()
    model = vb.Model.from_numpyro(eight_schools_noncentered_model, **EIGHT_SCHOOLS)
    fit = vb.fit(model, guide="fullrank", num_particles=16, num_steps=8000, schedule="exponential", final_lr_ratio=0.1, progress_bar=False)
    draws = fit.sample(jax.random.key(1), 20_000)
    for name in ("mu", "tau", "theta"):
        ref_mean, ref_sd = np.asarray(nuts[name]).mean(0), np.asarray(nuts[name]).std(0)
        vi_mean, vi_sd = np.asarray(draws[name]).mean(0), np.asarray(draws[name]).std(0)
        assert np.all(np.abs(vi_mean - ref_mean) / ref_sd < 0.2), (name, vi_mean, ref_mean)
        assert np.all((vi_sd / ref_sd > 0.65) & (vi_sd / ref_sd < 1.3)), (name, vi_sd, ref_sd)


# ---------------------------------------------------------------- the driver's contract


def test_result_shapes_and_trace(schools):
    fit = vb.fit(schools, num_steps=700, chunk_size=300, progress_bar=False)
    draws = fit.sample(jax.random.key(0), 50)
    assert draws["mu"].shape == (50,) and draws["tau"].shape == (50,) and draws["theta"].shape == (50, 8)
    assert np.all(np.asarray(draws["tau"]) > 0)
    for column in fit.trace:
        assert isinstance(column, np.ndarray) and column.shape == (700,)
    np.testing.assert_allclose(fit.trace.loss, -fit.trace.elbo, rtol=1e-6)  # the ELBO objective
    assert fit.num_rejected == 0 and fit.stop_reason == "completed"
    assert set(fit.mean()) == {"mu", "tau", "theta", "theta_trans"}
    assert np.isfinite(fit.elbo(jax.random.key(0), num_particles=300))
    table = fit.summary()
    assert {"mean", "sd"} <= set(table.columns) and "theta[7]" in table.index


def test_resume_equals_one_long_run(schools):
    config = vb.Config(guide="fullrank", num_particles=2, num_steps=350, chunk_size=200)
    once = vb.fit(schools, config.replace(num_steps=700), progress_bar=False)
    first = vb.fit(schools, config, progress_bar=False)
    both = vb.fit(schools, config, init=first, progress_bar=False)
    assert both.num_steps == 700
    np.testing.assert_allclose(both.trace.elbo, once.trace.elbo, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(both.params.loc, once.params.loc, rtol=1e-4, atol=1e-5)


def test_start_fit_then_fit_equals_one_fit(schools):
    config = vb.Config(guide="fullrank", num_steps=400, chunk_size=200)
    once = vb.fit(schools, config, progress_bar=False)
    began = vb.start_fit(schools, config)
    assert began.num_steps == 0 and began.stop_reason == "started" and began.start.method == "laplace"
    # The zero-step fit is the Laplace start itself: its guide is centred on the MAP (mu is real,
    # the first flat coordinate).
    draws = began.sample_unconstrained(jax.random.key(0), 20_000)
    np.testing.assert_allclose(np.mean(draws, 0), began.start.precond.shift, atol=0.05)
    resumed = vb.fit(schools, config, init=began, progress_bar=False)
    np.testing.assert_array_equal(resumed.trace.elbo, once.trace.elbo)
    np.testing.assert_array_equal(resumed.params.loc, once.params.loc)
    assert resumed.start == began.start and resumed.wall_time >= began.wall_time


def test_second_fit_and_resume_do_not_recompile(schools):
    config = vb.Config(guide="meanfield", num_particles=3, num_steps=400, chunk_size=200)
    fit = vb.fit(schools, config, progress_bar=False)
    before = trace_count()
    other = vb.fit(schools, config.replace(learning_rate=3e-3, seed=5, clip_norm=1.0), progress_bar=False)
    vb.fit(schools, other.config, init=other, progress_bar=False)
    assert trace_count() == before
    assert not np.allclose(other.trace.elbo, fit.trace.elbo)


def test_init_values_set_the_starting_location(schools):
    fit = vb.fit(schools, init="prior", num_steps=1, learning_rate=1e-6, progress_bar=False, init_values={"mu": 3.0, "tau": 2.0})
    np.testing.assert_allclose(fit.precond.to_z(fit.params.loc)[:2], [3.0, np.log(2.0)], atol=1e-4)
    with pytest.raises(ValueError, match="unknown site"):
        vb.fit(schools, num_steps=1, progress_bar=False, init_values={"sigma": 1.0})
    with pytest.raises(ValueError, match="outside"):
        vb.fit(schools, num_steps=1, progress_bar=False, init_values={"tau": -1.0})


def test_callbacks_see_the_trace_and_can_stop(schools):
    seen = []

    def callback(step, trace, state):
        seen.append((step, len(trace.elbo), int(state.step)))
        return step >= 400

    fit = vb.fit(schools, num_steps=1000, chunk_size=200, callbacks=[callback], progress_bar=False)
    assert seen == [(200, 200, 200), (400, 400, 400)]
    assert fit.stop_reason == "callback" and fit.num_steps == 400


def test_ctrl_c_returns_the_fit_so_far(schools):
    def interrupt(step, trace, state):
        if step == 600:
            raise KeyboardInterrupt

    fit = vb.fit(schools, num_steps=2000, chunk_size=300, callbacks=[interrupt], progress_bar=False)
    assert fit.stop_reason == "interrupted" and fit.num_steps == 600 and int(fit.state.step) == 600


def _interrupt_at(stop_step):
    def callback(step, trace, state):
        if step == stop_step:
            raise KeyboardInterrupt

    return callback


def _assert_same_run(a, b):
    for x, y in zip(a.trace, b.trace):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(jax.tree.leaves((a.params, a.state.opt_state)), jax.tree.leaves((b.params, b.state.opt_state))):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(jax.random.key_data(a.state.key), jax.random.key_data(b.state.key))
    assert int(a.state.step) == int(b.state.step) and a.stop_reason == b.stop_reason
    assert float(a.state.hyper.learning_rate) == float(b.state.hyper.learning_rate)


@pytest.mark.parametrize("schedule", ["constant", "plateau"])
def test_ctrl_c_then_resume_continues_exactly(schools, schedule):
    # The plateau rule compares each chunk with the one before and halves the step size: what it
    # knew at the interruption (the decayed rate, the last chunk's ELBO) must survive the resume.
    config = vb.Config(schedule=schedule, learning_rate=0.05, num_steps=1200, chunk_size=50)
    whole = vb.fit(schools, config, progress_bar=False)
    part = vb.fit(schools, config, callbacks=[_interrupt_at(600)], progress_bar=False)
    assert part.stop_reason == "interrupted" and part.num_steps == 600 and part.memory is not None
    rest = vb.fit(schools, config.replace(num_steps=600), init=part, progress_bar=False)
    _assert_same_run(rest, whole)
    if schedule == "plateau":  # the rule acted on both sides of the interruption
        assert float(whole.state.hyper.learning_rate) < float(part.state.hyper.learning_rate) < 0.05


def test_rejected_steps_are_counted_in_the_fit_its_repr_and_the_progress_bar(capsys):
    model = vb.Model.from_log_density(
        lambda v: jnp.where(v["x"] > 3.0, jnp.nan, dist.Normal(2.0, 1.0).log_prob(v["x"])),
        {"x": dist.constraints.real},
    )
    fit = vb.fit(model, num_steps=500, chunk_size=250, schedule="constant")
    assert 0 < fit.num_rejected == int(fit.state.num_rejected) == int(np.sum(fit.trace.rejected))
    assert f"rejected={fit.num_rejected}" in repr(fit)
    assert f"rejected={fit.num_rejected}" in capsys.readouterr().err


def test_a_model_with_a_nan_region_still_finishes():
    model = vb.Model.from_log_density(
        lambda v: jnp.where(v["x"] > 3.0, jnp.nan, dist.Normal(2.0, 1.0).log_prob(v["x"])),
        {"x": dist.constraints.real},
    )
    fit = vb.fit(model, num_steps=1000, chunk_size=250, progress_bar=False)
    assert fit.stop_reason == "completed" and 0 < fit.num_rejected < 1000
    assert int(fit.state.num_rejected) == fit.num_rejected
    assert np.all(np.isfinite(fit.params.loc))
    assert float(fit.mean()["x"]) < 3.0


def test_a_run_of_only_rejected_steps_names_the_cause():
    model = vb.Model.from_log_density(
        lambda v: jnp.where(jnp.abs(v["x"]) > 1e-3, jnp.nan, 0.0) - v["x"] ** 2, {"x": dist.constraints.real}
    )
    with pytest.raises(FloatingPointError, match="objective is not finite"):
        vb.fit(model, init="prior", num_steps=100, progress_bar=False)


def test_custom_optax_transformation(schools):
    fit = vb.fit(schools, num_steps=300, optimizer=optax.chain(optax.clip(1.0), optax.adam(1e-2)), progress_bar=False)
    assert fit.config.optimizer == "custom" and np.isfinite(fit.trace.elbo).all()
    again = vb.fit(schools, fit.config, init=fit, progress_bar=False)  # resumes with the same transformation
    assert again.num_steps == 600
    with pytest.raises(ValueError, match="pass the optax transformation"):
        vb.fit(schools, fit.config, progress_bar=False)


def test_progress_bar_is_on_by_default(schools, capsys):
    vb.fit(schools, num_steps=200, chunk_size=100)
    assert "vibench" in capsys.readouterr().err


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda m: vb.fit("model"), TypeError, "fit expects a vibench.Model"),
        (lambda m: vb.fit(m, config={"guide": "fullrank"}), TypeError, "config must be a vibench.Config"),
        (lambda m: vb.fit(m, guide="lowrank", rank=11, progress_bar=False), ValueError, r"rank must be an integer in \[1, 10\]"),
        (lambda m: vb.fit(m, num_particles=0), ValueError, "num_particles must be an integer >= 1"),
        (lambda m: vb.fit(m, learning_rate=0), ValueError, "learning_rate"),
        (lambda m: vb.fit(m, num_steps=5, progress_bar=False).sample(jax.random.key(0), 0), ValueError, "n must be an integer >= 1"),
        (lambda m: vb.fit(m, guide="fullrank", num_steps=5, init=vb.fit(m, num_steps=5, progress_bar=False)), ValueError, "same guide"),
        (lambda m: vb.fit(vb.models.eight_schools(centered=True), num_steps=5, init=vb.fit(m, num_steps=5, progress_bar=False)), ValueError, "another model"),
    ],
)
def test_bad_calls_raise_clear_errors(schools, call, error, words):
    with pytest.raises(error, match=words):
        call(schools)
