"""The starting stage: where the guide begins, and the coordinates it is optimised in.

``Config.init`` picks it:

- ``"laplace"`` (default): the MAP of the flat log density by SciPy's BFGS, then the Laplace
  approximation there (the inverse Hessian). The guide starts as that Gaussian and is optimised in
  its whitened coordinates ``u`` (``z = shift + scale @ u``), so that a learning rate means the same
  thing on every model. It fails soft: a Hessian that is not positive definite falls back to its
  diagonal, and no MAP at all (a funnel, a divergent optimiser) to the plain start, and says so.
- ``"pathfinder"``: BlackJAX's Pathfinder (Zhang et al. 2022): L-BFGS from the model's initial
  point, a Gaussian at each iterate from its inverse-Hessian estimate, and the one whose ELBO is
  highest. The guide starts as that Gaussian, whitened by it as under ``"laplace"``. It needs no
  MAP, so it also starts models without one; it falls back to the plain start if its ELBO is not
  finite.
- ``"map"``: the guide's location starts at the MAP (BFGS and the same Newton polish); scale
  ``config.init_scale``, no whitening.
- ``"prior"``: the plain start: the model's initial point, scale ``config.init_scale``.

A family whose fitting method needs a starting stage of its own (``Method.start``: the
``"pathfinder"`` family) uses that stage whatever ``Config.init`` says (:attr:`Plan.start`).
"""

from __future__ import annotations

import time
import warnings
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from ._memo import per_model
from .state import Precond, identity_precond
from .plan import as_plan

__all__ = ["Start", "find_start"]

PATHFINDER_ITERATIONS = 100  # L-BFGS iterations: Gaussians along the path
PATHFINDER_DRAWS = 100  # draws per Gaussian for its ELBO

MAX_ITERATIONS = 300


class Start(NamedTuple):
    """Where a fit starts: ``precond`` maps whitened ``u`` to flat ``z``; the guide starts at
    ``u = 0`` with scale ``scale``. ``method`` is what was used (``"laplace"``,
    ``"laplace-diagonal"``, ``"map"`` or ``"prior"``), ``message`` says why when it fell back."""

    method: str
    precond: Precond
    scale: float
    message: str
    seconds: float


def find_start(model, plan, init_values: Optional[dict] = None, method: Optional[str] = None) -> Start:
    """Run the starting stage ``method`` (default ``plan.start``) for ``plan`` (a Plan or a
    Config); never raises for a model without a MAP."""
    began = time.perf_counter()
    plan = as_plan(plan)
    config = plan.config
    method = plan.start if method is None else method
    whitening = plan.guide.whitening
    loc = model.initial_point(init_values)
    plain = Start("prior", identity_precond(loc, whitening), config.init_scale, "", 0.0)
    if method == "prior":
        return plain
    if method == "pathfinder":
        start = _pathfinder(model, loc, config.seed, whitening)
        if start is None:
            message = "Pathfinder found no Gaussian with a finite ELBO; started from the model's initial point"
            return plain._replace(message=message, seconds=time.perf_counter() - began)
        return start._replace(seconds=time.perf_counter() - began)
    x, value, iterations, scale = _bfgs(model)(loc)
    elapsed = lambda: time.perf_counter() - began  # noqa: E731
    if not (np.isfinite(value) and np.all(np.isfinite(x))):
        return plain._replace(message="no MAP: BFGS left the region where the log density is finite; started from the model's initial point", seconds=elapsed())
    x, grad, precision = _newton(_value_and_grad(model), x, scale)
    if method == "map":
        return Start("map", identity_precond(jnp.asarray(x, jnp.float32), whitening), config.init_scale, "", elapsed())
    start = _laplace(x, grad, precision, whitening)
    if start is None:
        if np.all(np.isfinite(grad)) and np.linalg.norm(grad) <= 1e-3 * np.sqrt(grad.size):
            reason = (
                "the log density is flat to second order at its MAP (a singular Hessian), so there "
                "is no Laplace scale to start from"
            )
        else:
            reason = (
                f"no MAP: after {int(iterations)} BFGS iterations the log density was still rising "
                "steeply (a funnel, or an improper posterior)"
            )
        return plain._replace(message=f"{reason}; started from the model's initial point", seconds=elapsed())
    return _tighten(start, _value_and_grad(model))._replace(seconds=elapsed())


