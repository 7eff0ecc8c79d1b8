import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import vibench as vb
from vibench.guides import GUIDES, dimension, draw, get_guide, transform_log_prob
from vibench.methods import METHODS


def _bnaf_slow(names):
    """The block neural autoregressive flow takes seconds to compile: its cases are marked slow."""
    return [pytest.param(name, marks=pytest.mark.slow) if name == "bnaf" else name for name in names]


def _params(name, key, d=4):
    loc = jnp.linspace(-1.0, 1.0, d)
    scale = jnp.linspace(0.5, 1.5, d)
    params = get_guide(name).init(key, loc, scale, {})
    # Move off the initial point so off-diagonal terms matter.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


@pytest.mark.parametrize("name", _bnaf_slow(sorted(GUIDES)))
def test_protocol_every_registered_family(name, getkey):
    """Every family answers the same calls with the same shapes; optional parts are None or agree."""
    guide = GUIDES[name]
    d, n = 4, 7
    params = _params(name, getkey(), d)
    eps = jax.random.normal(getkey(), (n, guide.noise_dim(params)))
    z = guide.transform(params, eps)
    assert z.shape == (n, d)
    assert dimension(guide, params) == d
    z2, log_q = transform_log_prob(guide, params, eps)
    np.testing.assert_allclose(z2, z, rtol=1e-5, atol=1e-5)
    assert log_q.shape == (n,)
    if not guide.point:
        assert np.all(np.isfinite(log_q))
    if guide.log_prob is not None and not guide.point:
        # Where both exist, the one-pass log density equals log_prob at the same draws.
        np.testing.assert_allclose(guide.log_prob(params, z), log_q, rtol=1e-4, atol=1e-4)
    for moment in (guide.mean, guide.std):
        if moment is not None:
            assert moment(params).shape == (d,)
    assert draw(guide, params, getkey(), 3).shape == (3, d)
    if guide.entropy is not None:
        assert guide.entropy(params).shape == ()
    assert guide.method in METHODS
    # Pure: jit gives the same answer.
    np.testing.assert_allclose(jax.jit(guide.transform)(params, eps), z, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", _bnaf_slow([n for n in sorted(GUIDES) if not GUIDES[n].point]))
def test_every_density_is_normalised(name, getkey):
    """E_r[q(z) / r(z)] = 1 under a wide Normal r: the log densities (flows' Jacobians included)
    integrate to one."""
    guide = GUIDES[name]
    params = _params(name, getkey(), d=2)
    z = jax.random.normal(getkey(), (400_000, 2)) * 4.0
    log_r = dist.Normal(0.0, 4.0).log_prob(z).sum(-1)
    if guide.log_prob is None:
        # No density at given points: E_q[r(z) / q(z)] = 1 as well, for an r inside q's bulk.
        z, log_q = transform_log_prob(guide, params, jax.random.normal(getkey(), (400_000, 2)))
        narrow = dist.Normal(jnp.median(z, 0), 0.3 * jnp.std(z, 0))
        log_r, log_q = log_q, narrow.log_prob(z).sum(-1)
    else:
        log_q = guide.log_prob(params, z)
    np.testing.assert_allclose(jnp.mean(jnp.exp(log_q - log_r)), 1.0, atol=0.03)


@pytest.mark.parametrize("name", [n for n in sorted(GUIDES) if not GUIDES[n].point and GUIDES[n].std is not None])
def test_entropy_and_std_agree_with_monte_carlo(name, getkey):
    guide = GUIDES[name]
    params = _params(name, getkey())
    z = draw(guide, params, getkey(), 200_000)
    if guide.entropy is not None:
        mc_entropy = -jnp.mean(guide.log_prob(params, z))
        np.testing.assert_allclose(guide.entropy(params), mc_entropy, atol=0.02)
    np.testing.assert_allclose(guide.std(params), jnp.std(z, 0), rtol=0.02)
    np.testing.assert_allclose(guide.mean(params), jnp.mean(z, 0), atol=0.02)


@pytest.mark.parametrize("name", _bnaf_slow(["iaf", "bnaf"]))
def test_flows_start_as_the_mean_field_normal(name, getkey):
    """A flow's layers start at (IAF) or near (BNAF) the identity: a Laplace start stays meaningful."""
    loc, scale = jnp.array([0.5, -1.0, 2.0]), jnp.array([1.0, 2.0, 0.5])
    params = GUIDES[name].init(getkey(), loc, scale, {})
    z, log_q = transform_log_prob(GUIDES[name], params, jax.random.normal(getkey(), (50_000, 3)))
    normal = dist.Normal(loc, scale).log_prob(z).sum(-1)
    if name == "iaf":
        np.testing.assert_allclose(log_q, normal, atol=1e-4)
    else:  # the gated residual starts 95% open to the identity
        assert float(jnp.median(jnp.abs(log_q - normal))) < 0.1
    np.testing.assert_allclose(jnp.std(z, 0), scale, rtol=0.1)


def test_flow_options_are_checked(getkey):
    with pytest.raises(ValueError, match="num_flows"):
        GUIDES["iaf"].init(getkey(), jnp.zeros(3), jnp.ones(3), {"num_flows": 0})
    with pytest.raises(ValueError, match="hidden_factors"):
        GUIDES["bnaf"].init(getkey(), jnp.zeros(3), jnp.ones(3), {"hidden_factors": []})
    with pytest.raises(ValueError, match="takes the options"):
        GUIDES["iaf"].init(getkey(), jnp.zeros(3), jnp.ones(3), {"depth": 2})
    with pytest.raises(ValueError, match="dimension >= 2"):
        GUIDES["iaf"].init(getkey(), jnp.zeros(1), jnp.ones(1), {})
    params = GUIDES["iaf"].init(getkey(), jnp.zeros(3), jnp.ones(3), {"num_flows": 3, "hidden_dims": [5]})
    assert len(params.layers) == 3 and params.layers[0][0][0].shape == (3, 5)


def test_log_prob_matches_numpyro_distributions(getkey):
    z = jax.random.normal(getkey(), (5, 4))

    p = _params("meanfield", getkey())
    expected = dist.Normal(p.loc, jnp.exp(p.log_scale)).to_event(1).log_prob(z)
    np.testing.assert_allclose(GUIDES["meanfield"].log_prob(p, z), expected, rtol=1e-5)

    p = _params("fullrank", getkey())
    L = jnp.tril(p.tril, -1) + jnp.diag(jnp.exp(jnp.diag(p.tril)))
    expected = dist.MultivariateNormal(p.loc, covariance_matrix=L @ L.T).log_prob(z)
    np.testing.assert_allclose(GUIDES["fullrank"].log_prob(p, z), expected, rtol=1e-4)

    p = _params("lowrank", getkey())
    cov = p.cov_factor @ p.cov_factor.T + jnp.diag(jnp.exp(2 * p.log_diag))
    expected = dist.MultivariateNormal(p.loc, covariance_matrix=cov).log_prob(z)
    np.testing.assert_allclose(GUIDES["lowrank"].log_prob(p, z), expected, rtol=1e-4)


def test_closed_form_entropies():
    d = 3
    loc = jnp.zeros(d)
    scale = jnp.array([0.5, 1.0, 2.0])
    expected = dist.Normal(loc, scale).entropy().sum()
    for name in ("meanfield", "fullrank"):
        params = GUIDES[name].init(None, loc, scale, {})
        np.testing.assert_allclose(GUIDES[name].entropy(params), expected, rtol=1e-6)


def test_lowrank_rank_is_checked_against_dimension(getkey):
    with pytest.raises(ValueError, match=r"rank must be an integer in \[1, 3\]"):
        GUIDES["lowrank"].init(getkey(), jnp.zeros(3), jnp.ones(3), {"rank": 4})
    params = GUIDES["lowrank"].init(getkey(), jnp.zeros(3), jnp.ones(3), {"rank": 2})
    assert params.cov_factor.shape == (3, 2)


def test_delta_is_a_point():
    params = GUIDES["delta"].init(None, jnp.array([1.0, 2.0]), jnp.ones(2), {})
    z = GUIDES["delta"].transform(params, jnp.zeros((3, 0)))
    np.testing.assert_array_equal(z, [[1.0, 2.0]] * 3)
    assert GUIDES["delta"].point and GUIDES["delta"].entropy is None


def test_register_a_custom_family(getkey):
    """A user's family, built from the same protocol, fits like a built-in one."""
    base = GUIDES["meanfield"]
    custom = base._replace(name="meanfield_copy")
    vb.register_guide(custom)
    try:
        model = vb.Model.from_log_density(
            lambda v: dist.Normal(1.0, 0.5).log_prob(v["x"]), supports={"x": dist.constraints.real}
        )
        fit = vb.fit(model, guide="meanfield_copy", num_steps=2000, learning_rate=0.05, progress_bar=False)
        np.testing.assert_allclose(fit.mean(key=getkey())["x"], 1.0, atol=0.05)
    finally:
        del GUIDES["meanfield_copy"]
    with pytest.raises(TypeError):
        vb.register_guide("not a guide")
