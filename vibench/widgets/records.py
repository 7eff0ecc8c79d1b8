"""Finished runs kept for comparison: a :class:`RunRecord` per run, with the numbers that rank
runs (a precise ELBO, PSIS k-hat) and a label naming what distinguishes its Config."""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax

from ..config import Config
from ..result import Fit

__all__ = ["RunRecord", "config_label", "score"]


class RunRecord(NamedTuple):
    """A finished run, kept for comparison: its Fit, a label naming its config, a precise ELBO
    (``Fit.elbo`` with many particles, comparable across runs), wall time (the start and compiles
    included), steady training steps/s (between chunks, compiles excluded; NaN for runs of one
    chunk) and the PSIS k-hat (None for point guides).

    A run of a launch (:meth:`Runner.run_many`) is labelled by what varied first (``"seed 4 | ..."``);
    its wall time is the whole launch's, and its steps/s its steps over that time (the starts and
    the compile included: ``fit_many`` reports no chunk times)."""

    label: str
    fit: Fit
    elbo: float
    wall_time: float
    steps_per_second: float
    khat: Optional[float]


def score(fit: Fit, label: str, steps_per_second: float, elbo_particles: int, khat_draws: int) -> RunRecord:
    """The :class:`RunRecord` of a finished ``fit``: its ELBO from ``elbo_particles`` particles and
    (unless 0, or a point guide) its k-hat from ``khat_draws`` draws, under a key of its own seed."""
    key = jax.random.key(fit.config.seed + 1)
    elbo = fit.elbo(key, num_particles=elbo_particles)
    khat = None
    if not fit.guide.point and khat_draws:
        khat = fit.khat(num_draws=khat_draws, key=key).khat
    return RunRecord(label, fit, float(elbo), float(fit.wall_time), float(steps_per_second), khat)


def config_label(config: Config, batch_size: Optional[int] = None) -> str:
    """A short human label of what distinguishes runs: ``"fullrank elbo+stl K=8 adam lr=0.01"``."""
    guide = config.guide + (f"(rank={config.rank})" if config.rank else "")
    objective = config.objective + ("+stl" if config.use_stl else "")
    if config.objective == "renyi":
        objective += f"(alpha={config.alpha:g})"
    label = f"{guide} {objective} K={config.num_particles} {config.optimizer} lr={config.learning_rate:g}"
    if config.schedule != "plateau":
        label += f" {config.schedule}"
    if batch_size:
        label += f" B={batch_size}"
    return label
