import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro.distributions import constraints

import vibench as vb
from vibench.engine import trace_count


def _nan_above_three(v):
    x = v["x"]
    return jnp.where(x > 3.0, jnp.nan, dist.Normal(2.0, 1.0).log_prob(x))


@pytest.fixture(scope="module")
def region_model():
    return vb.Model.from_log_density(_nan_above_three, {"x": constraints.real}, init={"x": 2.5})


def _start(model, config, seed=0):
    engine = vb.make_engine(model, config)
    params = vb.init_params(model, config, jax.random.key(seed))
    return engine, engine.init(params, jax.random.key(seed, impl="rbg"), vb.hyper_from_config(config))


def test_rejected_steps_keep_params_and_advance_the_key(region_model):
    config = vb.Config(init_scale=1.0, learning_rate=0.05)
    engine, state = _start(region_model, config)
    seen = {True: 0, False: 0}
    for _ in range(40):
        new, row = engine.step(state)
        rejected = bool(row.rejected)
        seen[rejected] += 1
        assert int(new.step) == int(state.step) + 1
        same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params)))
        assert same == rejected
        if rejected:
            assert not np.isfinite(float(row.loss))
            same_opt = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new.opt_state), jax.tree.leaves(state.opt_state)))
            assert same_opt
        state = new
    assert seen[True] > 0 and seen[False] > 0
    assert int(state.num_rejected) == seen[True]


def test_chunking_does_not_change_the_run(schools):
    config = vb.Config(guide="fullrank", num_particles=4)
    engine, state = _start(schools, config)
    whole, trace = engine.run_chunk(state, 40)
    half, first = engine.run_chunk(state, 20)
    parts, second = engine.run_chunk(half, 20)
    np.testing.assert_allclose(np.concatenate([first.elbo, second.elbo]), trace.elbo, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(parts.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # One step is the same program as a chunk of one.
    stepped, row = engine.step(state)
    np.testing.assert_allclose(row.elbo, first.elbo[0], rtol=1e-5)


def test_live_numbers_do_not_recompile(schools):
    config = vb.Config(objective="renyi", num_particles=4, schedule="cosine", clip_norm=10.0)
    engine, state = _start(schools, config)
    state, _ = engine.run_chunk(state, 10)
    before = trace_count()
    for change in (dict(learning_rate=1e-3), dict(alpha=0.0), dict(clip_norm=None), dict(warmup_steps=5, num_steps=100)):
        state = state._replace(hyper=vb.hyper_from_config(config.replace(**change)))
        state, _ = engine.run_chunk(state, 10)
    stl_config = vb.Config(num_particles=4)
    stl_engine, stl_state = _start(schools, stl_config)
    stl_state, _ = stl_engine.run_chunk(stl_state, 10)
    middle = trace_count()
    stl_state = stl_state._replace(hyper=vb.hyper_from_config(stl_config.replace(stl=False)))
    stl_engine.run_chunk(stl_state, 10)
    assert trace_count() - before == 1  # only the STL engine's first chunk compiled
    assert trace_count() == middle


def test_learning_rate_change_takes_effect(schools):
    config = vb.Config(optimizer="sgd", learning_rate=1e-3)
    engine, state = _start(schools, config)
    slow, _ = engine.run_chunk(state, 1)
    fast, _ = engine.run_chunk(state._replace(hyper=vb.hyper_from_config(config.replace(learning_rate=2e-3))), 1)
    step_slow = slow.params.loc - state.params.loc
    step_fast = fast.params.loc - state.params.loc
    np.testing.assert_allclose(step_fast, 2 * step_slow, rtol=1e-4, atol=1e-7)


def test_schedule_and_clipping_scale_the_update(schools):
    config = vb.Config(optimizer="sgd", learning_rate=1e-2, clip_norm=1e-3)
    engine, state = _start(schools, config)
    new, row = engine.step(state)
    moved = jnp.sqrt(sum(jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params))))
    assert float(row.grad_norm) > 1e-3
    np.testing.assert_allclose(moved, 1e-2 * 1e-3, rtol=2e-2)  # float32 differences of O(1) params
    warm = vb.Config(optimizer="sgd", learning_rate=1e-2, warmup_steps=10)
    engine_w, state_w = _start(schools, warm)
    new_w, _ = engine_w.step(state_w)
    new_plain, _ = vb.make_engine(schools, warm.replace(warmup_steps=0)).step(state_w._replace(hyper=vb.hyper_from_config(warm.replace(warmup_steps=0))))
    np.testing.assert_allclose(new_w.params.loc - state_w.params.loc, (new_plain.params.loc - state_w.params.loc) / 10, rtol=1e-4, atol=1e-8)


def test_engines_are_cached_per_program(schools):
    a = vb.make_engine(schools, vb.Config(learning_rate=0.1))
    b = vb.make_engine(schools, vb.Config(learning_rate=0.2, seed=3, num_steps=10))
    c = vb.make_engine(schools, vb.Config(num_particles=2))
    assert a is b and a is not c


def test_run_chunk_compiles_ahead_from_shapes_alone(schools):
    config = vb.Config(guide="lowrank", rank=3, num_particles=3, optimizer="rmsprop")  # a program of this test's own
    engine, state = _start(schools, config)
    before = trace_count()
    for future in engine.run_chunk.compile(jax.eval_shape(lambda: state), 30, wait=False):
        future.result()
    compiled = trace_count()
    assert compiled > before
    new, trace = engine.run_chunk(state, 30)
    assert trace_count() == compiled  # the call found both programs compiled from the shapes
    # The same chunk traced inside a user's own jit is the same computation.
    inside, traced = jax.jit(lambda s: engine.run_chunk(s, 30))(state)
    np.testing.assert_allclose(traced.elbo, trace.elbo, rtol=1e-5)
    np.testing.assert_allclose(inside.params.loc, new.params.loc, rtol=1e-5, atol=1e-6)
