"""Diagnostics of a fitted guide: PSIS k-hat, ELBO convergence, gradient variance, a reference check.

- :func:`khat`: the Pareto k-hat of the importance ratios p(y, z) / q(z) (Yao et al. 2018,
  https://arxiv.org/abs/1802.02538), Pareto-smoothed by ArviZ (arviz-stats on 1.x), with its reading.
- :func:`elbo_convergence`: the change of the ELBO between the last two windows of the trace.
- :func:`diagnose`: both of those plus the starting stage, rejected steps and wall time, as one
  :class:`Diagnosis` (``vibench.export.summary`` puts it beside ArviZ's summary table).
- :func:`gradient_variance` (from ``vibench.gradients``): the spread of the objective's gradient
  at the current guide.
- :func:`compare` / :func:`plot_compare` (from ``vibench.reference``): the fit against reference draws.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import numpy as np

from ._checks import as_key, check_count
from .arviz_compat import psislw
from .evaluation import Draws, importance_draws
from .gradients import GradientVariance, gradient_variance
from .reference import compare, plot_compare

__all__ = [
    "Draws",
    "KHat",
    "Convergence",
    "Diagnosis",
    "GradientVariance",
    "importance_draws",
    "psis",
    "psis_shift",
    "SHIFT_THRESHOLD",
    "khat_reading",
    "khat",
    "elbo_convergence",
    "diagnose",
    "gradient_variance",
    "compare",
    "plot_compare",
]


class KHat(NamedTuple):
    """A Pareto k-hat with its reading: ``"good"``, ``"usable"`` or ``"unreliable"``."""

    khat: float
    reading: str
    threshold: float  # min(1 - 1 / log10(num_draws), 0.7): above it the ratios are unreliable
    num_draws: int

    def __str__(self) -> str:
        return f"k-hat {self.khat:.2f} ({self.reading}; threshold {self.threshold:.2f} for {self.num_draws} draws)"


class Convergence(NamedTuple):
    """The ELBO over the last two windows of accepted steps (rejected steps left out)."""

    elbo: float  # mean ELBO over the last window
    elbo_sd: float  # its step-to-step standard deviation there
    change: float  # last window's mean minus the one before
    relative_change: float  # |change| / |mean of the window before|
    z_change: float  # change in standard errors of the Monte Carlo noise
    window: int
    converged: bool  # relative_change <= rtol, or |z_change| <= 2 (no trend above the noise)


def psis(log_weights) -> tuple[np.ndarray, float]:
    """Pareto-smoothed log weights ``(n,)`` (normalised to log-sum-exp 0) and the k-hat, by ArviZ,
    of log importance ratios ``log_weights`` ``(n,)``.

    Ratios constant to 1e-4 in log (an exact guide, up to float32 rounding) give k-hat ``-inf``.
    """
    log_weights = np.asarray(log_weights, np.float64)
    if log_weights.ndim != 1 or log_weights.size < 2:
        raise ValueError(f"psis needs a 1-D array of at least 2 log weights, got shape {log_weights.shape}")
    if np.any(np.isnan(log_weights)) or not np.any(np.isfinite(log_weights)):
        raise ValueError("the log importance weights contain NaN (or none is finite): the model's log density is not finite at the guide's draws")
    finite = log_weights[np.isfinite(log_weights)]
    if np.ptp(finite) < 1e-4 and finite.size == log_weights.size:
        # Constant ratios: the guide equals the posterior up to float32 rounding. ArviZ's GPD fit
        # sees a tail of ties there and answers inf; a bounded ratio has k-hat -inf.
        return np.full(log_weights.shape, -np.log(log_weights.size)), float("-inf")
    return psislw(log_weights)


SHIFT_THRESHOLD = 0.3  # guide sds between the guide's means and its importance-weighted means


def psis_shift(values, smoothed_log_weights) -> float:
    """The largest ``|mean - weighted mean| / sd`` over the columns of ``values`` ``(S, P)``
    (or ``(S, ...)``, flattened), weighted by ``exp(smoothed_log_weights)`` ``(S,)`` (normalised,
    as :func:`psis` returns them): where importance sampling says the guide's means are off."""
    values = np.asarray(values, np.float64).reshape(len(smoothed_log_weights), -1)
    weights = np.exp(np.asarray(smoothed_log_weights, np.float64))
    sd = values.std(0)
    moved = np.abs(weights @ values - values.mean(0))
    return float(np.max(np.where(sd > 0, moved / np.where(sd > 0, sd, 1.0), 0.0))) if values.size else 0.0


def khat_reading(k: float, num_draws: int) -> KHat:
    """Read a k-hat: good below 0.5; usable up to min(1 - 1/log10(S), 0.7); unreliable above it
    (Vehtari et al. 2024, the sample-size-dependent threshold of current loo)."""
    threshold = min(1.0 - 1.0 / np.log10(num_draws), 0.7) if num_draws > 10 else 0.0
    if np.isnan(k) or k > threshold:
        reading = "unreliable"
    elif k <= 0.5:
        reading = "good"
    else:
        reading = "usable"
    return KHat(float(k), reading, float(threshold), int(num_draws))


def khat(fit, num_draws: int = 4000, key: Optional[jax.Array] = None) -> KHat:
    """PSIS k-hat of the guide against the model from ``num_draws`` guide draws.

    A point (Delta) guide has no density, so its ratios and k-hat are undefined: ValueError.
    """
    _check_density(fit)
    draws = importance_draws(fit, as_key(key), num_draws)
    return khat_reading(psis(draws.log_weight)[1], num_draws)


