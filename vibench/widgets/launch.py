"""Launches of restarts: N runs of one Config, differing in one field (seeds, learning rates),
trained at once as one program by ``vb.fit_many``."""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import numpy as np

from ..config import Config
from ..many import fit_many

__all__ = ["Launch", "RESTART_VARIES", "restart_configs", "train_launch"]

#: What a launch of restarts may vary: a name for people -> the Config field (both in RUN_FIELDS).
RESTART_VARIES = {"seed": "seed", "learning rate": "learning_rate"}


class Launch(NamedTuple):
    """One launch of restarts (:meth:`Runner.run_many`), for a throughput report.

    ``config``: the Runner's Config when launched (the restarts' base); ``labels``: what each run
    varied (``"seed 4"``), in launch order; ``runs``: their indices in :attr:`Runner.runs`;
    ``wall_time``: seconds ``fit_many`` took for all of them (starts and compile included);
    ``num_steps``: steps each run trained, ``(N,)``.
    """

    config: Config
    labels: tuple
    runs: tuple
    wall_time: float
    num_steps: tuple

    @property
    def steps_per_second(self) -> float:
        """Steps per second of one run (its mean steps over the launch's wall time)."""
        return float(np.mean(self.num_steps)) / max(self.wall_time, 1e-9)


def restart_configs(config: Config, vary: str, num_runs: int) -> tuple:
    """``num_runs`` Configs that differ from ``config`` in one field, and a label for each.

    ``vary="seed"``: seeds ``config.seed``, ``config.seed + 1``, ... (labels ``"seed 3"``);
    ``vary="learning_rate"``: learning rates log-spaced from ``config.learning_rate / 10`` to
    ``config.learning_rate * 10``, both included (labels ``"lr 3.2e-03"``). Returns
    ``(configs, labels)``, two lists of length ``num_runs``.
    """
    if vary not in RESTART_VARIES.values():
        raise ValueError(f"vary must be one of {list(RESTART_VARIES.values())}, got {vary!r}")
    if isinstance(num_runs, bool) or not isinstance(num_runs, (int, np.integer)) or num_runs < 1:
        raise ValueError(f"num_runs must be an integer >= 1, got {num_runs!r}")
    if vary == "seed":
        configs = [config.replace(seed=config.seed + i) for i in range(num_runs)]
        return configs, [f"seed {c.seed}" for c in configs]
    rates = [float(lr) for lr in np.geomspace(config.learning_rate / 10, config.learning_rate * 10, num_runs)]
    # Two significant digits name up to ~16 rates over two decades apart; more need three.
    labels = [f"lr {lr:.1e}" for lr in rates]
    if len(set(labels)) < num_runs:
        labels = [f"lr {lr:.2e}" for lr in rates]
    return [config.replace(learning_rate=lr) for lr in rates], labels


def train_launch(model, configs: list, labels: list, base: Config, init_values: Optional[dict],
                 keep: Callable[..., Optional[int]]) -> tuple:
    """Train ``configs`` at once with ``vb.fit_many``; hand each fit to ``keep(fit, label,
    steps_per_second)``, which returns its index among the kept runs (None if not kept). Returns
    ``(Launch, message)``, the message saying how it went for a status line."""
    fits = fit_many(model, configs, init_values=init_values, progress_bar=False)
    wall_time = float(fits[0].wall_time)  # every Fit of a launch carries the launch's time
    indices, failed = [], []
    for fit, label in zip(fits, labels):
        try:
            index = keep(fit, label, fit.num_steps / max(wall_time, 1e-9))
        except Exception as err:  # noqa: BLE001 - the other runs are still kept
            failed.append(f"{label}: {type(err).__name__}: {err}")
            continue
        if index is not None:
            indices.append(index)
    launch = Launch(base, tuple(labels), tuple(indices), wall_time, tuple(fit.num_steps for fit in fits))
    message = f"launched {len(fits)} restarts in {wall_time:.2f} s, {launch.steps_per_second:,.0f} steps/s per run"
    if failed:
        message += f" (comparison numbers failed for {'; '.join(failed)})"
    return launch, message
