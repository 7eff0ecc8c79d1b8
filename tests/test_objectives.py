"""Objectives against closed forms: a Gaussian target with Gaussian guides."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from jax.scipy.special import logsumexp
from numpyro.distributions import constraints

import vibench as vb
from vibench.guides import GUIDES
from vibench.objectives import make_objective

TARGET_MEAN = jnp.array([1.0, -2.0, 0.5])
TARGET_COV = jnp.array([[1.0, 0.6, 0.2], [0.6, 2.0, -0.3], [0.2, -0.3, 0.5]])


@pytest.fixture(scope="module")
def gaussian_model():
    target = dist.MultivariateNormal(TARGET_MEAN, TARGET_COV)
    return vb.Model.from_log_density(lambda v: target.log_prob(v["z"]), {"z": constraints.real}, shapes={"z": (3,)})


def _hyper(stl=False, alpha=0.5):
    return vb.hyper_from_config(vb.Config())._replace(stl=np.bool_(stl), alpha=np.float32(alpha))


def exact_meanfield_elbo(params):
    """E_q[log N(z; m, S)] + H[q] for q = N(loc, diag(scale^2)), in closed form."""
    scale2 = jnp.exp(2 * params.log_scale)
    prec = jnp.linalg.inv(TARGET_COV)
    diff = params.loc - TARGET_MEAN
    expected_log_p = -0.5 * (diff @ prec @ diff + jnp.sum(jnp.diag(prec) * scale2)) - 0.5 * jnp.linalg.slogdet(2 * jnp.pi * TARGET_COV)[1]
    entropy = jnp.sum(params.log_scale) + 1.5 * (1 + jnp.log(2 * jnp.pi))
    return expected_log_p + entropy


@pytest.mark.parametrize("stl", [False, True])
def test_gradient_is_unbiased_away_from_the_optimum(gaussian_model, stl, getkey):
    guide = GUIDES["meanfield"]
    params = guide.init(None, jnp.array([0.0, 0.0, 0.0]), jnp.array([0.5, 2.0, 1.0]), {})
    loss_fn = make_objective("elbo", gaussian_model, guide, num_particles=1)
    exact = jax.grad(lambda p: -exact_meanfield_elbo(p))(params)
    eps = jax.random.normal(getkey(), (40_000, 1, 3))
    grads = jax.vmap(lambda e: jax.grad(lambda p: loss_fn(p, e, _hyper(stl))[0])(params))(eps)
    for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(exact)):
        stderr = jnp.std(g, 0) / jnp.sqrt(g.shape[0])
        assert jnp.all(jnp.abs(jnp.mean(g, 0) - e) < 5 * stderr + 1e-3), (jnp.mean(g, 0), e)


def test_stl_has_zero_variance_at_the_exact_fit(gaussian_model, getkey):
    guide = GUIDES["fullrank"]
    L = jnp.linalg.cholesky(TARGET_COV)
    params = vb.guides.FullRankParams(TARGET_MEAN, jnp.tril(L, -1) + jnp.diag(jnp.log(jnp.diag(L))))
    loss_fn = make_objective("elbo", gaussian_model, guide, num_particles=1)
    eps = jax.random.normal(getkey(), (500, 1, 3))

    def grad_var(stl):
        grads = jax.vmap(lambda e: jax.grad(lambda p: loss_fn(p, e, _hyper(stl))[0])(params))(eps)
        return sum(float(jnp.sum(jnp.var(g, 0))) for g in jax.tree.leaves(grads))

    assert grad_var(True) < 1e-6
    assert grad_var(False) > 0.1


def test_elbo_estimates_agree_with_closed_form(gaussian_model, getkey):
    guide = GUIDES["meanfield"]
    params = guide.init(None, jnp.array([0.5, -1.0, 0.0]), jnp.array([0.8, 1.2, 0.6]), {})
    exact = exact_meanfield_elbo(params)
    eps = jax.random.normal(getkey(), (4000, 3))
    for name in ("elbo", "elbo_analytic"):
        loss, aux = make_objective(name, gaussian_model, guide, num_particles=4000)(params, eps, _hyper())
        np.testing.assert_allclose(-loss, exact, atol=0.05)
        np.testing.assert_allclose(aux["elbo"], exact, atol=0.05)


def test_renyi_bound_alpha_zero_is_iwae(gaussian_model, getkey):
    guide = GUIDES["meanfield"]
    params = guide.init(None, jnp.zeros(3), jnp.ones(3), {})
    eps = jax.random.normal(getkey(), (16, 3))
    z = guide.transform(params, eps)
    log_w = jax.vmap(gaussian_model.log_density)(z) - guide.log_prob(params, z)
    loss_fn = make_objective("renyi", gaussian_model, guide, num_particles=16)
    loss, aux = loss_fn(params, eps, _hyper(alpha=0.0))
    np.testing.assert_allclose(-loss, logsumexp(log_w) - jnp.log(16.0), rtol=1e-5)
    np.testing.assert_allclose(aux["elbo"], jnp.mean(log_w), rtol=1e-5)
    # The bound decreases in alpha and lies above the ELBO for alpha in (0, 1).
    mid = -loss_fn(params, eps, _hyper(alpha=0.5))[0]
    assert jnp.mean(log_w) <= mid <= -loss


def test_point_guide_is_fitted_on_the_log_joint():
    # x > 0 with log p(x) = log Gamma(3, 1): the MAP of x is 2, whatever the log transform adds.
    model = vb.Model.from_log_density(lambda v: dist.Gamma(3.0, 1.0).log_prob(v["x"]), {"x": constraints.positive})
    loss_fn = make_objective("elbo", model, GUIDES["delta"], 1)
    params = vb.guides.DeltaParams(jnp.log(jnp.array([2.0])))
    loss, aux = loss_fn(params, jnp.zeros((1, 0)), _hyper())
    np.testing.assert_allclose(-loss, dist.Gamma(3.0, 1.0).log_prob(2.0), rtol=1e-6)
    assert abs(float(jax.grad(lambda p: loss_fn(p, None, _hyper())[0])(params).loc[0])) < 1e-5
