import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.distributions import constraints
from numpyro.infer.util import log_density as numpyro_log_density
from numpyro.infer.util import potential_energy

import vibench as vb
from vibench.models import EIGHT_SCHOOLS, eight_schools_centered_model


@pytest.fixture(scope="module")
def schools():
    return vb.Model.from_numpyro(eight_schools_centered_model, **EIGHT_SCHOOLS)


def test_numpyro_model_sites_and_dimension(schools):
    assert schools.dim == 10
    assert schools.sites == {"mu": (), "tau": (), "theta": (8,)}
    assert np.all(np.isfinite(schools.init_z))


def test_log_density_matches_numpyro_potential(schools, getkey):
    z = jax.random.normal(getkey(), (10,))
    values = schools.constrain(z)
    unconstrained = {"mu": values["mu"], "tau": jnp.log(values["tau"]), "theta": values["theta"]}
    expected = -potential_energy(eight_schools_centered_model, (), EIGHT_SCHOOLS, unconstrained)
    np.testing.assert_allclose(schools.log_density(z), expected, rtol=1e-5)
    # log_joint drops exactly the Jacobian of tau = exp(u): log|d tau/d u| = u.
    joint = numpyro_log_density(eight_schools_centered_model, (), EIGHT_SCHOOLS, {k: values[k] for k in schools.sites})[0]
    np.testing.assert_allclose(schools.log_joint(z), joint, rtol=1e-5)
    np.testing.assert_allclose(schools.log_density(z) - schools.log_joint(z), jnp.log(values["tau"]), rtol=1e-4, atol=1e-4)


def test_constrain_and_unconstrain_are_inverse(schools, getkey):
    z = jax.random.normal(getkey(), (10,))
    values = schools.constrain(z)
    assert float(values["tau"]) > 0
    np.testing.assert_allclose(schools.unconstrain(values), z, rtol=1e-5, atol=1e-5)


def test_deterministic_sites_are_constrained_outputs():
    model = vb.models.eight_schools(centered=False)
    values = model.constrain(model.init_z)
    assert set(values) == {"mu", "tau", "theta_trans", "theta"}
    np.testing.assert_allclose(values["theta"], values["mu"] + values["tau"] * values["theta_trans"], rtol=1e-6)
    assert "theta" not in model.sites


def test_plain_log_density_adds_the_jacobian():
    model = vb.Model.from_log_density(
        lambda v: dist.Gamma(2.0, 1.0).log_prob(v["s"]) + dist.Normal(0, 1).log_prob(v["x"]).sum(),
        supports={"s": constraints.positive, "x": constraints.real},
        shapes={"x": (2,)},
    )
    assert model.dim == 3 and model.sites == {"s": (), "x": (2,)}
    z = model.unconstrain({"s": 2.0, "x": jnp.array([0.1, -0.3])})
    expected = dist.Gamma(2.0, 1.0).log_prob(2.0) + jnp.log(2.0) + dist.Normal(0, 1).log_prob(jnp.array([0.1, -0.3])).sum()
    np.testing.assert_allclose(model.log_density(z), expected, rtol=1e-5)
    np.testing.assert_allclose(model.log_joint(z), expected - jnp.log(2.0), rtol=1e-5)


def test_plain_log_density_simplex_support():
    model = vb.Model.from_log_density(
        lambda v: dist.Dirichlet(jnp.ones(3)).log_prob(v["p"]), supports={"p": constraints.simplex}, shapes={"p": (3,)}
    )
    assert model.dim == 2
    np.testing.assert_allclose(jnp.sum(model.constrain(model.init_z)["p"]), 1.0, rtol=1e-6)


def test_discrete_latent_site_is_named():
    def mixture(y):
        k = numpyro.sample("component", dist.Categorical(jnp.ones(2) / 2))
        numpyro.sample("y", dist.Normal(k * 1.0, 1.0), obs=y)

    with pytest.raises(ValueError, match="latent site 'component' is discrete"):
        vb.Model.from_numpyro(mixture, 0.5)


def test_param_and_mutable_sites_are_rejected():
    def with_param(y):
        loc = numpyro.param("loc", 0.0)
        x = numpyro.sample("x", dist.Normal(loc, 1.0))
        numpyro.sample("y", dist.Normal(x, 1.0), obs=y)

    with pytest.raises(ValueError, match="site 'loc' is a numpyro.param site"):
        vb.Model.from_numpyro(with_param, 0.5)


def test_model_without_latents_is_rejected():
    def observed_only(y):
        numpyro.sample("y", dist.Normal(0.0, 1.0), obs=y)

    with pytest.raises(ValueError, match="no latent sample sites"):
        vb.Model.from_numpyro(observed_only, 0.5)


def test_non_finite_log_density_at_init_is_reported():
    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    with pytest.raises(ValueError, match="not finite.*'y'"):
        vb.Model.from_numpyro(model, jnp.array([0.0, jnp.nan]))
    with pytest.raises(ValueError, match="at its initial point"):
        vb.Model.from_log_density(lambda v: jnp.log(v["x"] - 5.0), {"x": constraints.positive})


def test_plain_log_density_must_return_a_scalar():
    with pytest.raises(ValueError, match="must return a scalar, got shape \\(2,\\)"):
        vb.Model.from_log_density(lambda v: -0.5 * v["x"] ** 2, {"x": constraints.real}, shapes={"x": (2,)})


def test_bad_front_door_arguments():
    with pytest.raises(TypeError, match="numpyro constraint"):
        vb.Model.from_log_density(lambda v: 0.0, {"x": "positive"})
    with pytest.raises(ValueError, match="not in supports"):
        vb.Model.from_log_density(lambda v: 0.0, {"x": constraints.real}, shapes={"y": ()})
    with pytest.raises(TypeError, match="NumPyro model function"):
        vb.Model.from_numpyro("eight_schools")
