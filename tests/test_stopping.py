"""The stopping rules (vibench/stopping.py): the plateau schedule that halves the step size and
stops at its floor, and the relative-change tolerance ``tol``."""

import numpy as np
import numpyro.distributions as dist

import vibench as vb
from vibench.stopping import Plateau


def test_plateau_halves_after_patience_and_converges_at_the_floor():
    spread = np.linspace(-1.0, 1.0, 500)  # the same per-step scatter every chunk
    noise = lambda: spread  # noqa: E731
    rule = Plateau(0.01, final_lr_ratio=0.25, patience=2)
    # A steady climb never decays the step size, however slow each chunk's part of it.
    assert all(rule.update(level + noise()) == (None, False) for level in np.linspace(0.0, 2.0, 6))
    flat = [rule.update(2.0 + noise()) for _ in range(6)]
    assert flat == [(None, False), (0.005, False), (None, False), (0.0025, False), (None, False), (None, True)]


def test_default_schedule_stops_converged_before_num_steps():
    model = vb.Model.from_log_density(lambda v: dist.Normal(1.0, 2.0).log_prob(v["x"]), {"x": dist.constraints.real})
    fit = vb.fit(model, num_steps=50_000, chunk_size=100, progress_bar=False)
    assert fit.stop_reason == "converged" and fit.num_steps < 50_000
    np.testing.assert_allclose(float(fit.state.hyper.learning_rate), 1e-4, rtol=1e-5)


def test_early_stopping_on_relative_elbo_change(schools):
    fit = vb.fit(schools, num_steps=20_000, chunk_size=500, tol=0.05, progress_bar=False)
    assert fit.stop_reason == "converged" and fit.num_steps < 20_000
