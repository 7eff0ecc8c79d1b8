"""Fitting methods: what each trains, what it refuses, and that objectives need not know them."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.distributions import constraints

import vibench as vb
from vibench.guides import GUIDES
from vibench.methods import ESTIMATOR_FIELDS, METHODS, laplace_refine
from vibench.objectives import OBJECTIVES, Objective, register_objective
from vibench.state import hyper_from_config


def test_protocol_every_method():
    """Every registered family names a registered method; every method says what it reads."""
    for name, guide in GUIDES.items():
        assert guide.method in METHODS, name
    for method in METHODS.values():
        assert set(method.takes) <= set(ESTIMATOR_FIELDS)
        assert callable(method.build) and callable(method.check) and callable(method.default_stl)


@pytest.mark.parametrize("guide, changes, message", [
    ("delta", dict(objective="renyi", num_particles=2), "guide 'delta' is a point (a MAP fit) and has no density for objective 'renyi'"),
    ("laplace", dict(objective="chivi", num_particles=2), "fitted at the mode of the log density, not by an objective over its draws"),
    ("laplace", dict(num_particles=3), "guide 'laplace' is fitted at the mode of the log density: it takes num_particles=1"),
    ("pathfinder", dict(stl=True), "fitted by its starting stage: nothing is trained, so stl=True has no meaning"),
    ("pathfinder", dict(objective="forward_kl", num_particles=4), "fitted by its starting stage, not by an objective"),
])
def test_a_method_refuses_what_it_cannot_serve(guide, changes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        vb.Config(guide=guide, **changes)


def test_a_new_objective_is_checked_against_families_not_methods():
    # An objective registered by a user knows nothing of MAP or Laplace; the methods still refuse it.
    elbo = OBJECTIVES["elbo"]
    register_objective(Objective("elbo_again", elbo.build, lambda guide, stl, num_particles: None))
    try:
        assert vb.Config(guide="meanfield", objective="elbo_again").objective == "elbo_again"
        with pytest.raises(ValueError, match="has no density for objective 'elbo_again'"):
            vb.Config(guide="delta", objective="elbo_again")
        with pytest.raises(ValueError, match="objective 'elbo_again' does not apply to it"):
            vb.Config(guide="laplace", objective="elbo_again")
    finally:
        del OBJECTIVES["elbo_again"]


def test_laplace_refine_sets_the_inverse_hessian_at_the_location():
    mean = jnp.array([1.0, -2.0])
    cov = jnp.array([[2.0, 0.6], [0.6, 0.5]])
    precision = jnp.linalg.inv(cov)

    def log_density(z):
        r = z - mean
        return -0.5 * r @ precision @ r

    params = GUIDES["laplace"].init(None, mean, jnp.ones(2), {})
    refined = laplace_refine(log_density, params)
    chol = np.asarray(vb.guides.gaussian.scale_tril(refined))
    np.testing.assert_allclose(chol @ chol.T, cov, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(refined.loc, mean)


def test_a_map_is_fitted_on_the_log_joint_and_pathfinder_trains_nothing():
    model = vb.Model.from_log_density(lambda v: -0.5 * jnp.sum((v["x"] - 3.0) ** 2), {"x": constraints.real},
                                      shapes={"x": (2,)})
    hyper = hyper_from_config(vb.Config())
    params = GUIDES["delta"].init(None, jnp.zeros(2), jnp.ones(2), {})
    loss, aux = METHODS["map"].build(model, GUIDES["delta"], OBJECTIVES["elbo"], 1)(params, None, hyper)
    np.testing.assert_allclose([-loss, aux["elbo"]], [-9.0, -9.0])
    pathfinder = METHODS["pathfinder"]
    assert not pathfinder.trains and pathfinder.start == "pathfinder"
    params = GUIDES["pathfinder"].init(None, jnp.zeros(2), jnp.ones(2), {})
    eps = jax.random.normal(jax.random.key(0), (4, 2))
    grads = jax.grad(lambda p: pathfinder.build(model, GUIDES["pathfinder"], OBJECTIVES["elbo"], 4)(p, eps, hyper)[0])(params)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))  # its ELBO is an estimate only
