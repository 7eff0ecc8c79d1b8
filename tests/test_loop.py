"""The chunk loop: a Run commits chunks and applies the stopping rules; drive runs one or N."""

import jax
import numpy as np
import pytest
from numpyro.distributions import constraints

import vibench as vb
from vibench.engine import make_engine
from vibench.loop import Run, drive
from vibench.plan import resolve
from vibench.state import Trace, hyper_from_config


@pytest.fixture(scope="module")
def quadratic():
    return vb.Model.from_log_density(lambda v: -0.5 * (v["x"] ** 2).sum(), {"x": constraints.real}, shapes={"x": (2,)})


def _run(model, **overrides):
    plan = resolve(vb.Config(init="prior", **overrides))
    engine = make_engine(model, plan)
    params = vb.init_params(model, plan, jax.random.key(0))
    state = engine.init(params, jax.random.key(1, impl="rbg"), hyper_from_config(plan))
    return engine, Run(state, plan)


def _chunk(elbo, rejected=None):
    elbo = np.asarray(elbo, np.float32)
    rejected = np.zeros(elbo.shape, bool) if rejected is None else np.asarray(rejected)
    return Trace(-elbo, elbo, np.ones_like(elbo), rejected)


def test_a_run_commits_chunks_and_counts_rejected_steps(quadratic):
    _, run = _run(quadratic, num_steps=30, chunk_size=10, schedule="constant")
    assert not run.record(run.state, _chunk(np.arange(10.0), rejected=[False] * 9 + [True]))
    assert run.filled == 10 and run.rejected == 1 and run.remaining == 20
    np.testing.assert_array_equal(run.trace().elbo, np.arange(10.0))
    assert run.elbo == np.median(np.arange(9.0))  # the accepted steps' median
    # A whole chunk rejected after the first: the run stops as diverged and keeps what it had.
    with pytest.warns(UserWarning, match="a whole chunk was rejected"):
        assert run.record(run.state, _chunk(np.full(10, np.nan), rejected=[True] * 10))
    assert run.stop_reason == "diverged" and run.filled == 20 and run.rejected == 11


def test_a_first_chunk_wholly_rejected_raises(quadratic):
    _, run = _run(quadratic, num_steps=20, chunk_size=10)
    with pytest.raises(FloatingPointError, match="all 10 steps of the first chunk were rejected"):
        run.record(run.state, Trace(np.full(10, np.nan), np.full(10, np.nan), np.ones(10), np.ones(10, bool)))


def test_the_plateau_rule_halves_the_rate_in_the_committed_state(quadratic):
    _, run = _run(quadratic, num_steps=100, chunk_size=10, learning_rate=0.04, final_lr_ratio=0.25)
    flat = _chunk(np.linspace(-1.0, 1.0, 10))
    rates = []
    for _ in range(8):
        stopped = run.record(run.state, flat)
        rates.append(float(run.state.hyper.learning_rate))
        if stopped:
            break
    # The first chunk sets the level; then no improvement: a halving every second chunk (patience 2)
    # down to the floor, 0.25 of the base, where the next plateau means converged.
    assert rates == pytest.approx([0.04, 0.04, 0.02, 0.02, 0.01, 0.01, 0.01], rel=1e-6)
    assert run.stop_reason == "converged" and run.memory.waited == 0


def test_drive_shows_each_chunk_to_the_callbacks_in_order(quadratic):
    engine, run = _run(quadratic, num_steps=50, chunk_size=20, schedule="constant")
    seen = []
    drive(engine, [run], callbacks=[lambda step, trace, state: seen.append((step, len(trace.loss), int(state.step)))],
          progress_bar=False)
    assert seen == [(20, 20, 20), (40, 40, 40), (50, 50, 50)]  # the last chunk is shorter
    assert run.stop_reason == "completed" and run.remaining == 0


def test_drive_stops_a_run_a_callback_stops_or_that_raises(quadratic):
    engine, run = _run(quadratic, num_steps=100, chunk_size=10, schedule="constant")
    drive(engine, [run], callbacks=[lambda step, trace, state: step >= 30], progress_bar=False)
    assert run.stop_reason == "callback" and run.filled == 30

    engine, run = _run(quadratic, num_steps=100, chunk_size=10, schedule="constant")
    drive(engine, [run], callbacks=[lambda step, trace, state: 1 / 0], progress_bar=False)
    assert run.stop_reason == "error" and run.filled == 10 and isinstance(run.error[2], ZeroDivisionError)


def test_stacked_runs_equal_lone_runs_and_ride_along_when_stopped(quadratic):
    # Two runs as one program: one stopped by its tol early, the other goes on; each trace equals
    # the run driven alone.
    configs = dict(num_steps=60, chunk_size=20, schedule="constant")
    lone = []
    for tol in (None, 1e9):
        engine, run = _run(quadratic, tol=tol, **configs)
        drive(engine, [run], progress_bar=False)
        lone.append(run)
    engine, first = _run(quadratic, **configs)
    _, second = _run(quadratic, tol=1e9, **configs)
    drive(engine, [first, second], stacked=True, progress_bar=False)
    assert [first.filled, second.filled] == [run.filled for run in lone] == [60, 40]
    assert second.stop_reason == "converged" and first.stop_reason == "completed"
    for stacked, alone in zip((first, second), lone):
        np.testing.assert_allclose(stacked.trace().elbo, alone.trace().elbo, rtol=1e-5, atol=1e-5)
