"""Plan: a Config resolved once into the family, method, objective and optimizer it names."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest
from numpyro.distributions import constraints

import vibench as vb
from vibench.guides import GUIDES
from vibench.methods import ESTIMATOR_FIELDS, METHODS
from vibench.objectives import OBJECTIVES
from vibench.plan import adjust, resolve


@pytest.fixture(scope="module")
def normal():
    return vb.Model.from_log_density(lambda v: dist.Normal(0.0, 1.0).log_prob(v["x"]), {"x": constraints.real},
                                     name="normal")


def test_resolve_gives_the_objects_the_names_mean():
    plan = resolve(vb.Config(guide="lowrank", objective="renyi", num_particles=4, optimizer="momentum"))
    assert plan.guide is GUIDES["lowrank"] and plan.method is METHODS["vi"] and plan.objective is OBJECTIVES["renyi"]
    assert plan.start == "laplace" and plan.stl is False  # renyi's default
    assert plan.program.optimizer == ("momentum", (("momentum", 0.9),))  # the option's default filled in
    assert resolve(vb.Config(guide="pathfinder", init="prior")).start == "pathfinder"  # the method's own start


@pytest.mark.parametrize("guide, objective, particles, stl", [
    ("meanfield", "elbo", 1, True),  # the ELBO's default: stick-the-landing on
    ("iaf", "elbo", 1, False),  # a flow cannot evaluate its density at frozen params cheaply
    ("laplace", "elbo", 1, False),  # fitted at a mode: nothing to stick
    ("pathfinder", "elbo", 8, False),  # fitted by its start
    ("fullrank", "chivi", 4, False),
])
def test_stick_the_landing_defaults(guide, objective, particles, stl):
    config = vb.Config(guide=guide, objective=objective, num_particles=particles)
    assert resolve(config).stl is stl and config.use_stl is stl


def test_what_each_family_takes():
    takes = {name: {field for field in ESTIMATOR_FIELDS if resolve(vb.Config(guide=name)).takes(field)}
             for name in ("meanfield", "iaf", "delta", "laplace", "pathfinder")}
    assert takes["meanfield"] == {"objective", "stl", "num_particles"}  # alpha is Renyi's alone
    assert takes["iaf"] == {"objective", "num_particles"}
    assert takes["delta"] == takes["laplace"] == set()
    assert takes["pathfinder"] == {"num_particles"}
    assert resolve(vb.Config(objective="renyi", num_particles=2)).takes("alpha")


def test_configs_that_differ_in_numbers_share_one_program_and_engine(normal):
    a, b = vb.Config(learning_rate=0.1), vb.Config(learning_rate=0.2, seed=3, num_steps=10, alpha=0.3, tol=1e-3)
    assert resolve(a).program == resolve(b).program
    assert vb.make_engine(normal, a) is vb.make_engine(normal, b)
    c = vb.Config(num_particles=2)
    assert resolve(a).program != resolve(c).program and vb.make_engine(normal, c) is not vb.make_engine(normal, a)
    # The plateau schedule decays through the runtime learning rate: it compiles as constant.
    assert resolve(vb.Config(schedule="plateau")).program == resolve(vb.Config(schedule="constant")).program


def test_a_custom_optimizer_is_part_of_the_program(normal):
    opt = optax.sgd(0.1)
    plan = resolve(vb.Config(optimizer="custom"), opt)
    assert plan.program.optimizer is opt and plan.program.transformation() == (opt, False)
    with pytest.raises(ValueError, match="pass the optax transformation as optimizer="):
        resolve(vb.Config(optimizer="custom")).program


def _shifted(family, offset):
    """``family`` drawing ``offset`` above where it would: another family under the same protocol."""
    return family._replace(
        transform=lambda params, eps: family.transform(params, eps) + offset,
        log_prob=lambda params, z: family.log_prob(params, z - offset),
        mean=lambda params: family.mean(params) + offset,
    )


def test_a_family_registered_again_replaces_the_old_one_and_never_shares_its_programs(normal):
    first = vb.register_guide(GUIDES["meanfield"]._replace(name="swapped"))
    try:
        config = vb.Config(guide="swapped", init="prior", learning_rate=0.05, num_steps=1500, schedule="constant")
        old = vb.fit(normal, config, progress_bar=False)
        old_engine = vb.make_engine(normal, config)
        second = vb.register_guide(_shifted(first, 10.0)._replace(name="swapped"))
        engine = vb.make_engine(normal, config)
        assert engine is not old_engine and engine.guide is second and old_engine.guide is first
        assert old.guide is first  # a fit keeps the family it was fitted with
        np.testing.assert_allclose(old.mean(key=jax.random.key(1))["x"], 0.0, atol=0.1)
        new = vb.fit(normal, config, progress_bar=False)
        assert new.guide is second
        # The new family draws 10 above its location; fitted to N(0, 1), its location moved to -10.
        np.testing.assert_allclose(new.params.loc, [-10.0], atol=0.2)
        np.testing.assert_allclose(new.mean(key=jax.random.key(1))["x"], 0.0, atol=0.2)
    finally:
        del GUIDES["swapped"]


def test_a_fit_given_another_config_resolves_its_plan_again(normal):
    fit = vb.fit(normal, init="prior", num_steps=20, chunk_size=10, progress_bar=False)
    other = dataclasses.replace(fit, config=fit.config.replace(objective="elbo_analytic", stl=False))
    assert other.plan.objective is OBJECTIVES["elbo_analytic"] and fit.plan.objective is OBJECTIVES["elbo"]


@pytest.mark.parametrize("start, changes, expected", [
    # A point family fixes the estimator: one particle, the ELBO, no STL.
    (dict(num_particles=8, stl=True), dict(guide="delta"), dict(guide="delta", num_particles=1, objective="elbo", stl=None)),
    # A bound over several particles gets eight when it had one.
    (dict(), dict(objective="renyi", stl=None), dict(objective="renyi", num_particles=8)),
    # A flow without an inverse cannot serve the forward KL: back to the ELBO, particles kept.
    (dict(objective="forward_kl", num_particles=4), dict(guide="bnaf"), dict(guide="bnaf", objective="elbo", num_particles=4)),
    # Pathfinder keeps its particles: it reads them (its ELBO estimate).
    (dict(objective="renyi", num_particles=4), dict(guide="pathfinder"), dict(guide="pathfinder", objective="elbo", num_particles=4)),
    # A change that is valid as it is stays as it is.
    (dict(objective="renyi", num_particles=4), dict(guide="fullrank"), dict(guide="fullrank", objective="renyi")),
])
def test_adjust_puts_back_what_a_new_family_or_objective_cannot_take(start, changes, expected):
    config = adjust(vb.Config(**start), **changes)
    for name, value in expected.items():
        assert getattr(config, name) == value, (name, getattr(config, name))


def test_adjust_refuses_other_fields_as_they_are():
    with pytest.raises(ValueError, match="stl=True with objective 'renyi'"):
        adjust(vb.Config(objective="renyi", num_particles=4), stl=True)
    with pytest.raises(ValueError, match="learning_rate must be a finite number > 0"):
        adjust(vb.Config(), learning_rate=-1.0)


def test_make_objective_builds_what_the_family_is_fitted_by():
    target = dist.Normal(jnp.array([1.0, 2.0]), 1.0)
    model = vb.Model.from_log_density(lambda v: target.log_prob(v["z"]).sum(), {"z": constraints.real}, shapes={"z": (2,)})
    guide = GUIDES["laplace"]
    params = guide.init(None, jnp.array([1.0, 2.0]), jnp.ones(2), {})
    from vibench.plan import make_objective

    # Laplace moves the location to the mode, whatever objective is named: minus the log density there.
    loss, aux = make_objective("elbo", model, guide, 1)(params, None, vb.hyper_from_config(vb.Config()))
    np.testing.assert_allclose(-loss, target.log_prob(jnp.array([1.0, 2.0])).sum(), rtol=1e-6)