def _tighten(start: Start, value_and_grad, limit: float = 2.0) -> Start:
    """Shrink whitened axes along which the Laplace Gaussian is far too wide.

    One sd out along each axis of ``u``, a Gaussian posterior's log density drops by 0.5; where it
    drops by more than ``limit`` (a flat-topped mode whose curvature vanishes there: a quartic, a
    ridge), the axis is shrunk until it does not. A near-Gaussian posterior is left as it is, and
    the check costs a few log-density calls per axis.
    """
    precond = start.precond
    scale = np.asarray(precond.scale, np.float64)
    shift = np.asarray(precond.shift, np.float64)
    full = scale.ndim == 2
    top = float(value_and_grad(jnp.asarray(shift, jnp.float32))[0])
    factors = np.ones(shift.shape[0])
    for j in range(shift.shape[0]):
        axis = scale[:, j] if full else np.eye(shift.shape[0])[j] * scale[j]
        for sign in (1.0, -1.0):
            t = factors[j]
            for _ in range(30):
                value = float(value_and_grad(jnp.asarray(shift + sign * t * axis, jnp.float32))[0])
                drop = top - value if np.isfinite(value) else np.inf
                if drop <= limit:
                    break
                # Exact in one step for a quadratic; a few for steeper walls.
                t *= min(0.5, np.sqrt(0.5 / drop)) if np.isfinite(drop) else 0.1
            factors[j] = min(factors[j], t)
    if np.all(factors == 1.0):
        return start
    scale = scale * factors[None, :] if full else scale * factors
    log_det = float(precond.log_det) + float(np.sum(np.log(factors)))
    return start._replace(precond=_precond(shift, scale, log_det))


def _newton(value_and_grad, x, scale, max_iterations=20):
    """Polish the BFGS point with damped Newton steps: with float32 gradients BFGS can stop in the
    narrow valleys of badly scaled posteriors short of the mode, where the Hessian knows the way.
    ``scale`` ``(d,)``: rough posterior sds, the finite-difference steps' sizes. Returns ``(x,
    grad, precision)`` at the last point, float64; ``grad`` is of log p, ``precision`` = -Hessian."""

    def evaluate(point):
        value, grad = value_and_grad(jnp.asarray(point, jnp.float32))
        return float(value), np.asarray(grad, np.float64)

    value, grad = evaluate(x)
    precision = _precision(evaluate, x, scale)
    for _ in range(max_iterations):
        if not (np.isfinite(value) and np.all(np.isfinite(precision))):
            break
        try:
            chol = np.linalg.cholesky(precision)
        except np.linalg.LinAlgError:
            break
        step = np.linalg.solve(chol.T, np.linalg.solve(chol, grad))
        if float(grad @ step) < 1e-6:
            break
        for size in (1.0, 0.5, 0.25, 0.1, 0.01):
            candidate = evaluate(x + size * step)
            if np.isfinite(candidate[0]) and candidate[0] >= value - 1e-6 * abs(value):
                x, (value, grad) = x + size * step, candidate
                scale = np.sqrt(np.clip(np.diag(np.linalg.inv(precision)), 1e-30, None))
                precision = _precision(evaluate, x, scale)
                break
        else:
            break
    return x, grad, precision


def _precision(evaluate, x, scale, relative_step=1e-2):
    """``-Hessian`` ``(d, d)`` of log p at ``x`` by central differences of the gradient, with steps
    of ``relative_step`` posterior sds along each axis: 2d calls of the compiled gradient, where
    compiling ``jax.hessian`` cost as much as compiling the whole training chunk. The step actually
    taken is measured after rounding to float32, so rounding does not bias the quotient."""
    d = x.shape[0]
    columns = np.empty((d, d))
    for i in range(d):
        h = relative_step * (scale[i] if np.isfinite(scale[i]) and scale[i] > 0 else 1.0)
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        taken = float(np.float32(up[i])) - float(np.float32(down[i]))
        if taken == 0.0:
            return np.full((d, d), np.nan)
        columns[i] = (evaluate(up)[1] - evaluate(down)[1]) / taken
    return -0.5 * (columns + columns.T)


