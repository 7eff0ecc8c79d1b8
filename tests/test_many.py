"""fit_many: N runs as one program equal N lone fits, and compile once."""

import numpy as np

import vibench as vb
from vibench.engine import trace_count

SEEDS = [0, 1, 2]


def _assert_same_fit(many, lone):
    assert many.config == lone.config
    assert many.num_steps == lone.num_steps and many.stop_reason == lone.stop_reason
    for name, a, b in zip(vb.Trace._fields, many.trace, lone.trace):
        if name == "rejected":
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=name)
    for a, b in zip(many.params, lone.params):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert int(many.state.step) == int(lone.state.step)


def test_seeds_equal_lone_fits_run_one_by_one(schools):
    config = vb.Config(guide="fullrank", num_particles=4, schedule="constant", num_steps=600, chunk_size=200)
    fits = vb.fit_many(schools, config, seeds=SEEDS, progress_bar=False)
    assert [fit.config.seed for fit in fits] == SEEDS
    for fit, seed in zip(fits, SEEDS):
        _assert_same_fit(fit, vb.fit(schools, config, seed=seed, progress_bar=False))
    # Different seeds are different runs.
    assert not np.allclose(fits[0].trace.elbo, fits[1].trace.elbo)


def test_the_plateau_rule_decides_per_run(schools):
    # Learning rates 10x apart converge after different numbers of steps, each as its lone fit.
    configs = [vb.Config(learning_rate=lr, num_steps=6000, chunk_size=250, seed=3) for lr in (0.1, 0.01)]
    fits = vb.fit_many(schools, configs, progress_bar=False)
    for fit, config in zip(fits, configs):
        _assert_same_fit(fit, vb.fit(schools, config, progress_bar=False))
        assert float(fit.state.hyper.learning_rate) < config.learning_rate  # it decayed


def test_learning_rates_do_not_recompile(schools):
    config = vb.Config(objective="renyi", num_particles=3, schedule="cosine", num_steps=40, chunk_size=20)
    before = trace_count()
    first = vb.fit_many(schools, [config.replace(learning_rate=lr) for lr in (1e-3, 1e-2, 1e-1)], progress_bar=False)
    assert trace_count() - before == 1  # one program for the three runs and both chunks
    middle = trace_count()
    vb.fit_many(schools, [config.replace(learning_rate=lr, alpha=0.2, clip_norm=5.0, seed=4) for lr in (3e-3, 3e-2, 0.3)],
                progress_bar=False)
    assert trace_count() == middle
    # The learning rate took effect: the runs moved apart by different amounts.
    moved = [np.abs(np.asarray(fit.params.loc)).sum() for fit in first]
    assert len(set(np.round(moved, 6))) == 3


def test_one_run_is_a_list_of_one(schools):
    config = vb.Config(schedule="constant", num_steps=50, chunk_size=50)
    (fit,) = vb.fit_many(schools, config, seeds=[5], progress_bar=False)
    _assert_same_fit(fit, vb.fit(schools, config, seed=5, progress_bar=False))
