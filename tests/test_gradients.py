"""The Monte Carlo variance of the gradient estimator (vibench/gradients.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vibench as vb
from vibench.guides import DeltaParams

from oracles import correlated, fit_at, gaussian, whitened


def test_stl_gradient_variance_vanishes_at_the_exact_fit():
    cov, mean = correlated(0.8), [1.0, -1.0]
    # In whitened coordinates the guide is N(offset, 0.25 I) and the target, seen from there, too.
    fit = fit_at(gaussian(cov, mean), *whitened(mean, np.linalg.cholesky(cov)), guide="fullrank")
    stl = vb.diagnostics.gradient_variance(fit, stl=True, num_particles=1, repeats=400, key=jax.random.key(0))
    standard = vb.diagnostics.gradient_variance(fit, stl=False, num_particles=1, repeats=400, key=jax.random.key(0))
    assert stl.stl and not standard.stl and stl.repeats == 400 and stl.objective == "elbo"
    assert stl.total_variance < 1e-8
    # At q = p the standard gradient is the score of q(u) = N(m, L L^T), L = 0.5 I, d = 2, with
    # eps ~ N(0, I): d/dm = 2 eps (variance 4 per axis), d/d log L_ii = eps_i^2 - 1 (variance 2),
    # d/dL_10 = 2 eps_1 eps_0 (variance 4): 8 + 4 + 4 = 16 in all.
    assert standard.total_variance == pytest.approx(16.0, rel=0.2)
    np.testing.assert_allclose(standard.variance.loc, 4.0, rtol=0.25)
    np.testing.assert_allclose(np.diag(standard.variance.tril), 2.0, rtol=0.35)
    # More particles average the score term: the variance falls as 1 / K.
    eight = vb.diagnostics.gradient_variance(fit, stl=False, num_particles=8, repeats=400, key=jax.random.key(1))
    assert eight.total_variance == pytest.approx(16.0 / 8, rel=0.2)
    assert jax.tree.structure(stl.variance) == jax.tree.structure(fit.params)
    with pytest.raises(ValueError, match="repeats must be >= 2"):
        vb.diagnostics.gradient_variance(fit, repeats=1)
    with pytest.raises(ValueError, match="renyi"):
        vb.diagnostics.gradient_variance(fit, stl=True, num_particles=4, objective="renyi")
    with pytest.raises(ValueError, match="draws no noise"):
        vb.diagnostics.gradient_variance(fit_at(gaussian(cov), DeltaParams(jnp.zeros(2)), guide="delta"))
