"""The training engine: a NamedTuple state and pure, jit-compiled ``step`` / ``run_chunk``.

    engine = make_engine(model, config)
    state = engine.init(init_params(model, config, key), run_key, hyper_from_config(config))
    state, trace = engine.run_chunk(state, 500)   # one lax.scan of 500 steps
    states, trace = engine.run_many(states, 500)  # N runs stacked on a leading axis, one program

The State, Hyper, Trace and Precond it works on are in :mod:`vibench.state`. Step ``t``'s noise
depends only on ``state.key`` and ``t`` (see :func:`chunk_noise`), not on how
steps are split into chunks: one run of 2n steps equals n + n. A step whose loss, gradient or
update is not finite keeps the previous params and optimizer state and is counted as rejected; the
step counter (and with it the noise) still advances. Numbers a user changes live sit in
``state.hyper`` and are runtime values: replacing them never recompiles.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._memo import per_model
from .guides import Guide, dimension
from .plan import Program, as_plan
from .state import Hyper, State, Trace, Whitened, identity_precond

__all__ = ["Engine", "make_engine", "init_params", "chunk_noise", "trace_count", "NOISE_BLOCK", "BATCH_STREAM"]


class Engine(NamedTuple):
    """Compiled functions of one program (model x guide x objective x particles x optimizer).

    - ``init(params, key, hyper, precond=None) -> State`` (None: no preconditioning)
    - ``step(state) -> (State, Trace of scalars)``
    - ``run_chunk(state, n) -> (State, Trace of (n,) arrays)``; ``n`` is static.
      ``run_chunk.compile(state, n, wait=False)`` compiles it ahead from shapes alone.
    - ``run_many(states, n) -> (States, Trace of (N, n) arrays)``: ``run_chunk`` of N runs as one
      program, over States stacked along a leading axis of length N; run ``i`` equals
      ``run_chunk`` of state ``i`` alone (to float rounding).

    A family with a ``refine`` (Laplace) has it applied to the params that ``step``, ``run_chunk``
    and ``run_many`` return, so every State they give is a complete approximation.
    """

    guide: Guide
    objective: Callable
    optimizer: optax.GradientTransformation
    init: Callable
    step: Callable
    run_chunk: Callable
    run_many: Callable


_TRACES: collections.Counter = collections.Counter()


def trace_count() -> int:
    """How many times any engine's ``run_chunk``/``run_many``/``step`` has been traced (compiled) so far."""
    return sum(_TRACES.values())


def init_params(model, config, key: jax.Array, init_values: Optional[dict] = None, start=None):
    """The guide's starting params for ``config`` (a Config or its Plan).

    With a ``start`` (:func:`vibench.start.find_start`), in its whitened coordinates: location 0,
    scale ``start.scale``. Without one, in the model's flat space: location at the model's initial
    point (or ``init_values``, constrained, by site), scale ``config.init_scale``; pair these with
    ``engine.init(..., precond=None)``.
    """
    plan = as_plan(config)
    guide, options = plan.guide, plan.config.guide_init_options
    if start is None:
        loc = model.initial_point(init_values)
        return guide.init(key, loc, jnp.full_like(loc, plan.config.init_scale), options)
    zeros = jnp.zeros_like(start.precond.shift)
    return guide.init(key, zeros, jnp.full_like(zeros, start.scale), options)


def make_engine(model, config, optimizer: Optional[optax.GradientTransformation] = None) -> Engine:
    """The engine for ``model`` and ``config`` (a Config, with ``optimizer`` for a custom optax
    transformation, or a :class:`~vibench.plan.Plan`): cached per model and
    :attr:`Plan.program <vibench.plan.Plan.program>`, so Configs that differ only in runtime
    numbers share one."""
    return _engine(model, as_plan(config, optimizer).program)


@per_model
def _engine(model, program: Program) -> "Engine":
    # Built from the program alone: no other Config field can be read here and then go stale.
    return _build_engine(model, program)


NOISE_BLOCK = 64
BATCH_STREAM = 0x5EED  # fold_in tag of the minibatch keys, apart from the noise blocks' keys


def chunk_noise(key: jax.Array, start, n: int, shape: tuple) -> jax.Array:
    """Standard-normal noise ``(n, *shape)`` for steps ``start .. start + n - 1``.

    Step ``t``'s noise is row ``t % NOISE_BLOCK`` of the block drawn from ``fold_in(key, t //
    NOISE_BLOCK)``, whatever the chunk: one run of 2n steps equals n + n. Blocks are drawn by a
    sequential ``lax.map``, not ``vmap``, because the RBG generator's draws change under ``vmap``.
    """
    num_blocks = (n + NOISE_BLOCK - 2) // NOISE_BLOCK + 1
    first = start // NOISE_BLOCK
    blocks = jax.lax.map(
        lambda i: jax.random.normal(jax.random.fold_in(key, first + i), (NOISE_BLOCK, *shape)),
        jnp.arange(num_blocks, dtype=jnp.int32),
    )
    return jax.lax.dynamic_slice_in_dim(blocks.reshape(num_blocks * NOISE_BLOCK, *shape), start % NOISE_BLOCK, n)


