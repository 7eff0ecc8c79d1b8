"""The 2-D teaching targets: their densities against closed forms, their exact moments, and the
textbook answers of Gaussian guides on the correlated Gaussian."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import vibench as vb
from vibench.models import targets

GRID = np.linspace(-12.0, 12.0, 481)


def log_density(model, points):
    return np.asarray(jax.vmap(model.log_density)(jnp.asarray(points, jnp.float32)), np.float64)


def random_points(key, n=64):
    return np.asarray(2.0 * jax.random.normal(key, (n, 2)))


def test_every_target_is_a_model_over_the_plane():
    for model in (vb.models.banana(), vb.models.funnel(), vb.models.mixture(), vb.models.correlated_gaussian()):
        assert isinstance(model, vb.Model)
        assert model.dim == 2 and model.sites == {"x": (2,)}
        z = jnp.array([0.3, -1.2])
        np.testing.assert_allclose(np.asarray(model.constrain(z)["x"]), np.asarray(z))  # flat space = the plane


def test_banana_density_is_its_two_normals(getkey):
    x = random_points(getkey())
    expected = stats.norm.logpdf(x[:, 0], 0, 1.5) + stats.norm.logpdf(x[:, 1], 0.3 * (x[:, 0] ** 2 - 1.5**2), 1)
    np.testing.assert_allclose(log_density(vb.models.banana(curvature=0.3, scale=1.5), x), expected, rtol=1e-5, atol=1e-5)


def test_funnel_density_and_its_log_scale_marginal(getkey):
    x = random_points(getkey())
    expected = stats.norm.logpdf(x[:, 0], 0, 3) + stats.norm.logpdf(x[:, 1], 0, np.exp(x[:, 0] / 2))
    model = vb.models.funnel()
    np.testing.assert_allclose(log_density(model, x), expected, rtol=1e-5, atol=1e-5)
    # Integrating x1 out leaves the exact marginal of x0.
    x1 = np.linspace(-200, 200, 400_001)
    for x0 in (-2.0, 0.0, 1.5):
        points = np.stack([np.full_like(x1, x0), x1], -1)
        marginal = np.trapezoid(np.exp(log_density(model, points)), x1)
        np.testing.assert_allclose(marginal, np.exp(vb.models.funnel_log_scale_marginal().log_prob(x0)), rtol=1e-3)


def test_mixture_density_is_numpyros_mixture(getkey):
    import numpyro.distributions as dist

    means = np.array([[-1.0, 0.5], [2.0, -1.0]])
    reference = dist.MixtureSameFamily(
        dist.Categorical(probs=jnp.array([0.3, 0.7])), dist.Normal(jnp.asarray(means), 0.8).to_event(1)
    )
    x = random_points(getkey())
    np.testing.assert_allclose(log_density(vb.models.mixture(0.3, means, 0.8), x), np.asarray(reference.log_prob(x)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rho", [0.95, -0.5])
def test_correlated_gaussian_density(getkey, rho):
    x = random_points(getkey())
    expected = stats.multivariate_normal([0, 0], [[1, rho], [rho, 1]]).logpdf(x)
    np.testing.assert_allclose(log_density(vb.models.correlated_gaussian(rho), x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "model, moments",
    [
        (vb.models.banana(0.25, 1.5), vb.models.banana_moments(0.25, 1.5)),
        (vb.models.mixture(0.3), vb.models.mixture_moments(0.3)),
        (vb.models.correlated_gaussian(0.8), vb.models.correlated_gaussian_moments(0.8)),
    ],
    ids=["banana", "mixture", "correlated"],
)
def test_densities_are_normalised_and_moments_exact(model, moments):
    """The exact moments against the targets' own densities, integrated on a fine grid."""
    x0, x1 = np.meshgrid(GRID, GRID, indexing="ij")
    points = np.stack([x0.ravel(), x1.ravel()], -1)
    cell = (GRID[1] - GRID[0]) ** 2
    p = np.exp(log_density(model, points)) * cell
    assert abs(p.sum() - 1.0) < 1e-3
    mean = p @ points
    cov = (points - mean).T @ ((points - mean) * p[:, None])
    np.testing.assert_allclose(mean, moments.mean, atol=1e-3)
    np.testing.assert_allclose(cov, moments.cov, atol=5e-3, rtol=1e-3)


def test_funnel_moments():
    m = vb.models.funnel_moments(3.0)
    np.testing.assert_allclose(m.sd, [3.0, np.exp(9 / 4)])
    assert m.corr == 0.0


def test_mixture_moments_by_hand():
    m = vb.models.mixture_moments(0.25, ((0.0, 0.0), (4.0, 2.0)), sd=0.5)
    np.testing.assert_allclose(m.mean, [3.0, 1.5])
    # 0.25 * 0.75 * d d^T for the between-components part, d = (4, 2)
    np.testing.assert_allclose(m.cov, 0.25 * np.eye(2) + 0.1875 * np.array([[16.0, 8.0], [8.0, 4.0]]))


def test_bad_arguments_say_what_is_allowed():
    with pytest.raises(ValueError, match="rho must be a correlation strictly between -1 and 1"):
        vb.models.correlated_gaussian(1.0)
    with pytest.raises(ValueError, match="weight must be strictly between 0 and 1"):
        vb.models.mixture(weight=0.0)
    with pytest.raises(ValueError, match=r"means must be two 2-D points, shape \(2, 2\)"):
        vb.models.mixture(means=(0.0, 1.0))


def test_fullrank_guide_recovers_the_exact_covariance():
    model = vb.models.correlated_gaussian()
    # From the plain start (a small round Gaussian at 0), not the Laplace one, which is already exact here.
    fit = vb.fit(model, guide="fullrank", num_particles=8, init="prior", learning_rate=3e-2, seed=0, progress_bar=False)
    draws = np.asarray(fit.sample(jax.random.key(1), 100_000)["x"], np.float64)
    exact = vb.models.correlated_gaussian_moments()
    np.testing.assert_allclose(draws.mean(0), exact.mean, atol=0.03)
    np.testing.assert_allclose(np.cov(draws.T), exact.cov, atol=0.03)


@pytest.mark.parametrize("rho", [0.95, 0.6])
def test_meanfield_guide_underestimates_the_marginal_sds_as_theory_says(rho):
    """The exclusive-KL optimum of a mean-field Gaussian has sd sqrt(1 - rho^2), not 1."""
    model = vb.models.correlated_gaussian(rho)
    fit = vb.fit(model, guide="meanfield", num_particles=8, init="prior", learning_rate=3e-2, seed=0, progress_bar=False)
    sd = fit.std(num_draws=100_000, key=jax.random.key(1))["x"]
    np.testing.assert_allclose(sd, np.sqrt(1 - rho**2), rtol=0.05)
    assert np.all(sd < 0.9 * vb.models.correlated_gaussian_moments(rho).sd)


def test_targets_module_lists_its_exports():
    for name in targets.__all__:
        assert getattr(vb.models, name) is getattr(targets, name)
