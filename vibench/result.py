"""``Fit``: what a fit returns (the model, the Plan, the engine state and the trace), with the
compiled evaluations it answers from, and ``CallbackError``.

``Fit.summary``, ``to_arviz``, ``diagnose``, ``khat``, ``save`` and ``load`` are one-line
delegations to the free functions of :mod:`vibench.diagnostics`, :mod:`vibench.export` and
:mod:`vibench.checkpoint`, which import this module (not the other way round).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._checks import as_key, check_count
from .config import Config
from .state import Precond, State, Trace
from .evaluation import draw_program, elbo_program, log_q_program, sample_program
from .guides import Guide
from .model import Model
from .plan import Plan, resolve
from .start import Start
from .stopping import Memory

__all__ = ["Fit", "CallbackError"]


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
    memory: Optional[Memory] = None
    plan: Optional[Plan] = dataclasses.field(default=None, repr=False)

    def __post_init__(self):
        # The Plan the fit was made with; one made from another Config (dataclasses.replace with a
        # new config) is resolved afresh, so the two never disagree.
        if self.plan is None or self.plan.config != self.config or self.plan.optimizer is not self.optimizer:
            object.__setattr__(self, "plan", resolve(self.config, self.optimizer))

    @property
    def guide(self) -> Guide:
        """The guide family fitted (as resolved when the fit was made)."""
        return self.plan.guide

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
        check_count("n", n)
        return draw_program(self.model, self.guide, n)(self.params, self.precond, key)

    def log_q(self, z: jax.Array) -> jax.Array:
        """The guide's log density ``(n,)`` at flat points ``z`` ``(n, dim)`` of the model's space
        (ValueError for a family that cannot evaluate it at arbitrary points: a point, BNAF)."""
        if self.guide.point or self.guide.log_prob is None:
            what = "is a point (a MAP fit) with no density" if self.guide.point else "has no inverse to evaluate its density at given points"
            raise ValueError(
                f"guide {self.guide.name!r} {what}; the log density of its own draws is in "
                "fit.to_arviz().sample_stats['log_q'] (or fit a family that has one at any point: iaf, the Gaussians)"
            )
        return log_q_program(self.model, self.guide)(self.params, self.precond, jnp.asarray(z))

    def sample(self, key: jax.Array, n: int) -> dict:
        """``n`` draws of every site (deterministic ones too), constrained: ``{name: (n, *shape)}``."""
        check_count("n", n)
        return sample_program(self.model, self.guide, n)(self.params, self.precond, key)

    def mean(self, num_draws: int = 4000, key: Optional[jax.Array] = None) -> dict:
        """Posterior means of every site in its constrained space (Monte Carlo, ``num_draws``)."""
        check_count("num_draws", num_draws)
        draws = self.sample(as_key(key), num_draws)
        return {k: np.asarray(v).mean(0) for k, v in draws.items()}

    def std(self, num_draws: int = 4000, key: Optional[jax.Array] = None) -> dict:
        """Posterior standard deviations of every site, constrained (Monte Carlo, ``num_draws``)."""
        check_count("num_draws", num_draws)
        draws = self.sample(as_key(key), num_draws)
        return {k: np.asarray(v).std(0) for k, v in draws.items()}

    def elbo(self, key: Optional[jax.Array] = None, num_particles: int = 1000) -> float:
        """A precise ELBO estimate of the fitted guide, for fair comparison of runs (point guides:
        the log joint at the point)."""
        check_count("num_particles", num_particles)
        return float(elbo_program(self.model, self.guide, num_particles)(self.params, self.precond, as_key(key)))

    def summary(self, num_draws: int = 4000, key: Optional[jax.Array] = None, kind: str = "stats"):
        """ArviZ's summary of ``num_draws`` guide draws (a pandas DataFrame: mean, sd and the 89%
        ETI per scalar parameter for ``kind="stats"``; the 94% HDI on ArviZ 0.23), with
        :meth:`diagnose`'s report in ``df.attrs["diagnosis"]``."""
        from .export import summary

        return summary(self, num_draws, key, kind)

    def to_arviz(self, num_draws: int = 1000, key: Optional[jax.Array] = None, posterior_predictive: bool = True,
                 log_likelihood=True, dims=None, coords=None, psis_reweight: bool = False):
        """This fit in ArviZ's format (an ``xarray.DataTree`` on ArviZ 1.x, an ``arviz.InferenceData``
        on 0.23); see :func:`vibench.export.to_arviz`."""
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


class CallbackError(RuntimeError):
    """A callback raised. The run stopped after the chunk the callback was shown, and ``fit`` is the
    :class:`Fit` as of that chunk (``stop_reason == "error"``); the callback's exception is the
    ``__cause__``."""

    def __init__(self, message: str, fit: Fit):
        super().__init__(message)
        self.fit = fit
