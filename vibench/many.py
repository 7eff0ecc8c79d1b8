"""``fit_many``: several runs of one program (restarts, seeds, learning rates) as one compiled program.

    fits = vb.fit_many(model, vb.Config(schedule="constant"), seeds=[0, 1, 2])
    fits = vb.fit_many(model, [config.replace(learning_rate=lr) for lr in (1e-3, 1e-2, 1e-1)])

Each run starts as :func:`vibench.fit` would start it (the starting stage runs per run, on the
host); the States are stacked along a leading axis and every chunk of every run is one call of the
engine's ``run_many`` (a ``vmap`` of the chunk's scan). Run ``i`` returns the :class:`Fit` that
``vb.fit(model, configs[i])`` returns, to float rounding: same noise, same stopping rules (the
plateau schedule and ``tol`` decide per run between chunks). A run that stops early keeps its
state and trace as of that chunk; it rides along in the batch, its later steps discarded, until
every run has stopped or ``num_steps`` is reached.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Optional, Sequence, Union

import jax
import numpy as np
import optax

from .config import Config
from .engine import make_engine
from .state import hyper_from_config
from .fit import resolve_config, start_state
from .loop import Run, drive, plateau_signal
from .model import Model, check_model
from .plan import resolve
from .result import Fit

__all__ = ["fit_many", "check_one_program", "RUN_FIELDS"]

# Config fields that may differ between the runs of one fit_many call: runtime numbers of the
# engine (state.Hyper), the starting stage, and the host's stopping rule. Every other field
# shapes the compiled program (or the chunk loop) and must be the same in every run.
RUN_FIELDS = ("seed", "learning_rate", "alpha", "clip_norm", "stl", "warmup_steps", "final_lr_ratio",
              "init", "init_scale", "tol")


def fit_many(
    model: Model,
    configs: Union[Config, Sequence[Config]],
    *,
    seeds: Optional[Sequence[int]] = None,
    init_values: Optional[dict] = None,
    optimizer: Optional[optax.GradientTransformation] = None,
    progress_bar: bool = True,
) -> list:
    """Fit ``model`` once per run, all runs as one vmapped program; a list of :class:`Fit`.

    ``configs`` is either a Config with ``seeds=[...]`` (one run per seed) or a list of Configs
    that differ only in :data:`RUN_FIELDS` (seed, learning_rate, alpha, clip_norm, stl, ...).
    ``init_values`` and ``optimizer`` are those of :func:`vibench.fit`, shared by every run.
    Subsampled models (``batch_size``) are not supported: their minibatch draws under ``vmap``
    would differ from a lone fit's.
    """
    check_model(model, "fit_many")
    configs = [resolve_config(config, optimizer) for config in _run_configs(configs, seeds)]
    check_one_program(configs)
    if model.batch_size:
        raise ValueError(
            f"fit_many does not run subsampled models (model {model.name!r} has batch_size={model.batch_size}): "
            "the RBG generator's minibatch draws change under vmap; fit each run with vb.fit"
        )
    plans = [resolve(config, optimizer) for config in configs]
    engine = make_engine(model, plans[0])
    began = time.perf_counter()
    runs, starts = [], []
    for i, plan in enumerate(plans):
        hyper = hyper_from_config(plan, model)
        # The lone program's first chunk would never run here: do not compile it.
        state, start = start_state(model, plan, engine, hyper, init_values, compile_first_chunk=False)
        if start.message:
            warnings.warn(f"vibench start (run {i}, seed {plan.config.seed}): {start.message}", stacklevel=2)
        runs.append(Run(state, plan, signal=plateau_signal(model, plan), base_learning_rate=float(hyper.learning_rate)))
        starts.append(start)
    drive(engine, runs, stacked=True, progress_bar=progress_bar, desc=f"vibench {model.name} x{len(runs)}")
    wall_time = time.perf_counter() - began
    return [
        Fit(model=model, config=plan.config, state=_on_device(run.state), trace=run.trace(), wall_time=wall_time,
            stop_reason=run.stop_reason, optimizer=optimizer, start=start, memory=run.memory, plan=plan)
        for plan, run, start in zip(plans, runs, starts)
    ]


def _on_device(state):
    # The runs' states were sliced from one host copy of the batch; a Fit holds device arrays.
    return jax.device_put(state)


def _run_configs(configs, seeds) -> list:
    if isinstance(configs, Config):
        if seeds is None:
            raise ValueError("fit_many(model, config) needs seeds=[...], one run per seed; or pass a list of Configs")
        if isinstance(seeds, (int, np.integer)) or not all(isinstance(s, (int, np.integer)) for s in seeds):
            raise TypeError(f"seeds must be a list of integers, got {seeds!r}")
        configs = [configs.replace(seed=int(seed)) for seed in seeds]
    else:
        if seeds is not None:
            raise ValueError("pass seeds=[...] with a single Config; a list of Configs carries its own seeds")
        if not isinstance(configs, (list, tuple)):
            raise TypeError(f"configs must be a vibench.Config (with seeds=) or a list of Configs, got {type(configs).__name__}")
        for i, config in enumerate(configs):
            if not isinstance(config, Config):
                raise TypeError(f"configs[{i}] must be a vibench.Config, got {type(config).__name__}")
        configs = list(configs)
    if not configs:
        raise ValueError("fit_many needs at least one run, got none")
    return configs


def check_one_program(configs: list) -> None:
    """Raise a ValueError naming the first field, outside :data:`RUN_FIELDS`, in which the
    Configs ``configs`` differ: they must make one compiled program to run together."""
    first = configs[0]
    for i, config in enumerate(configs[1:], start=1):
        for field in dataclasses.fields(Config):
            if field.name in RUN_FIELDS:
                continue
            a, b = getattr(first, field.name), getattr(config, field.name)
            if a != b:
                raise ValueError(
                    f"fit_many runs one compiled program: every Config must have the same {field.name!r}, "
                    f"but configs[0] has {a!r} and configs[{i}] has {b!r}; runs may differ only in {list(RUN_FIELDS)}"
                )
