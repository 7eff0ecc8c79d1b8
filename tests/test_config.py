import dataclasses
import json
import pathlib

import optax
import pytest
from numpyro.distributions import constraints

import vibench as vb


def test_defaults_are_valid_and_stl_resolves_per_objective():
    config = vb.Config()
    assert config.guide == "meanfield" and config.objective == "elbo"
    assert config.use_stl is True
    assert vb.Config(objective="elbo_analytic").use_stl is False
    assert vb.Config(objective="renyi", num_particles=4).use_stl is False
    assert vb.Config(guide="delta").use_stl is False


def test_json_round_trip_keeps_every_field():
    config = vb.Config(guide="lowrank", rank=3, objective="renyi", alpha=0.0, num_particles=16,
                       optimizer="adamw", optimizer_options={"weight_decay": 1e-3},
                       schedule="cosine", warmup_steps=10, clip_norm=5.0, tol=1e-4, seed=7)
    text = config.to_json()
    assert json.loads(text)["vibench_config"] == 1
    assert vb.Config.from_json(text) == config


def test_from_json_rejects_newer_format():
    data = json.loads(vb.Config().to_json())
    data["vibench_config"] = 2
    with pytest.raises(ValueError, match="version 2"):
        vb.Config.from_json(json.dumps(data))


def test_replace_validates_and_rejects_unknown_fields():
    assert vb.Config().replace(learning_rate=0.1).learning_rate == 0.1
    with pytest.raises(TypeError, match="no field"):
        vb.Config().replace(lr=0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        vb.Config().replace(learning_rate=-1.0)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(guide="flow9"), ValueError, "unknown guide 'flow9'; known guides"),
        (dict(objective="kl"), ValueError, "unknown objective 'kl'"),
        (dict(optimizer="lbfgs2"), ValueError, "unknown optimizer 'lbfgs2'"),
        (dict(schedule="linear"), ValueError, "unknown schedule"),
        (dict(num_particles=0), ValueError, "num_particles must be an integer >= 1, got 0"),
        (dict(num_particles=2.0), TypeError, "num_particles must be an integer"),
        (dict(num_steps=0), ValueError, "num_steps must be an integer >= 1"),
        (dict(learning_rate=0.0), ValueError, "learning_rate must be a finite number > 0"),
        (dict(learning_rate=float("nan")), ValueError, "learning_rate"),
        (dict(learning_rate="fast"), TypeError, "learning_rate must be a number"),
        (dict(guide="lowrank", rank=0), ValueError, "rank must be an integer >= 1"),
        (dict(guide="meanfield", rank=2), ValueError, "rank applies to guide 'lowrank' only"),
        (dict(objective="renyi", alpha=1.0, num_particles=4), ValueError, "alpha must not be 1"),
        (dict(objective="renyi", alpha=-0.5, num_particles=4), ValueError, "alpha must be >= 0"),
        (dict(objective="renyi", num_particles=1), ValueError, "needs num_particles >= 2"),
        (dict(objective="renyi", num_particles=4, stl=True), ValueError, "biased"),
        (dict(objective="elbo_analytic", stl=True), ValueError, "no meaning"),
        (dict(guide="delta", num_particles=4), ValueError, "takes num_particles=1 and stl=False"),
        (dict(guide="delta", stl=True), ValueError, "takes num_particles=1 and stl=False"),
        (dict(guide="delta", objective="renyi", num_particles=2), ValueError, "has no density"),
        (dict(stl=1), TypeError, "stl must be a bool"),
        (dict(clip_norm=0.0), ValueError, "clip_norm"),
        (dict(final_lr_ratio=2.0), ValueError, "final_lr_ratio must be in"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(optimizer="adam", optimizer_options={"momentum": 0.9}), ValueError, "has no option"),
    ],
)
def test_bad_values_raise_clear_errors(kwargs, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        vb.Config(**kwargs)


def test_docs_table_lists_every_field():
    text = (pathlib.Path(__file__).parents[1] / "docs" / "config.md").read_text()
    for field in dataclasses.fields(vb.Config):
        assert f"| `{field.name}` |" in text, field.name


def test_custom_optimizer_is_recorded_as_custom():
    model = vb.Model.from_log_density(lambda v: -0.5 * v["x"] ** 2, supports={"x": constraints.real})
    fit = vb.fit(model, num_steps=5, optimizer=optax.sgd(0.1), progress_bar=False)
    assert fit.config.optimizer == "custom"
    assert '"optimizer": "custom"' in fit.config.to_json()
