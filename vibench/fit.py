"""``fit``: fit a model, resume a fit, or take the starting stage alone.

``fit`` resolves the Config into a :class:`~vibench.plan.Plan` once, builds (or reuses) the engine,
runs the starting stage (:mod:`vibench.start`) and drives chunks of ``config.chunk_size`` steps
through the chunk loop (:mod:`vibench.loop`). Ctrl-C returns the fit as of the last finished chunk;
an exception in a callback stops the run there too and is re-raised as a
:class:`~vibench.result.CallbackError` that carries that fit.
"""

from __future__ import annotations

import time
import warnings
from typing import Optional, Sequence, Union

import jax
import numpy as np
import optax

from .config import CUSTOM, Config, as_config
from .engine import init_params, make_engine
from .state import State, Trace, hyper_from_config
from .loop import Callback, Run, drive, plateau_signal
from .model import Model, check_model
from .plan import Plan, as_plan, resolve
from .result import CallbackError, Fit
from .start import find_start

__all__ = ["fit", "start_fit", "start_state", "resolve_config"]


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
    config = resolve_config(config, optimizer, overrides)
    if init is not None and optimizer is None and config.optimizer == CUSTOM:
        optimizer = init.optimizer
    plan = resolve(config, optimizer)
    engine = make_engine(model, plan)
    hyper = hyper_from_config(plan, model)
    began = time.perf_counter()
    if init is None:
        state, start = start_state(model, plan, engine, hyper, init_values)
        history, elapsed = None, 0.0
        if start.message:
            warnings.warn(f"vibench start: {start.message}", stacklevel=2)
    else:
        if init_values is not None:
            raise ValueError("pass either init (a Fit to resume) or init_values, not both")
        state, start = _resume_state(init, model, plan, engine, hyper), init.start
        history, elapsed = init.trace, init.wall_time

    run = Run(state, plan, history, None if init is None else init.memory, plateau_signal(model, plan),
              float(hyper.learning_rate))
    drive(engine, [run], callbacks=tuple(callbacks), progress_bar=progress_bar, desc=f"vibench {model.name}")
    result = Fit(
        model=model,
        config=config,
        state=run.state,
        trace=run.trace(),
        wall_time=elapsed + time.perf_counter() - began,
        stop_reason=run.stop_reason,
        optimizer=optimizer,
        start=start,
        memory=run.memory,
        plan=plan,
    )
    if run.error is not None:
        callback, step, err = run.error
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
    plan = resolve(resolve_config(config, None, overrides))
    began = time.perf_counter()
    state, start = start_state(model, plan, make_engine(model, plan), hyper_from_config(plan, model), init_values)
    empty = Trace(*(np.zeros(0, dtype) for dtype in (np.float32, np.float32, np.float32, bool)))
    return Fit(model, plan.config, state, empty, time.perf_counter() - began, stop_reason="started", start=start,
               plan=plan)


def start_state(model: Model, plan, engine, hyper, init_values: Optional[dict] = None,
                compile_first_chunk: bool = True) -> tuple:
    """``(State, Start)``: the first state of a new fit with ``plan`` (a Plan or a Config), after
    the starting stage ``plan.start``. With ``compile_first_chunk`` the engine's first
    ``run_chunk`` compiles while the stage runs (a caller that runs another program passes False)."""
    plan = as_plan(plan)
    config = plan.config
    init_key = jax.random.key(config.seed)
    # The RBG generator compiles several times faster than threefry on CPU, for the same noise
    # quality a VI gradient needs.
    run_key = jax.random.key(config.seed, impl="rbg")

    def initial(start):
        return engine.init(init_params(model, plan, init_key, start=start), run_key, hyper, start.precond)

    if not compile_first_chunk:
        start = find_start(model, plan, init_values)
        return initial(start), start
    # Shapes do not depend on where the start lands: the first chunk compiles in the background,
    # from the state's shapes alone, while the starting stage runs and the state is built.
    plain = find_start(model, plan, init_values, method="prior")
    first = min(config.chunk_size, config.num_steps)
    compiling = engine.run_chunk.compile(jax.eval_shape(lambda: initial(plain)), first, wait=False)
    start = plain if plan.start == "prior" else find_start(model, plan, init_values)
    state = initial(start)
    for future in compiling:
        future.result()
    return state, start


def resolve_config(config: Optional[Config], optimizer: Optional[optax.GradientTransformation] = None,
                   overrides: Optional[dict] = None) -> Config:
    """The Config a fit runs with: ``config`` (default ``Config()``) with ``overrides`` applied, and
    ``optimizer "custom"`` when an optax ``optimizer`` is passed."""
    config = as_config(config)
    overrides = dict(overrides or {})
    if optimizer is not None:
        if not isinstance(optimizer, optax.GradientTransformation):
            raise TypeError(f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
        overrides = {**overrides, "optimizer": CUSTOM}
    return config.replace(**overrides) if overrides else config


def _resume_state(init, model, plan: Plan, engine, hyper) -> State:
    config, optimizer = plan.config, plan.optimizer
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


def _name(fn) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