@functools.cache
def _noise_program():
    """``chunk_noise`` compiled, shared by every engine: models with the same noise shape draw
    with the same program.

    On CPU it is compiled with XLA's classic elemental emitters instead of its fusion emitters:
    measured on a 500-step chunk's noise of shapes (1, 10) to (8, 206), it compiled in
    0.20-0.23 s instead of 0.29-0.38 s, ran as fast or faster, and drew the same numbers to the
    bit. The option is left out where this XLA does not know it.
    """

    def draw(key, start, n, shape):
        _TRACES["noise"] += 1
        return chunk_noise(key, start, n, shape)

    options = {}
    if jax.default_backend() == "cpu":
        options = {"xla_cpu_use_fusion_emitters": False}
        try:
            jax.jit(lambda x: x).lower(np.float32(0)).compile(options)
        except jax.errors.JaxRuntimeError:
            options = {}
    return jax.jit(draw, static_argnums=(2, 3), compiler_options=options)


def _keep_if(ok, new, old):
    """``new`` where ``ok``, else ``old``. On CPU one cond, not a select per leaf: it ran the step
    1.2-1.4x faster on small models. On a GPU a select per leaf: there the cond ran a logistic
    regression (N=10k, D=50, 8 particles) at 0.58x the speed of the selects on an H200."""
    if jax.default_backend() == "cpu":
        return jax.lax.cond(ok, lambda: new, lambda: old)
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def _lr_factor(schedule: str, hyper: Hyper, step):
    t = step.astype(jnp.float32)
    warm = jnp.minimum(1.0, (t + 1.0) / jnp.maximum(hyper.warmup_steps, 1.0))
    frac = jnp.clip((t - hyper.warmup_steps) / jnp.maximum(hyper.decay_steps - hyper.warmup_steps, 1.0), 0.0, 1.0)
    if schedule == "exponential":
        return warm * hyper.final_lr_ratio**frac
    if schedule == "cosine":
        return warm * (hyper.final_lr_ratio + (1 - hyper.final_lr_ratio) * 0.5 * (1 + jnp.cos(jnp.pi * frac)))
    return warm


def _build_engine(model, program: Program) -> Engine:
    guide, method, num_particles, schedule = program.guide, program.method, program.num_particles, program.schedule
    base, scale_updates = program.transformation()

    def objective(params, eps, hyper, precond, data=None, batch_key=None):
        # Built at trace time around the runtime preconditioner and data: one program serves every
        # start, and data placed across devices is computed on where it lies.
        density = model.density(data, batch_key)
        loss_fn = method.build(Whitened(density, precond), guide, program.objective, num_particles)
        return loss_fn(params, eps, hyper)

    value_and_grad = jax.value_and_grad(objective, has_aux=True)

    def init(params, key, hyper, precond=None):
        if precond is None:
            d = dimension(guide, params)
            precond = identity_precond(jnp.zeros(d, jax.tree.leaves(params)[0].dtype), guide.whitening)
        return State(params, base.init(params), key, jnp.int32(0), jnp.int32(0), hyper, precond)

    def noise_shape(params):
        return num_particles, guide.noise_dim(params)

    def noise(key, start, n, params):
        return chunk_noise(key, start, n, noise_shape(params))

    def one_step(state: State, eps, data):
        hyper = state.hyper
        batch_key = None
        if model.batch_size:
            # A stream of its own: the minibatch must not reuse the particles' noise keys.
            batch_key = jax.random.fold_in(jax.random.fold_in(state.key, BATCH_STREAM), state.step)
        (loss, aux), grads = value_and_grad(state.params, eps, hyper, state.precond, data, batch_key)
        grad_norm = optax.tree.norm(grads)
        clip = jnp.where(grad_norm > hyper.clip_norm, hyper.clip_norm / grad_norm, 1.0)
        grads = jax.tree.map(lambda g: g * clip, grads)
        updates, opt_state = base.update(grads, state.opt_state, state.params)
        if scale_updates:
            lr = hyper.learning_rate * _lr_factor(schedule, hyper, state.step)
            updates = jax.tree.map(lambda u: lr * u, updates)
        params = optax.apply_updates(state.params, updates)
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.tree.norm(params))
        params, opt_state = _keep_if(ok, (params, opt_state), (state.params, state.opt_state))
        return state._replace(params=params, opt_state=opt_state, step=state.step + 1), Trace(loss, aux["elbo"], grad_norm, ~ok)

    def counted(state, trace):
        # Counted once per call from the trace, not carried through every step.
        return state._replace(num_rejected=state.num_rejected + jnp.sum(trace.rejected, dtype=jnp.int32))

    def refined(state, data):
        # Params that follow from the location (Laplace's covariance) are recomputed once per
        # call, on all of the data, not in every step of a chunk.
        if method.refine is None:
            return state
        density = Whitened(model.density(data, None), state.precond)
        return state._replace(params=method.refine(density.log_density, state.params))

    def step(state, data):
        _TRACES["step"] += 1
        state, trace = one_step(state, noise(state.key, state.step, 1, state.params)[0], data)
        return refined(counted(state, trace), data), trace

    def scan_chunk(state, eps, data):
        def body(state, eps):
            state, row = one_step(state, eps, data)
            # One (4,) row written per step instead of four scalars: fewer kernels in the loop.
            return state, jnp.stack([row.loss, row.elbo, row.grad_norm, row.rejected.astype(row.loss.dtype)])

        state, rows = jax.lax.scan(body, state, eps)
        trace = Trace(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3] != 0)
        return refined(counted(state, trace), data), trace

    def run_chunk(state, eps, data):
        _TRACES["run_chunk"] += 1
        state, trace = scan_chunk(state, eps, data)
        # Only what a chunk changes comes back (see _Chunk): the key, the runtime numbers and the
        # preconditioner stay the caller's.
        return (state.params, state.opt_state, state.step, state.num_rejected), trace

    def run_many(states, n, data):
        _TRACES["run_many"] += 1
        # Each run's noise by a sequential lax.map, the scan by vmap: the RBG generator's draws
        # change under vmap, and every run must see the noise run_chunk would give it alone.
        eps = jax.lax.map(lambda s: noise(s[0], s[1], n, s[2]), (states.key, states.step, states.params))
        return jax.vmap(scan_chunk, in_axes=(0, 0, None))(states, eps, data)

    return Engine(
        guide,
        objective,
        base,
        jax.jit(init),
        _WithData(jax.jit(step), model.data),
        _Chunk(_noise_program(), jax.jit(run_chunk), model.data, noise_shape),
        _WithData(jax.jit(run_many, static_argnums=1), model.data),
    )