def _laplace(x, grad, precision, whitening) -> Optional[Start]:
    """The Laplace start from the curvature at ``x``, or None when ``x`` is no MAP."""
    if not (np.all(np.isfinite(precision)) and np.all(np.isfinite(grad))):
        return None
    diagonal = np.diag(precision)
    if not np.all(diagonal > 0):
        return None
    # Judge definiteness on the precision's correlation form: a posterior whose sds span 1e-3 ..
    # 1e3 is not ill-conditioned for that, but float32 curvature noise on a near-singular one is.
    root = np.sqrt(diagonal)
    if np.linalg.eigvalsh(precision / np.outer(root, root)).min() > 1e-9:
        chol = np.linalg.cholesky(precision)
        newton = np.linalg.solve(chol.T, np.linalg.solve(chol, grad))
        # Newton decrement: the squared distance to the optimum in posterior sds. Near zero at a MAP;
        # large where the optimiser stopped on a slope that keeps rising (a funnel's neck).
        if grad @ newton >= 1.0:
            return None
        if whitening == "full":
            inverse = np.linalg.solve(chol, np.eye(len(x)))
            scale = np.linalg.cholesky(inverse.T @ inverse)
        else:
            scale = 1.0 / root
        log_det = np.sum(np.log(np.abs(np.diag(scale)) if scale.ndim == 2 else scale))
        return Start("laplace", _precond(x + newton, scale, log_det), 1.0, "", 0.0)
    if np.sum(grad**2 / diagonal) < 1.0:
        scale = 1.0 / root
        message = "the Hessian at the MAP is not positive definite; whitened by its diagonal only"
        matrix = np.diag(scale) if whitening == "full" else scale
        return Start("laplace-diagonal", _precond(x, matrix, np.sum(np.log(scale))), 1.0, message, 0.0)
    return None


def _pathfinder(model, loc, seed: int, whitening: str) -> Optional[Start]:
    """The Pathfinder start, or None when no Gaussian on the path has a finite ELBO."""
    state = _pathfinder_program(model)(jax.random.key(seed), loc)
    position, grad, alpha, beta, gamma = (np.asarray(a, np.float64) for a in
                                          (state.position, state.grad_position, state.alpha, state.beta, state.gamma))
    # The mean and covariance of the Gaussian BlackJAX's bfgs_sample draws from.
    mean = position + alpha * grad + beta @ (gamma @ (beta.T @ grad))
    covariance = np.diag(alpha) + beta @ gamma @ beta.T
    covariance = 0.5 * (covariance + covariance.T)
    if not (np.isfinite(float(state.elbo)) and np.all(np.isfinite(mean)) and np.all(np.isfinite(covariance))):
        return None
    if whitening == "full":
        try:
            scale = np.linalg.cholesky(covariance)
        except np.linalg.LinAlgError:
            return None
        log_det = np.sum(np.log(np.diag(scale)))
    else:
        scale = np.sqrt(np.diag(covariance))
        log_det = np.sum(np.log(scale))
    return Start("pathfinder", _precond(mean, scale, log_det), 1.0, "", 0.0)


@per_model
def _pathfinder_program(model):
    from blackjax.vi.pathfinder import approximate

    run = lambda key, x: approximate(key, model.log_density, x, num_samples=PATHFINDER_DRAWS,  # noqa: E731
                                     maxiter=PATHFINDER_ITERATIONS)[0]
    return jax.jit(run)


def _precond(shift, scale, log_det) -> Precond:
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return Precond(f32(shift), f32(scale), f32(log_det))


@per_model
def _value_and_grad(model):
    return jax.jit(jax.value_and_grad(model.log_density))


def _bfgs(model):
    """``run(z0) -> (x, -log p(x), iterations, sds)``: SciPy's BFGS on the host, in float64,
    calling one jitted value-and-gradient of the log density; ``sds`` ``(d,)`` are the square
    roots of the diagonal of BFGS's inverse-Hessian estimate. Its compile is a fraction of a
    compiled optimiser loop's (optax's L-BFGS in a while_loop took 3.4 s to compile on an HMM where
    this takes under 0.5 s), and the run itself is milliseconds. BFGS rather than L-BFGS-B: on
    eight posteriordb posteriors it reached every mode that exists, where L-BFGS-B's line search
    gave up after a step out of the support (a mixture) and stopped short on an ill-conditioned
    regression; its d x d inverse Hessian costs no more than the Laplace stage's own Hessian."""
    value_and_grad = _value_and_grad(model)

    def objective(x):
        value, grad = value_and_grad(jnp.asarray(x, jnp.float32))
        value, grad = -float(value), -np.asarray(grad, np.float64)
        if not (np.isfinite(value) and np.all(np.isfinite(grad))):
            # Outside the density's support: a wall the line search backs away from.
            return np.inf, np.zeros_like(grad)
        return value, grad

    def run(z0):
        x0 = np.asarray(z0, np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = scipy.optimize.minimize(objective, x0, jac=True, method="BFGS", options={"maxiter": MAX_ITERATIONS, "gtol": 1e-6})
        if not np.isfinite(result.fun):
            return x0, objective(x0)[0], result.nit, np.ones_like(x0)
        sds = np.sqrt(np.abs(np.diag(np.atleast_2d(result.hess_inv))))
        return result.x, result.fun, result.nit, sds

    return run