def elbo_convergence(trace, window: Optional[int] = None, rtol: float = 1e-3) -> Convergence:
    """Compare the mean ELBO of the last ``window`` accepted steps with the ``window`` before.

    ``window`` defaults to a tenth of the accepted steps (at least 10, at most 1000).
    """
    elbo = np.asarray(trace.elbo, np.float64)[~np.asarray(trace.rejected, bool)]
    if window is None:
        window = int(np.clip(elbo.size // 10, 10, 1000))
    check_count("window", window)
    if elbo.size < 2 * window:
        raise ValueError(f"elbo_convergence needs at least 2 * window = {2 * window} accepted steps, the trace has {elbo.size}")
    last, before = elbo[-window:], elbo[-2 * window : -window]
    change = float(last.mean() - before.mean())
    relative = abs(change) / max(abs(before.mean()), 1e-12)
    stderr = np.sqrt((last.var(ddof=1) + before.var(ddof=1)) / window)
    z_change = change / stderr if stderr > 0 else (0.0 if change == 0 else np.inf)
    converged = bool(relative <= rtol or abs(z_change) <= 2.0)
    return Convergence(float(last.mean()), float(last.std(ddof=1)), change, float(relative), float(z_change), window, converged)


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """A fit's diagnostics at a glance; ``khat`` is None for point guides.

    ``psis_shift`` (None for point guides) is :func:`psis_shift` of the same draws: how far the
    guide's means lie from its Pareto-smoothed importance-weighted means, in guide sds. Above
    :data:`SHIFT_THRESHOLD` the fit is biased even where k-hat says the guide is a usable proposal
    (a Laplace fit whose mode is not the mean): the reweighted draws are the better estimate.

    ``start_method``, ``start_message`` and ``start_seconds`` describe the starting stage
    (:class:`vibench.start.Start`; ``"laplace"``, ``"laplace-diagonal"``, ``"map"`` or ``"prior"``,
    why it fell back if it did, its time, part of ``wall_time``); None for a fit made without one.
    """

    model: str
    guide: str
    khat: Optional[KHat]
    convergence: Optional[Convergence]
    num_steps: int
    num_rejected: int
    wall_time: float
    stop_reason: str
    start_method: Optional[str] = None
    start_message: Optional[str] = None
    start_seconds: Optional[float] = None
    psis_shift: Optional[float] = None

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["khat"] = None if self.khat is None else self.khat._asdict()
        out["convergence"] = None if self.convergence is None else self.convergence._asdict()
        return out

    def __repr__(self) -> str:
        c = self.convergence
        if c is None:
            elbo = "ELBO        too few accepted steps to judge convergence"
        else:
            verdict = "converged" if c.converged else "still changing"
            elbo = (
                f"ELBO        {c.elbo:.6g} (sd {c.elbo_sd:.3g}) over the last {c.window} steps; {verdict}: "
                f"change {c.change:+.3g} ({c.relative_change:.2g} relative, {c.z_change:+.2g} standard errors)"
            )
        k = "undefined: a point guide has no density" if self.khat is None else str(self.khat)
        if self.psis_shift is None:
            shift = "undefined: a point guide has no density"
        elif not np.isfinite(self.psis_shift):
            shift = "undefined: the importance weights are not finite"
        elif self.psis_shift > SHIFT_THRESHOLD:
            shift = (f"{self.psis_shift:.2f} guide sds (biased: above {SHIFT_THRESHOLD}; the PSIS-reweighted draws, "
                     "to_arviz(psis_reweight=True), are the better estimate where k-hat is usable)")
        else:
            shift = f"{self.psis_shift:.2f} guide sds (at most {SHIFT_THRESHOLD})"
        if self.start_method is None:
            start = "not recorded"
        else:
            start = f"{self.start_method} ({self.start_seconds:.2f} s)"
            if self.start_message:
                start += f": {self.start_message}"
        return "\n".join([
            f"Diagnosis of {self.model!r} with guide {self.guide!r}",
            f"  PSIS        {k}",
            f"  mean shift  {shift}",
            f"  {elbo}",
            f"  start       {start}",
            f"  steps       {self.num_steps} ({self.num_rejected} rejected as not finite), {self.stop_reason}",
            f"  wall time   {self.wall_time:.2f} s (the start included)",
        ])


def diagnose(fit, num_draws: int = 4000, key: Optional[jax.Array] = None, window: Optional[int] = None) -> Diagnosis:
    """k-hat and the PSIS mean shift (from ``num_draws`` guide draws), ELBO convergence, the
    starting stage, rejected steps and wall time of ``fit``."""
    k = shift = None
    if not fit.guide.point:
        draws = importance_draws(fit, as_key(key), num_draws)
        try:
            smoothed, k_value = psis(draws.log_weight)
            k, shift = khat_reading(k_value, num_draws), psis_shift(draws.z, smoothed)
        except ValueError:  # NaN ratios: the model's density failed at some draws
            k, shift = khat_reading(float("nan"), num_draws), float("nan")
    try:
        convergence = elbo_convergence(fit.trace, window)
    except ValueError:
        convergence = None
    start = fit.start
    return Diagnosis(fit.model.name, fit.config.guide, k, convergence, fit.num_steps, fit.num_rejected,
                     float(fit.wall_time), fit.stop_reason,
                     start_method=None if start is None else start.method,
                     start_message=None if start is None else start.message,
                     start_seconds=None if start is None else float(start.seconds),
                     psis_shift=shift)


def _check_density(fit) -> None:
    if fit.guide.point:
        raise ValueError(
            f"guide {fit.guide.name!r} is a point (a MAP fit): it has no density, so the importance "
            "ratios p/q and their k-hat are undefined; fit a meanfield, lowrank or fullrank guide"
        )
