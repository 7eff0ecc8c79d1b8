"""Every row of docs/errors.md, run: the bad input raises the documented type and message.

The tables are parsed from the page, so a row without a case here, or a case without a row, fails.
"""

import functools
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.distributions import constraints

import vibench as vb
from vibench.model import check_model

DOC = pathlib.Path(__file__).parents[1] / "docs" / "errors.md"

# Rows with bad data make NumPyro warn before vibench raises; the error is what is tested.
pytestmark = pytest.mark.filterwarnings("ignore:.*Out-of-support values:UserWarning")


def _rows():
    rows = []
    for line in DOC.read_text().splitlines():
        if not line.startswith("| ") or line.startswith("| bad input"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        assert len(cells) == 3, line
        bad_input, error, message = cells
        assert message.startswith("`") and message.endswith("`"), line
        rows.append((bad_input, error, message[1:-1]))
    return rows


ROWS = _rows()


# ---------------------------------------------------------------- the models and fits the rows use


def _logp(v):
    return dist.Normal(1.0, 2.0).log_prob(v["x"]).sum()


@functools.cache
def tiny():
    return vb.Model.from_log_density(_logp, {"x": constraints.real}, shapes={"x": (2,)}, name="tiny")


@functools.cache
def positive():
    return vb.Model.from_log_density(lambda v: dist.Gamma(2.0, 1.0).log_prob(v["s"]), {"s": constraints.positive})


QUICK = dict(init="prior", num_steps=8, chunk_size=4, progress_bar=False)


@functools.cache
def tiny_fit():
    return vb.fit(tiny(), **QUICK)


@functools.cache
def saved(tmp: pathlib.Path) -> pathlib.Path:
    path = tmp / "tiny.npz"
    tiny_fit().save(path)
    return path


def _numpyro(fn, *args):
    return lambda: vb.Model.from_numpyro(fn, *args)


def observed_only(y):
    numpyro.sample("y", dist.Normal(0.0, 1.0), obs=y)


def discrete(y):
    k = numpyro.sample("k", dist.Categorical(jnp.ones(2) / 2))
    numpyro.sample("y", dist.Normal(k * 1.0, 1.0), obs=y)


def with_param(y):
    loc = numpyro.param("loc", 0.0)
    x = numpyro.sample("x", dist.Normal(loc, 1.0))
    numpyro.sample("y", dist.Normal(x, 1.0), obs=y)


def normal_plate(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", 3):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def poisson(y):
    rate = numpyro.sample("rate", dist.Gamma(2.0, 1.0))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Poisson(rate), obs=y)


def regression(x, y):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    numpyro.sample("y", dist.Normal(x @ w, 1.0), obs=y)


def subsampled_mean(y, batch_size=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", y.shape[0], subsample_size=batch_size) as index:
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y[index])


def model_fn(y=None):
    numpyro.sample("mu", dist.Normal(0.0, 1.0))


def _nan_away_from_zero(v):
    return jnp.where(jnp.abs(v["x"]) > 1e-3, jnp.nan, 0.0) - v["x"] ** 2


def _failing_callback(step, trace, state):
    return 1 / 0


def _workbench(obj):
    if hasattr(vb, "Workbench"):
        return vb.Workbench(obj)
    return check_model(obj, "Workbench")  # what the Workbench calls


def _rewrite(path, out, **changes):
    """A copy of the checkpoint at ``path`` with header fields changed."""
    import json

    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    header = json.loads(arrays["header"].tobytes().decode())
    header.update(changes)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(out, **arrays)
    return out


def _damaged(path, out, how):
    data = bytearray(path.read_bytes())
    if how == "truncate":
        data = data[: len(data) // 2]
    else:
        middle = len(data) // 2
        data[middle : middle + 64] = bytes(64)
    out.write_bytes(bytes(data))
    return out


def _custom_fit():
    return vb.fit(tiny(), optimizer=optax.adam(1e-2), **QUICK)


C = vb.Config
K = jax.random.key(0)

CASES = {
    # Config
    '`Config(guide=3)`': lambda tmp: C(guide=3),
    '`Config(guide="flow9")`': lambda tmp: C(guide="flow9"),
    '`Config(guide="lowrank", rank=2.5)`': lambda tmp: C(guide="lowrank", rank=2.5),
    '`Config(guide="lowrank", rank=0)`': lambda tmp: C(guide="lowrank", rank=0),
    '`Config(rank=2)` (guide `meanfield`)': lambda tmp: C(rank=2),
    '`vb.fit(tiny, guide="lowrank", rank=3)`': lambda tmp: vb.fit(tiny(), guide="lowrank", rank=3, **QUICK),
    '`Config(guide_options=[])`': lambda tmp: C(guide_options=[]),
    '`Config(guide_options={1: 2})`': lambda tmp: C(guide_options={1: 2}),
    '`Config(guide_options={"a": object()})`': lambda tmp: C(guide_options={"a": object()}),
    '`Config(guide_options={"a": float("nan")})`': lambda tmp: C(guide_options={"a": float("nan")}),
    '`vb.fit(tiny, guide_options={"a": 1})`': lambda tmp: vb.fit(tiny(), guide_options={"a": 1}, **QUICK),
    '`Config(init=None)`': lambda tmp: C(init=None),
    '`Config(init="zero")`': lambda tmp: C(init="zero"),
    '`Config(init_scale="big")`': lambda tmp: C(init_scale="big"),
    '`Config(init_scale=0)`': lambda tmp: C(init_scale=0),
    '`Config(objective=None)`': lambda tmp: C(objective=None),
    '`Config(objective="kl")`': lambda tmp: C(objective="kl"),
    '`Config(num_particles=2.0)`': lambda tmp: C(num_particles=2.0),
    '`Config(num_particles=0)`': lambda tmp: C(num_particles=0),
    '`Config(stl=1)`': lambda tmp: C(stl=1),
    '`Config(objective="elbo_analytic", stl=True)`': lambda tmp: C(objective="elbo_analytic", stl=True),
    '`Config(objective="renyi", num_particles=4, stl=True)`': lambda tmp: C(objective="renyi", num_particles=4, stl=True),
    '`Config(alpha="half")`': lambda tmp: C(alpha="half"),
    '`Config(alpha=-0.5)`': lambda tmp: C(alpha=-0.5),
    '`Config(objective="renyi", alpha=1.0, num_particles=4)`': lambda tmp: C(objective="renyi", alpha=1.0, num_particles=4),
    '`Config(objective="renyi")` (one particle)': lambda tmp: C(objective="renyi"),
    '`Config(objective="chivi")` (one particle)': lambda tmp: C(objective="chivi"),
    '`Config(objective="chivi", num_particles=4, stl=True)`': lambda tmp: C(objective="chivi", num_particles=4, stl=True),
    '`Config(objective="forward_kl")` (one particle)': lambda tmp: C(objective="forward_kl"),
    '`Config(objective="forward_kl", num_particles=4, stl=True)`': lambda tmp: C(objective="forward_kl", num_particles=4, stl=True),
    '`Config(guide="delta", num_particles=4)`': lambda tmp: C(guide="delta", num_particles=4),
    '`Config(guide="delta", objective="renyi", num_particles=2)`': lambda tmp: C(guide="delta", objective="renyi", num_particles=2),
    '`Config(guide="delta", objective="elbo_analytic")`': lambda tmp: C(guide="delta", objective="elbo_analytic"),
    '`Config(guide="delta", objective="chivi", num_particles=2)`': lambda tmp: C(guide="delta", objective="chivi", num_particles=2),
    '`Config(guide="delta", objective="forward_kl", num_particles=2)`': lambda tmp: C(guide="delta", objective="forward_kl", num_particles=2),
    '`Config(optimizer=0.1)`': lambda tmp: C(optimizer=0.1),
    '`Config(optimizer="lbfgs2")`': lambda tmp: C(optimizer="lbfgs2"),
    '`Config(optimizer_options=None)`': lambda tmp: C(optimizer_options=None),
    '`Config(optimizer_options={"momentum": 0.9})` (optimizer `adam`)': lambda tmp: C(optimizer_options={"momentum": 0.9}),
    '`Config(optimizer_options={"b1": [0.9]})`': lambda tmp: C(optimizer_options={"b1": [0.9]}),
    '`Config(learning_rate="fast")`': lambda tmp: C(learning_rate="fast"),
    '`Config(learning_rate=0.0)`': lambda tmp: C(learning_rate=0.0),
    '`Config(learning_rate=float("nan"))`': lambda tmp: C(learning_rate=float("nan")),
    '`Config(learning_rate=10**400)`': lambda tmp: C(learning_rate=10**400),
    '`Config(schedule=1)`': lambda tmp: C(schedule=1),
    '`Config(schedule="linear")`': lambda tmp: C(schedule="linear"),
    '`Config(warmup_steps=1.5)`': lambda tmp: C(warmup_steps=1.5),
    '`Config(warmup_steps=-1)`': lambda tmp: C(warmup_steps=-1),
    '`Config(final_lr_ratio="x")`': lambda tmp: C(final_lr_ratio="x"),
    '`Config(final_lr_ratio=0)`': lambda tmp: C(final_lr_ratio=0),
    '`Config(final_lr_ratio=2.0)`': lambda tmp: C(final_lr_ratio=2.0),
    '`Config(clip_norm="1")`': lambda tmp: C(clip_norm="1"),
    '`Config(clip_norm=0.0)`': lambda tmp: C(clip_norm=0.0),
    '`Config(num_steps=True)`': lambda tmp: C(num_steps=True),
    '`Config(num_steps=0)`': lambda tmp: C(num_steps=0),
    '`Config(num_steps=2**31)`': lambda tmp: C(num_steps=2**31),
    '`Config(seed=1.0)`': lambda tmp: C(seed=1.0),
    '`Config(seed=-1)`': lambda tmp: C(seed=-1),
    '`Config(chunk_size="500")`': lambda tmp: C(chunk_size="500"),
    '`Config(chunk_size=0)`': lambda tmp: C(chunk_size=0),
    '`Config(tol="small")`': lambda tmp: C(tol="small"),
    '`Config(tol=-1e-3)`': lambda tmp: C(tol=-1e-3),
    '`Config().replace(lr=0.1)`': lambda tmp: C().replace(lr=0.1),
    '`vb.fit(tiny, lr=0.1)`': lambda tmp: vb.fit(tiny(), lr=0.1),
    '`Config.from_json(3)`': lambda tmp: C.from_json(3),
    '`Config.from_json("{")`': lambda tmp: C.from_json("{"),
    '`Config.from_json(\'{"vibench_config": 2}\')`': lambda tmp: C.from_json('{"vibench_config": 2}'),
    '`Config.from_json(\'{"lr": 0.1}\')`': lambda tmp: C.from_json('{"lr": 0.1}'),
    # Models
    '`Model.from_numpyro("eight_schools")`': lambda tmp: vb.Model.from_numpyro("eight_schools"),
    "a NumPyro model with no latent sites (every sample site observed)": lambda tmp: _numpyro(observed_only, 0.5)(),
    "a NumPyro model with a discrete latent site (`dist.Categorical`)": lambda tmp: _numpyro(discrete, 0.5)(),
    "a NumPyro model with a `numpyro.param` site": lambda tmp: _numpyro(with_param, 0.5)(),
    "data with NaN at an observed site (`Normal` likelihood)": lambda tmp: _numpyro(normal_plate, np.array([0.0, np.nan, 1.0]))(),
    "data outside the likelihood's support (a negative count for a `Poisson`)": lambda tmp: _numpyro(poisson, np.array([1.0, -2.0, 3.0]))(),
    "data whose shape disagrees with the model's plate (5 values in a `plate` of 3)": lambda tmp: _numpyro(normal_plate, np.zeros(5))(),
    "data whose shape breaks the model's arithmetic (`x @ w` with `x` of 4 columns, `w` of 3)": lambda tmp: _numpyro(regression, np.zeros((5, 4)), np.zeros(5))(),
    '`Model.from_log_density("logp", ...)`': lambda tmp: vb.Model.from_log_density("logp", {"x": constraints.real}),
    '`from_log_density(logp, supports=[("x", constraints.real)])`': lambda tmp: vb.Model.from_log_density(_logp, [("x", constraints.real)]),
    "`from_log_density(logp, supports={})`": lambda tmp: vb.Model.from_log_density(_logp, {}),
    '`from_log_density(logp, {"x": "positive"})`': lambda tmp: vb.Model.from_log_density(_logp, {"x": "positive"}),
    '`from_log_density(logp, {"k": constraints.nonnegative_integer})`': lambda tmp: vb.Model.from_log_density(
        lambda v: 0.0 * v["k"], {"k": constraints.nonnegative_integer}
    ),
    '`from_log_density(logp, {"x": constraints.real}, shapes={"y": ()})`': lambda tmp: vb.Model.from_log_density(
        _logp, {"x": constraints.real}, shapes={"y": ()}
    ),
    "a log density that is NaN or infinite at the initial point": lambda tmp: vb.Model.from_log_density(
        lambda v: jnp.log(v["x"] - 5.0), {"x": constraints.positive}
    ),
    "a log density that returns an array, not a scalar": lambda tmp: vb.Model.from_log_density(
        lambda v: -0.5 * v["x"] ** 2, {"x": constraints.real}, shapes={"x": (2,)}
    ),
    'a log density whose arithmetic disagrees with `shapes=` (data of 3 values, `shapes={"x": (2,)}`)': lambda tmp: vb.Model.from_log_density(
        lambda v: -0.5 * jnp.sum((v["x"] - jnp.ones(3)) ** 2), {"x": constraints.real}, shapes={"x": (2,)}
    ),
    # Fitting
    '`vb.fit("not a model")`': lambda tmp: vb.fit("not a model"),
    "`vb.fit(model_fn)` (a model function, not wrapped)": lambda tmp: vb.fit(model_fn),
    '`vb.Workbench("not a model")` (the Workbench checks with `vibench.model.check_model`, as `fit` does)': lambda tmp: _workbench("not a model"),
    '`vb.fit(tiny, config={"guide": "fullrank"})`': lambda tmp: vb.fit(tiny(), config={"guide": "fullrank"}),
    '`vb.fit(tiny, optimizer="adam")`': lambda tmp: vb.fit(tiny(), optimizer="adam"),
    '`vb.fit(tiny, Config(optimizer="custom"))` (no `optimizer=`)': lambda tmp: vb.fit(tiny(), C(optimizer="custom")),
    "`vb.fit(tiny, init_values=[1.0, 2.0])`": lambda tmp: vb.fit(tiny(), init_values=[1.0, 2.0], **QUICK),
    '`vb.fit(tiny, init_values={"sigma": 1.0})`': lambda tmp: vb.fit(tiny(), init_values={"sigma": 1.0}, **QUICK),
    '`vb.fit(tiny, init_values={"x": [1.0, 2.0, 3.0]})`': lambda tmp: vb.fit(tiny(), init_values={"x": [1.0, 2.0, 3.0]}, **QUICK),
    '`vb.fit(positive, init_values={"s": -1.0})` (a `constraints.positive` site)': lambda tmp: vb.fit(
        positive(), init_values={"s": -1.0}, **QUICK
    ),
    "`vb.fit(tiny, init=fit, init_values={...})`": lambda tmp: vb.fit(
        tiny(), init=tiny_fit(), init_values={"x": [0.0, 0.0]}, progress_bar=False
    ),
    "`vb.fit(tiny, init=3)`": lambda tmp: vb.fit(tiny(), init=3, progress_bar=False),
    "`vb.fit(tiny, init=fit_of_another_model)` (resuming a fit of another model)": lambda tmp: vb.fit(
        positive(), init=tiny_fit(), progress_bar=False
    ),
    '`vb.fit(tiny, guide="fullrank", init=meanfield_fit)`': lambda tmp: vb.fit(
        tiny(), guide="fullrank", init=tiny_fit(), progress_bar=False
    ),
    "a log density that is NaN everywhere but at the initial point (every step of the first chunk rejected; raised after that chunk)": lambda tmp: vb.fit(
        vb.Model.from_log_density(_nan_away_from_zero, {"x": constraints.real}), **QUICK
    ),
    "a callback that raises (raised after the chunk it was shown; `err.fit` holds the fit so far)": lambda tmp: vb.fit(
        tiny(), callbacks=[_failing_callback], **QUICK
    ),
    # Fitting many runs
    '`vb.fit_many("model", Config(), seeds=[0])`': lambda tmp: vb.fit_many("model", C(), seeds=[0]),
    "`vb.fit_many(tiny, Config())` (no `seeds=`)": lambda tmp: vb.fit_many(tiny(), C()),
    "`vb.fit_many(tiny, Config(), seeds=3)`": lambda tmp: vb.fit_many(tiny(), C(), seeds=3),
    "`vb.fit_many(tiny, [Config(), Config()], seeds=[0, 1])`": lambda tmp: vb.fit_many(tiny(), [C(), C()], seeds=[0, 1]),
    '`vb.fit_many(tiny, {"seed": 1})`': lambda tmp: vb.fit_many(tiny(), {"seed": 1}),
    '`vb.fit_many(tiny, [Config(), {"seed": 1}])`': lambda tmp: vb.fit_many(tiny(), [C(), {"seed": 1}]),
    "`vb.fit_many(tiny, [])`": lambda tmp: vb.fit_many(tiny(), []),
    "`vb.fit_many(tiny, [Config(), Config(num_particles=4)])`": lambda tmp: vb.fit_many(tiny(), [C(), C(num_particles=4)]),
    '`vb.fit_many(tiny, [Config(), Config(schedule="constant")])`': lambda tmp: vb.fit_many(tiny(), [C(), C(schedule="constant")]),
    "`vb.fit_many(subsampled, Config(), seeds=[0, 1])` (a model with `batch_size`)": lambda tmp: vb.fit_many(
        vb.Model.from_numpyro(subsampled_mean, np.zeros(10), batch_size=5), C(), seeds=[0, 1]
    ),
    # Using a fit
    "`fit.sample(key, 0)`": lambda tmp: tiny_fit().sample(K, 0),
    "`vb.Workbench(model_fn)` (a NumPyro model function, not a `vb.Model`)": lambda tmp: vb.Workbench(_numpyro_fn),
    '`vb.Workbench("model")`': lambda tmp: vb.Workbench("model"),
    "`vb.Workbench(tiny, config={})`": lambda tmp: vb.Workbench(tiny(), config={}),
    "`vb.Workbench(tiny, reference=[1, 2])`": lambda tmp: vb.Workbench(tiny(), reference=[1, 2]),
    "`wb.export()` before any run": lambda tmp: vb.Workbench(tiny()).export(),
    "`fit.sample(key, 2.5)`": lambda tmp: tiny_fit().sample(K, 2.5),
    "`fit.sample_unconstrained(key, -1)`": lambda tmp: tiny_fit().sample_unconstrained(K, -1),
    "`fit.mean(num_draws=0)`": lambda tmp: tiny_fit().mean(num_draws=0),
    "`fit.elbo(num_particles=0)`": lambda tmp: tiny_fit().elbo(num_particles=0),
    # Checkpoints
    '`vb.Fit.load(path, "model")`': lambda tmp: vb.Fit.load(saved(tmp), "model"),
    '`vb.Fit.load("missing.npz", tiny)`': lambda tmp: vb.Fit.load(tmp / "missing.npz", tiny()),
    "a file that is not a checkpoint (text)": lambda tmp: (tmp / "notes.npz").write_text("not a fit") and vb.Fit.load(tmp / "notes.npz", tiny()),
    "a truncated checkpoint (the first half of the file)": lambda tmp: vb.Fit.load(_damaged(saved(tmp), tmp / "cut.npz", "truncate"), tiny()),
    "a corrupted checkpoint (bytes overwritten inside)": lambda tmp: vb.Fit.load(_damaged(saved(tmp), tmp / "bad.npz", "zero"), tiny()),
    "an `.npz` archive written by something else": lambda tmp: np.savez(tmp / "other.npz", a=np.zeros(3)) or vb.Fit.load(tmp / "other.npz", tiny()),
    "a checkpoint of another model (another dimension)": lambda tmp: vb.Fit.load(
        saved(tmp), vb.Model.from_log_density(_logp, {"x": constraints.real}, shapes={"x": (3,)}, name="wide")
    ),
    "a checkpoint of another model (same dimension, other site names)": lambda tmp: vb.Fit.load(
        saved(tmp), vb.Model.from_log_density(lambda v: _logp({"x": v["y"]}), {"y": constraints.real}, shapes={"y": (2,)})
    ),
    "a checkpoint of a newer format version": lambda tmp: vb.Fit.load(_rewrite(saved(tmp), tmp / "v2.npz", version=2, vibench="9.0"), tiny()),
    "a fit made with `fit(optimizer=...)`, loaded without `optimizer=`": lambda tmp: _custom_fit().save(tmp / "custom.npz")
    or vb.Fit.load(tmp / "custom.npz", tiny()),
    "`optimizer=` for a fit made with a named optimizer": lambda tmp: vb.Fit.load(saved(tmp), tiny(), optimizer=optax.adam(1e-2)),
    "`optimizer=` whose state differs from the saved one (`optax.sgd` for a saved `optax.adam`)": lambda tmp: _custom_fit().save(
        tmp / "custom.npz"
    )
    or vb.Fit.load(tmp / "custom.npz", tiny(), optimizer=optax.sgd(0.1)),
}

def _numpyro_fn():
    pass


EXCEPTIONS = {
    "TypeError": TypeError,
    "ValueError": ValueError,
    "FloatingPointError": FloatingPointError,
    "FileNotFoundError": FileNotFoundError,
    "CallbackError": vb.CallbackError,
}


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("errors")


@pytest.mark.parametrize("bad_input, error, message", ROWS, ids=[row[0] for row in ROWS])
def test_each_documented_error(tmp, bad_input, error, message):
    assert bad_input in CASES, f"docs/errors.md row without a test case: {bad_input}"
    with pytest.raises(EXCEPTIONS[error], match=re.escape(message)) as info:
        CASES[bad_input](tmp)
    assert type(info.value) is EXCEPTIONS[error] or error == "FileNotFoundError"


def test_every_case_has_a_row():
    assert set(CASES) == {row[0] for row in ROWS}


def test_a_failing_callback_keeps_the_fit_so_far():
    with pytest.raises(vb.CallbackError) as info:
        vb.fit(tiny(), callbacks=[_failing_callback], **QUICK)
    err = info.value
    assert isinstance(err.__cause__, ZeroDivisionError)
    assert err.fit.stop_reason == "error" and err.fit.num_steps == 4 and int(err.fit.state.step) == 4
    again = vb.fit(tiny(), err.fit.config.replace(num_steps=4), init=err.fit, progress_bar=False)
    assert again.num_steps == 8 and again.stop_reason == "completed"