class _Chunk:
    """``run_chunk(state, n)``: the chunk's noise, then the scan over it, as two compiled programs.

    The noise is drawn before the scan: drawn inside the body it ran 1.3-1.6x slower on CPU (and
    threefry noise there was fused into the model's arithmetic). Drawn by a program of its own
    (:func:`_noise_program`), it compiles beside the scan (:meth:`compile`).
    """

    def __init__(self, draw, scan, data, noise_shape):
        self._draw, self._scan, self._data, self._noise_shape = draw, scan, data, noise_shape
        self._compiled = set()

    def __call__(self, state, n):
        shape = self._noise_shape(state.params)
        if isinstance(state.step, jax.core.Tracer):  # inside a caller's jit: all one program of theirs
            eps = chunk_noise(state.key, state.step, n, shape)
        else:
            if (n, shape) not in self._compiled:
                self.compile(state, n)
            eps = self._draw(state.key, state.step, n, shape)
        # The scan returns only what it changes: on CPU every output buffer of a call costs 2-3 us,
        # and passing the state's ~20 leaves back through took 60-80 us per chunk.
        (params, opt_state, step, num_rejected), trace = self._scan(state, eps, self._data)
        return state._replace(params=params, opt_state=opt_state, step=step, num_rejected=num_rejected), trace

    def lower(self, state, n):
        """The scan's lowering (the program that holds the model), for inspection."""
        eps = jax.eval_shape(self._draw, state.key, state.step, n, self._noise_shape(state.params))
        return self._scan.lower(state, eps, self._data)

    def compile(self, state, n, wait: bool = True) -> list:
        """Compile both programs, concurrently, for the shapes of ``state`` (arrays or
        ``jax.ShapeDtypeStruct``) and ``n``.

        Both are traced here, on the calling thread (NumPyro's effect handlers are global state:
        two threads tracing a model corrupt each other), and compiled on threads of their own (XLA
        compiles without the GIL). Returns the compiles' futures; with ``wait=False`` the caller
        goes on and waits for them before the first call.
        """
        shape = self._noise_shape(state.params)
        pool = concurrent.futures.ThreadPoolExecutor(2)
        # The scan's compile is the longer: it starts first.
        futures = [pool.submit(self.lower(state, n).compile)]
        futures.append(pool.submit(self._draw.lower(state.key, state.step, n, shape).compile))
        pool.shutdown(wait=False)
        self._compiled.add((n, shape))
        if wait:
            for future in futures:
                future.result()
        return futures


class _WithData:
    """A jitted ``fn(state, *static, data)`` called as ``fn(state, *static)`` with a model's data:
    the data are arguments of the compiled program, not constants baked into it."""

    def __init__(self, jitted, data):
        self._jitted, self._data = jitted, data

    def __call__(self, state, *static):
        return self._jitted(state, *static, self._data)

    def lower(self, state, *static):
        return self._jitted.lower(state, *static, self._data)
