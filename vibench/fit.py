"""``fit``: the Python driver around the engine, and the ``Fit`` it returns.

The driver runs compiled chunks of ``config.chunk_size`` steps; between chunks it moves the chunk's
trace to the host, updates the progress bar, calls callbacks and checks the stopping rules. Ctrl-C
returns the fit as of the last finished chunk; an exception in a callback stops the run there too
and is re-raised as a :class:`CallbackError` that carries that fit.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from .config import CUSTOM, Config
from .engine import Precond, State, Trace, Whitened, cached, hyper_from_config, init_params, make_engine
from .start import Start, find_start, start_method
from .guides import Guide, get_guide, transform_log_prob
from .model import Model, check_model

__all__ = ["CallbackError", "Fit", "Memory", "Plateau", "fit", "start_fit"]

Callback = Callable[[int, Trace, State], Optional[bool]]


@dataclasses.dataclass(frozen=True, eq=False)
class Fit:
    """A fitted guide: the model, the Config, the engine state and the whole trace (NumPy arrays).

    ``stop_reason`` is one of ``"started"`` (no steps yet: :func:`start_fit`), ``"completed"``, ``"converged"`` (the plateau schedule's last decay
    or ``config.tol`` reached), ``"callback"``, ``"interrupted"`` (Ctrl-C), ``"diverged"`` (a
    whole chunk rejected) or ``"error"`` (a callback raised; see :class:`CallbackError`). ``start``
    records the starting stage (its method, time and any fallback). ``memory`` is what the plateau
    and ``tol`` rules carry from chunk to chunk (:class:`Memory`), so a resumed fit decides as an
    unbroken run would.

    The guide's params live in whitened coordinates ``u`` (``fit.precond.to_z(u)`` is the model's
    flat space); every method here answers in the model's own coordinates.
    """

    model: Model
    config: Config
    state: State
    trace: Trace
    wall_time: float
    stop_reason: str = "completed"
    optimizer: Optional[optax.GradientTransformation] = None
    start: Optional[Start] = None
    memory: Optional["Memory"] = None

    @property
    def guide(self) -> Guide:
        return get_guide(self.config.guide)

    @property
    def params(self) -> Any:
        """The guide's params pytree, in the whitened coordinates of :attr:`precond`."""
        return self.state.params

    @property
    def precond(self) -> Precond:
        """The affine map from the guide's coordinates to the model's flat space."""
        return self.state.precond

    @property
    def num_steps(self) -> int:
        return int(self.trace.loss.shape[0])

    @property
    def num_rejected(self) -> int:
        """Steps skipped because their loss, gradient or update was not finite."""
        return int(np.sum(self.trace.rejected))

    def sample_unconstrained(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` draws ``(n, dim)`` from the guide in the flat unconstrained space."""
        _check_count("n", n)
        return _draw_fn(self.model, self.guide, n)(self.params, self.precond, key)

    def log_q(self, z: jax.Array) -> jax.Array:
        """The guide's log density ``(n,)`` at flat points ``z`` ``(n, dim)`` of the model's space
        (ValueError for a family that cannot evaluate it at arbitrary points: a point, BNAF)."""
        if self.guide.point or self.guide.log_prob is None:
            what = "is a point (a MAP fit) with no density" if self.guide.point else "has no inverse to evaluate its density at given points"
            raise ValueError(
                f"guide {self.guide.name!r} {what}; the log density of its own draws is in "
                "fit.to_arviz().sample_stats['log_q'] (or fit a family that has one at any point: iaf, the Gaussians)"
            )
        return _log_q_fn(self.model, self.guide)(self.params, self.precond, jnp.asarray(z))

    def sample(self, key: jax.Array, n: int) -> dict:
        """``n`` draws of every site (deterministic ones too), constrained: ``{name: (n, *shape)}``."""
        _check_count("n", n)
        return _sample_fn(self.model, self.guide, n)(self.params, self.precond, key)

    def mean(self, num_draws: int = 4000, key: Optional[jax.Array] = None) -> dict:
        """Posterior means of every site in its constrained space (Monte Carlo, ``num_draws``)."""
        _check_count("num_draws", num_draws)
        draws = self.sample(_default_key(key), num_draws)
        return {k: np.asarray(v).mean(0) for k, v in draws.items()}

    def std(self, num_draws: int = 4000, key: Optional[jax.Array] = None) -> dict:
        """Posterior standard deviations of every site, constrained (Monte Carlo, ``num_draws``)."""
        _check_count("num_draws", num_draws)
        draws = self.sample(_default_key(key), num_draws)
        return {k: np.asarray(v).std(0) for k, v in draws.items()}

    def elbo(self, key: Optional[jax.Array] = None, num_particles: int = 1000) -> float:
        """A precise ELBO estimate of the fitted guide, for fair comparison of runs (point guides:
        the log joint at the point)."""
        _check_count("num_particles", num_particles)
        return float(_elbo_fn(self.model, self.guide, num_particles)(self.params, self.precond, _default_key(key)))

    def summary(self, num_draws: int = 4000, key: Optional[jax.Array] = None, kind: str = "stats"):
        """``az.summary`` of ``num_draws`` guide draws (a pandas DataFrame: mean, sd and 94% HDI per
        scalar parameter for ``kind="stats"``), with :meth:`diagnose`'s report in
        ``df.attrs["diagnosis"]``."""
        from .diagnostics import summary

        return summary(self, num_draws, key, kind)

    def to_arviz(self, num_draws: int = 1000, key: Optional[jax.Array] = None, posterior_predictive: bool = True,
                 log_likelihood=True, dims=None, coords=None, psis_reweight: bool = False):
        """This fit as an ``arviz.InferenceData``; see :func:`vibench.export.to_arviz`."""
        from .export import to_arviz

        return to_arviz(self, num_draws=num_draws, key=key, posterior_predictive=posterior_predictive,
                        log_likelihood=log_likelihood, dims=dims, coords=coords, psis_reweight=psis_reweight)

    def diagnose(self, num_draws: int = 4000, key: Optional[jax.Array] = None, window: Optional[int] = None):
        """PSIS k-hat, ELBO convergence, the starting stage, rejected steps and wall time; see
        :func:`vibench.diagnostics.diagnose`."""
        from .diagnostics import diagnose

        return diagnose(self, num_draws, key, window)

    def khat(self, num_draws: int = 4000, key: Optional[jax.Array] = None):
        """PSIS Pareto k-hat of the guide against the model, with its reading (point guides: ValueError)."""
        from .diagnostics import khat

        return khat(self, num_draws, key)

    def save(self, path) -> None:
        """Write a checkpoint to ``path`` (see :mod:`vibench.checkpoint`); no code is stored."""
        from .checkpoint import save

        save(self, path)

    @classmethod
    def load(cls, path, model: Model, optimizer: Optional[optax.GradientTransformation] = None) -> "Fit":
        """The fit saved at ``path``, for ``model`` (a custom optax optimizer must be passed again)."""
        from .checkpoint import load

        return load(path, model, optimizer=optimizer)

    def __repr__(self) -> str:
        last = np.asarray(self.trace.elbo)[~np.asarray(self.trace.rejected)][-100:]
        elbo = f"{np.mean(last):.4g}" if last.size else "n/a"
        return (
            f"Fit({self.model.name!r}, guide={self.config.guide!r}, objective={self.config.objective!r}, "
            f"steps={self.num_steps}, elbo~{elbo}, rejected={self.num_rejected}, {self.stop_reason})"
        )


def fit(
    model: Model,
    config: Optional[Config] = None,
    *,
    init: Optional[Union[Fit, str]] = None,
    init_values: Optional[dict] = None,
    optimizer: Optional[optax.GradientTransformation] = None,
    callbacks: Sequence[Callback] = (),
    progress_bar: bool = True,
    **overrides,
) -> Fit:
    """Fit ``model`` with ``config`` (keyword ``overrides`` replace its fields).

    ``init=fit`` resumes: ``config.num_steps`` more steps from that fit's state, the trace appended
    (a string, ``init="prior"``, instead overrides ``Config.init``, the starting stage).
    ``init_values`` (constrained, by site) sets where the starting stage begins (the MAP search
    of ``"laplace"``/``"map"``, the guide itself under ``"prior"``). ``optimizer`` takes any
    optax transformation (the Config then records ``"custom"``; its learning rate is not live).
    Each callback gets ``(step, trace_so_far, state)`` after every chunk; returning True stops.
    A callback that raises stops the run after that chunk: the exception is re-raised as a
    :class:`CallbackError` whose ``.fit`` holds the fit so far (resume it with ``init=err.fit``).
    """
    check_model(model, "fit")
    if isinstance(init, str):  # fit(model, init="prior") names the Config's starting stage
        overrides, init = {**overrides, "init": init}, None
    config = _resolve_config(config, optimizer, overrides)
    if init is not None and optimizer is None and config.optimizer == CUSTOM:
        optimizer = init.optimizer
    engine = make_engine(model, config, optimizer)
    hyper = hyper_from_config(config, model)
    began = time.perf_counter()
    if init is None:
        state, start = start_state(model, config, engine, hyper, init_values)
        history, elapsed = None, 0.0
        if start.message:
            warnings.warn(f"vibench start: {start.message}", stacklevel=2)
    else:
        if init_values is not None:
            raise ValueError("pass either init (a Fit to resume) or init_values, not both")
        state, start = _resume_state(init, model, config, engine, hyper, optimizer), init.start
        history, elapsed = init.trace, init.wall_time

    memory = None if init is None else init.memory
    runner = _Runner(state, config, history, memory, callbacks, progress_bar, model.name,
                     plateau_signal(model, config), float(hyper.learning_rate))
    try:
        runner.run(engine)
    finally:
        runner.close()
    result = Fit(
        model=model,
        config=config,
        state=runner.state,
        trace=runner.trace(),
        wall_time=elapsed + time.perf_counter() - began,
        stop_reason=runner.stop_reason,
        optimizer=optimizer,
        start=start,
        memory=runner.memory,
    )
    if runner.error is not None:
        callback, step, err = runner.error
        raise CallbackError(
            f"callback {_name(callback)} raised {type(err).__name__} after step {step}: {err}. The run "
            "stopped there; the fit so far is this error's .fit (resume with vb.fit(model, config, init=err.fit))",
            result,
        ) from err
    return result


def start_fit(model: Model, config: Optional[Config] = None, init_values: Optional[dict] = None, **overrides) -> Fit:
    """A fit of zero steps: the guide as the starting stage (``config.init``) leaves it.

    ``fit(model, config, init=start_fit(model, config))`` runs exactly as ``fit(model, config)``
    does; the Workbench uses this to show the starting stage apart from training. The first chunk
    is compiled while the stage runs, so ``wall_time`` counts both. Unlike :func:`fit` it does
    not warn when the stage falls back: ``.start.message`` says why.
    """
    check_model(model, "start_fit")
    config = _resolve_config(config, None, overrides)
    began = time.perf_counter()
    state, start = start_state(model, config, make_engine(model, config), hyper_from_config(config, model), init_values)
    empty = Trace(*(np.zeros(0, dtype) for dtype in (np.float32, np.float32, np.float32, bool)))
    return Fit(model, config, state, empty, time.perf_counter() - began, stop_reason="started", start=start)


class CallbackError(RuntimeError):
    """A callback raised. The run stopped after the chunk the callback was shown, and ``fit`` is the
    :class:`Fit` as of that chunk (``stop_reason == "error"``); the callback's exception is the
    ``__cause__``."""

    def __init__(self, message: str, fit: Fit):
        super().__init__(message)
        self.fit = fit


def start_state(model: Model, config: Config, engine, hyper, init_values: Optional[dict] = None,
                compile_first_chunk: bool = True) -> tuple:
    """``(State, Start)``: the first state of a new fit, after the starting stage that
    ``config.init`` names. With ``compile_first_chunk`` the engine's first ``run_chunk`` compiles
    while the stage runs (a caller that runs another program passes False)."""
    init_key = jax.random.key(config.seed)
    # The RBG generator compiles several times faster than threefry on CPU, for the same noise
    # quality a VI gradient needs.
    run_key = jax.random.key(config.seed, impl="rbg")

    def initial(start):
        return engine.init(init_params(model, config, init_key, start=start), run_key, hyper, start.precond)

    if not compile_first_chunk:
        start = find_start(model, config, init_values)
        return initial(start), start
    # Shapes do not depend on where the start lands: the first chunk compiles in the background,
    # from the state's shapes alone, while the starting stage runs and the state is built.
    plain = find_start(model, config, init_values, method="prior")
    first = min(config.chunk_size, config.num_steps)
    compiling = engine.run_chunk.compile(jax.eval_shape(lambda: initial(plain)), first, wait=False)
    start = plain if start_method(config) == "prior" else find_start(model, config, init_values)
    state = initial(start)
    for future in compiling:
        future.result()
    return state, start


class Memory(NamedTuple):
    """What the stopping rules carry from one chunk to the next; a resumed fit starts from it."""

    last_chunk: tuple  # (mean, squared standard error) of the last chunk's accepted ELBOs: tol's reference
    level: Optional[tuple]  # the plateau rule's reference: the last chunk that was a real improvement
    waited: int  # chunks since that level without a real improvement


def chunk_stats(elbo: np.ndarray) -> tuple:
    """``(centre, squared standard error)`` of a chunk's accepted per-step ELBOs, as Python floats:
    the median and its standard error from the median absolute deviation. Robust, because a poor
    guide's per-step ELBOs are heavy-tailed: a single draw 1e7 below the rest made a chunk's mean
    and variance useless, and the plateau rule read a steep climb as a plateau."""
    elbo = np.asarray(elbo, np.float64)
    centre = float(np.median(elbo))
    spread = 1.4826 * float(np.median(np.abs(elbo - centre)))
    return centre, (1.2533 * spread) ** 2 / max(len(elbo), 1)


class Plateau:
    """The ``"plateau"`` schedule: halve the learning rate once the chunk-median ELBO has failed
    ``patience`` chunks running to rise above its last level by two standard errors, down to
    ``final_lr_ratio`` of the base; a plateau at the floor means converged.

    Comparing against the last level that was a real improvement, not the previous chunk, lets a
    slow steady climb (a funnel's neck) accumulate until it counts instead of reading as a plateau.

    A resumed run passes what the rule knew (from ``Fit.memory``): ``current``, the rate it had
    decayed to, ``level``, the :func:`chunk_stats` of its last real improvement, and ``waited``,
    the chunks since then.
    """

    def __init__(
        self,
        learning_rate: float,
        final_lr_ratio: float,
        patience: int = 2,
        *,
        current: Optional[float] = None,
        level: Optional[tuple] = None,
        waited: int = 0,
    ):
        self.learning_rate = float(learning_rate if current is None else current)
        self.floor = float(learning_rate) * final_lr_ratio
        self.patience = patience
        self._level: Optional[tuple] = None if level is None else tuple(level)
        self._waited = int(waited)

    @property
    def level(self) -> Optional[tuple]:
        """``(mean, squared standard error)`` of the last chunk that was a real improvement."""
        return self._level

    @property
    def waited(self) -> int:
        """Chunks since :attr:`level` without a real improvement."""
        return self._waited

    def update(self, elbo: np.ndarray, paired: bool = False) -> tuple:
        """``elbo``: the accepted per-step ELBOs of the last chunk, or with ``paired`` the ELBO of
        each of a fixed set of particles (the same noise every chunk, so that differences between
        chunks are compared draw by draw). Returns ``(learning_rate or None if unchanged, converged)``."""
        elbo = np.asarray(elbo, np.float64)
        # A paired level keeps its particles' values after (mean, squared standard error).
        current = chunk_stats(elbo) + (tuple(map(float, elbo)) if paired else ())
        level = self._level
        if level is None:
            improved = True
        elif paired:
            change = elbo - np.asarray(level[2:])
            improved = np.mean(change) > 2.0 * np.std(change) / np.sqrt(len(change))
        else:
            improved = current[0] - level[0] > 2.0 * np.sqrt(current[1] + level[1])
        if improved:
            self._level, self._waited = current, 0
            return None, False
        self._waited += 1
        if self._waited < self.patience:
            return None, False
        self._level, self._waited = current, 0
        if self.learning_rate <= self.floor * (1 + 1e-6):
            return None, True
        self.learning_rate = max(0.5 * self.learning_rate, self.floor)
        return self.learning_rate, False


def plateau_signal(model: Model, config: Config) -> Optional[Callable[[State], np.ndarray]]:
    """What the plateau rule reads for a subsampled model: the per-step ELBOs of minibatches are
    too noisy to tell a fit that still improves from one that stopped, so it reads the full-data
    ELBO of 32 fixed particles instead (``(32,)``, the same noise each chunk). None otherwise."""
    if not model.batch_size or config.schedule != "plateau" or get_guide(config.guide).point:
        return None
    values = _elbo_values_fn(model, get_guide(config.guide), PLATEAU_PARTICLES)
    key = jax.random.key(config.seed)
    return lambda state: np.asarray(values(state.params, state.precond, key))


PLATEAU_PARTICLES = 32


class _Runner:
    """The chunk loop's mutable bookkeeping: state, a preallocated host trace, the progress bar."""

    def __init__(self, state, config, history, memory, callbacks, progress_bar, name, plateau_signal=None,
                 base_learning_rate=None):
        self.state, self.config, self.callbacks = state, config, tuple(callbacks)
        self.memory: Optional[Memory] = memory
        self.error: Optional[tuple] = None  # (callback, step, exception) when a callback raised
        self.plateau_signal = plateau_signal
        self.base_learning_rate = config.learning_rate if base_learning_rate is None else base_learning_rate
        offset = 0 if history is None else len(history.loss)
        total = offset + config.num_steps
        self._buffers = Trace(
            np.full(total, np.nan, np.float32), np.full(total, np.nan, np.float32),
            np.full(total, np.nan, np.float32), np.zeros(total, bool),
        )
        if history is not None:
            for buf, old in zip(self._buffers, history):
                buf[:offset] = old
        self._filled = self._start = offset
        self._rejected = int(np.sum(self._buffers.rejected[:offset]))
        self.stop_reason = "completed"
        self.remaining = config.num_steps
        self._nothing_trained = get_guide(config.guide).fitted_on == "start"  # fitted by its start
        self._plateau = None
        if config.schedule == "plateau":
            self._plateau = Plateau(
                self.base_learning_rate,
                config.final_lr_ratio,
                current=float(state.hyper.learning_rate),
                level=None if memory is None else memory.level,
                waited=0 if memory is None else memory.waited,
            )
        self._bar = tqdm(total=config.num_steps, desc=f"vibench {name}", disable=not progress_bar, leave=True)

    def trace(self) -> Trace:
        return Trace(*(buf[: self._filled] for buf in self._buffers))

    def run(self, engine) -> None:
        """Run chunks until done or stopped. After each chunk everything the next one depends on
        (state, decayed learning rate, the rules' memory) is committed before any callback runs,
        so a Ctrl-C at any point leaves a fit that ``init=`` continues exactly."""
        try:
            n = min(self.config.chunk_size, self.remaining)
            pending = engine.run_chunk(self.state, n)
            while True:
                state, chunk = pending
                following = min(self.config.chunk_size, self.remaining - n)
                # Queue the next chunk on the state this one will leave before reading this one
                # back: the device computes it while the host records this one. It is dropped
                # if the host changes the state (a learning-rate decay) or stops.
                ahead = engine.run_chunk(state, following) if following > 0 else None
                # One transfer per chunk, not one per step.
                if self.record(state, jax.device_get(chunk)) or ahead is None:
                    return
                pending = ahead if self.state is state else engine.run_chunk(self.state, following)
                n = following
        except KeyboardInterrupt:
            self.stop_reason = "interrupted"

    def record(self, state: State, chunk: Trace) -> bool:
        """Commit one chunk: ``state`` after it and its ``chunk`` trace (host arrays ``(n,)``).
        Applies the stopping rules and the plateau decay; True when the run stops here."""
        n = len(chunk.loss)
        for buf, values in zip(self._buffers, chunk):
            buf[self._filled : self._filled + n] = values
        accepted = ~chunk.rejected
        if not accepted.any():
            self.state, self._filled = state, self._filled + n
            self._rejected += n
            self._bar.update(n)
            self._bar.set_postfix(elbo="n/a", rejected=self._rejected, refresh=False)
            self._diverged(chunk)
            return True
        current = chunk_stats(chunk.elbo[accepted])
        converged = False
        plateau = self._plateau
        if plateau is not None:
            if self.plateau_signal is None:
                learning_rate, converged = plateau.update(chunk.elbo[accepted])
            else:
                learning_rate, converged = plateau.update(self.plateau_signal(state), paired=True)
            if learning_rate is not None:
                state = state._replace(hyper=state.hyper._replace(learning_rate=np.float32(learning_rate)))
        if self._nothing_trained:
            converged = True  # one chunk of ELBO estimates says all there is
        if self.config.tol is not None and self.memory is not None:
            previous_mean = self.memory.last_chunk[0]
            converged |= abs(current[0] - previous_mean) <= self.config.tol * max(abs(previous_mean), 1e-12)
        memory = Memory(current, None, 0) if plateau is None else Memory(current, plateau.level, plateau.waited)
        # One assignment: the state, the trace length and the rules' memory move together.
        self.state, self._filled, self.memory = state, self._filled + n, memory
        self.remaining -= n
        self._rejected += int(np.sum(chunk.rejected))
        self._bar.update(n)
        self._bar.set_postfix(elbo=f"{current[0]:.4g}", rejected=self._rejected, refresh=False)
        if self._callbacks_stop():
            return True
        if converged:
            self.stop_reason = "converged"
            return True
        return False

    def _callbacks_stop(self) -> bool:
        for callback in self.callbacks:
            try:
                stop = callback(self._filled, self.trace(), self.state)
            except Exception as err:  # noqa: BLE001 - re-raised by fit() with the fit so far
                self.error, self.stop_reason = (callback, self._filled, err), "error"
                return True
            if stop:
                self.stop_reason = "callback"
                return True
        return False

    def _diverged(self, chunk) -> None:
        if not np.all(np.isfinite(chunk.loss)):
            cause = "the objective is not finite at the guide's draws (the model's log density is NaN or infinite there)"
        else:
            cause = "the gradient (or the parameter update) is not finite"
        if self._filled - len(chunk.loss) == self._start:
            raise FloatingPointError(
                f"all {len(chunk.loss)} steps of the first chunk were rejected: {cause}. Check the model "
                "near its initial point, or try a smaller learning_rate / init_scale"
            )
        self.stop_reason = "diverged"
        warnings.warn(f"stopped after {self._filled} steps: a whole chunk was rejected ({cause}); the fit keeps the last good state")

    def close(self) -> None:
        self._bar.close()


def _resolve_config(config, optimizer, overrides) -> Config:
    if config is None:
        config = Config()
    elif not isinstance(config, Config):
        raise TypeError(f"config must be a vibench.Config, got {type(config).__name__}")
    if optimizer is not None:
        if not isinstance(optimizer, optax.GradientTransformation):
            raise TypeError(f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
        overrides = {**overrides, "optimizer": CUSTOM}
    return config.replace(**overrides) if overrides else config


def _resume_state(init, model, config, engine, hyper, optimizer) -> State:
    if not isinstance(init, Fit):
        raise TypeError(f"init must be a Fit to resume from, got {type(init).__name__}")
    if init.model is not model and (init.model.dim != model.dim or init.model.sites != model.sites):
        raise ValueError(
            f"init is a fit of another model ({init.model!r}); it cannot start a fit of {model!r}"
        )
    if init.config.guide != config.guide:
        raise ValueError(
            f"init was fitted with guide {init.config.guide!r}; resuming needs the same guide, got "
            f"{config.guide!r} (start a new fit to change the family)"
        )
    state = init.state
    changed = (init.config.optimizer, init.config.optimizer_options) != (config.optimizer, config.optimizer_options)
    if changed or (config.optimizer == CUSTOM and init.optimizer is not optimizer):
        # Another optimizer's moments mean nothing to this one: start its state afresh.
        state = state._replace(opt_state=engine.optimizer.init(state.params))
    if config.schedule == "plateau" and init.config.learning_rate == config.learning_rate:
        # Carry on at the step size the plateau rule had decayed to, not back at the base.
        hyper = hyper._replace(learning_rate=np.asarray(state.hyper.learning_rate, np.float32))
    return state._replace(hyper=hyper)


def _check_count(name: str, n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= 1, got {n!r} of type {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {n!r}")


def _name(fn) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


def _default_key(key):
    return jax.random.key(0) if key is None else key


def _draw_fn(model, guide, n):
    def build():
        def draw(params, precond, key):
            u = guide.transform(params, jax.random.normal(key, (n, guide.noise_dim(params))))
            return precond.to_z(u)

        return jax.jit(draw)

    return cached(model, ("draw", guide.name, int(n)), build)


def _sample_fn(model, guide, n):
    def build():
        draw = _draw_fn(model, guide, n)
        return jax.jit(lambda params, precond, key: jax.vmap(model.constrain)(draw(params, precond, key)))

    return cached(model, ("sample", guide.name, int(n)), build)


def _log_q_fn(model, guide):
    def build():
        return jax.jit(lambda params, precond, z: guide.log_prob(params, precond.to_u(z)) - precond.log_det)

    return cached(model, ("log_q", guide.name), build)


def _elbo_values_fn(model, guide, num_particles):
    """``fn(params, precond, key) -> (num_particles,)``: log p - log q at the guide's draws, on all
    of the model's data (point guides: the log joint at the point)."""
    batch = min(num_particles, 256)
    num_batches = -(-num_particles // batch)

    def build():
        def one_batch(params, precond, key):
            whitened = Whitened(model, precond)
            if guide.point:
                return jnp.full((batch,), whitened.log_joint(params.loc))
            u, log_q = transform_log_prob(guide, params, jax.random.normal(key, (batch, guide.noise_dim(params))))
            return jax.vmap(whitened.log_density)(u) - log_q

        def values(params, precond, key):
            # Batches bound the memory of a large particle count.
            keys = jax.random.split(key, num_batches)
            out = jax.lax.map(lambda k: one_batch(params, precond, k), keys)
            return out.reshape(-1)[:num_particles]

        return jax.jit(values)

    return cached(model, ("elbo_values", guide.name, int(num_particles)), build)


def _elbo_fn(model, guide, num_particles):
    def build():
        values = _elbo_values_fn(model, guide, num_particles)
        return jax.jit(lambda params, precond, key: jnp.mean(values(params, precond, key)))

    return cached(model, ("elbo", guide.name, int(num_particles)), build)
