"""Accuracy of vibench's fits against reference posteriors from posteriordb.

    python benchmarks/posteriordb.py --check             # each model's density against the reference draws
    python benchmarks/posteriordb.py --compare-start     # default start vs the plain start, full-rank guide
    python benchmarks/posteriordb.py --families          # every registered guide family, default Config
    python benchmarks/posteriordb.py --compare-start --only garch-garch11 --posteriordb PATH

The eight posteriors are written here as NumPyro models from their Stan programs in posteriordb
(github stan-dev/posteriordb). Tables go to stdout as markdown; progress goes to stderr.

The reference folder (``--posteriordb``; default ``../shared/posteriordb`` from the repository root)
holds, per posterior ``<name>``:

- ``<name>.data.json``: the data, as posteriordb ships it;
- ``<name>.ref.json``: a JSON object whose ``summary`` maps each parameter's Stan name (``theta[1]``
  is the first element, 1-based) to its ``mean``, ``sd``, ``q05``, ``q50`` and ``q95`` in the
  constrained space, over 10,000 pooled NUTS draws (10 chains, thinned to near independence, so a
  mean's Monte Carlo error is about sd/100); other keys describe constraints and geometry;
- ``<name>.draws.npz``: the raw reference draws, ``draws`` of shape (chains, draws, P) and ``names``
  (P Stan names).

Scores per fit, from 20,000 guide draws: the largest |mean - reference mean| / reference sd over the
parameters, the range of sd / reference sd, and the PSIS Pareto k-hat (Yao et al. 2018,
https://arxiv.org/abs/1802.02538) of 4,000 importance weights p(z)/q(z) in the flat space, and
the largest mean error of those 4,000 draws after Pareto-smoothed importance reweighting (what
``fit.to_arviz(psis_reweight=True)`` exports), and vibench's mean-shift diagnostic from the same
draws (``vibench.diagnostics.psis_shift``: how far the weights move the guide's means, in guide
sds; ``fit.diagnose()`` calls a fit biased above 0.3).

``--check`` needs no VI: at the reference draws z (mapped to the model's flat space, then whitened
by their covariance) the score g = grad log p(z) of a correct model satisfies E[g] = 0 and
E[g (z - E z)^T] = -I (Stein's identity), so a wrong prior, likelihood or Jacobian shows up as
large t-statistics (|t| above about 4 means the model is not the reference's). On the centred eight
schools the funnel makes the score's variance so large that the check says little there.

Flat spaces are NumPyro's: the same posteriors as Stan's, but not always the same unconstrained
coordinates (hmm_example's positive_ordered mu is log-ordered here, Stan takes mu1 = exp(x1),
mu2 = mu1 + exp(x2)). Every row builds a fresh Model, so its times include its own compiling.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import logsumexp
from numpyro.distributions import constraints

import vibench as vb

NUM_DRAWS = 20_000  # guide draws for the moments
NUM_WEIGHTS = 4_000  # guide draws for PSIS k-hat
ROOT = Path(__file__).resolve().parent.parent


def _f32(values):
    return jnp.asarray(np.asarray(values, np.float64), jnp.float32)


def _flat(name, shape=()):
    """An improper flat prior on the reals (Stan's parameter without a ~ statement)."""
    return numpyro.sample(name, dist.ImproperUniform(constraints.real, (), shape))


# The models, each from posteriordb's Stan program; comments give the Stan parameter block.


def sblri_blr(X, y):
    # vector[D] beta; real<lower=0> sigma;
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([X.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(10.0))
    numpyro.sample("y", dist.Normal(X @ beta, sigma), obs=y)


def kidscore_interaction(mom_hs, mom_iq, kid_score):
    # vector[4] beta (no prior: flat); real<lower=0> sigma ~ cauchy(0, 2.5)
    beta = _flat("beta", (4,))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    mean = beta[0] + beta[1] * mom_hs + beta[2] * mom_iq + beta[3] * mom_hs * mom_iq
    numpyro.sample("kid_score", dist.Normal(mean, sigma), obs=kid_score)


def eight_schools_noncentered(y, sigma):
    # vector[J] theta_trans ~ normal(0, 1); real mu ~ normal(0, 5); real<lower=0> tau ~ cauchy(0, 5)
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    theta_trans = numpyro.sample("theta_trans", dist.Normal(0.0, 1.0).expand([y.shape[0]]).to_event(1))
    theta = numpyro.deterministic("theta", mu + tau * theta_trans)
    numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def eight_schools_centered(y, sigma):
    # array[J] real theta ~ normal(mu, tau); real mu ~ normal(0, 5); real<lower=0> tau ~ cauchy(0, 5)
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    theta = numpyro.sample("theta", dist.Normal(mu, tau).expand([y.shape[0]]).to_event(1))
    numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def low_dim_gauss_mix(y):
    # ordered[2] mu ~ normal(0, 2); array[2] real<lower=0> sigma ~ normal(0, 2); real<lower=0, upper=1> theta ~ beta(5, 5)
    mu = numpyro.sample("mu", dist.ImproperUniform(constraints.ordered_vector, (), (2,)))
    numpyro.factor("mu_prior", jnp.sum(dist.Normal(0.0, 2.0).log_prob(mu)))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0).expand([2]).to_event(1))
    theta = numpyro.sample("theta", dist.Beta(5.0, 5.0))
    mixing = dist.Categorical(probs=jnp.stack([theta, 1.0 - theta]))
    with numpyro.plate("N", y.shape[0]):
        numpyro.sample("y", dist.MixtureSameFamily(mixing, dist.Normal(mu, sigma)), obs=y)


def hmm_example(y):
    # simplex[2] theta1, theta2 (flat: rows of the transition matrix); positive_ordered[2] mu
    theta1 = numpyro.sample("theta1", dist.ImproperUniform(constraints.simplex, (), (2,)))
    theta2 = numpyro.sample("theta2", dist.ImproperUniform(constraints.simplex, (), (2,)))
    mu = numpyro.sample("mu", dist.ImproperUniform(constraints.positive_ordered_vector, (), (2,)))
    numpyro.factor("mu_prior", dist.Normal(3.0, 1.0).log_prob(mu[0]) + dist.Normal(10.0, 1.0).log_prob(mu[1]))
    log_transition = jnp.log(jnp.stack([theta1, theta2]))  # [from, to]
    emission = dist.Normal(mu, 1.0).log_prob(y[:, None])  # (N, 2)

    def forward(log_alpha, emission_t):
        return logsumexp(log_alpha[:, None] + log_transition, axis=0) + emission_t, None

    # Stan's forward pass starts from the emission density of y[1] alone: no initial-state term.
    log_alpha, _ = jax.lax.scan(forward, emission[0], emission[1:])
    numpyro.factor("y", logsumexp(log_alpha))


def garch11(y, sigma1):
    # real mu; real<lower=0> alpha0; real<lower=0, upper=1> alpha1; real<lower=0, upper=(1-alpha1)> beta1; no priors
    mu = _flat("mu")
    alpha0 = numpyro.sample("alpha0", dist.ImproperUniform(constraints.positive, (), ()))
    alpha1 = numpyro.sample("alpha1", dist.Uniform(0.0, 1.0))
    # beta1 = (1 - alpha1) * share with share uniform on (0, 1), as Stan does it. The share's density
    # would make beta1's 1/(1 - alpha1); the Jacobian (1 - alpha1) makes the joint flat in (alpha1, beta1).
    share = numpyro.sample("beta1_share", dist.Uniform(0.0, 1.0))
    beta1 = numpyro.deterministic("beta1", (1.0 - alpha1) * share)
    numpyro.factor("beta1_jacobian", jnp.log1p(-alpha1))

    def variance(previous, y_previous):
        current = alpha0 + alpha1 * (y_previous - mu) ** 2 + beta1 * previous
        return current, current

    _, variances = jax.lax.scan(variance, sigma1**2, y[:-1])
    sigma = jnp.concatenate([jnp.reshape(sigma1, (1,)), jnp.sqrt(variances)])
    numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


def diamonds(Xc, Y):
    # vector[Kc] b ~ normal(0, 1); real Intercept ~ student_t(3, 8, 10); real<lower=0> sigma ~ student_t(3, 0, 10)
    b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([Xc.shape[1]]).to_event(1))
    intercept = numpyro.sample("Intercept", dist.StudentT(3.0, 8.0, 10.0))
    # The half-Student-t by hand: numpyro's truncated Student-t samples through an inverse CDF that
    # needs tensorflow_probability, and the truncation's normaliser is a constant anyway.
    sigma = numpyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
    numpyro.factor("sigma_prior", dist.StudentT(3.0, 0.0, 10.0).log_prob(sigma))
    numpyro.sample("Y", dist.Normal(intercept + Xc @ b, sigma), obs=Y)


def _diamonds_args(data):
    X = np.asarray(data["X"], np.float64)
    Xc = X[:, 1:] - X[:, 1:].mean(axis=0)  # brms centres columns 2..K; column 1 is the intercept's
    return _f32(Xc), _f32(data["Y"])


def _noncentered_latent(ref):
    return {"mu": ref["mu"], "tau": ref["tau"], "theta_trans": (ref["theta"] - ref["mu"][:, None]) / ref["tau"][:, None]}


def _garch_latent(ref):
    keep = {k: ref[k] for k in ("mu", "alpha0", "alpha1")}
    return {**keep, "beta1_share": ref["beta1"] / (1.0 - ref["alpha1"])}


class Posterior(NamedTuple):
    """A reference posterior: its model, the model's arguments from the data, and the map from the
    reference draws (by Stan base name, ``(n, *shape)``) to the model's latent sites."""

    model: Callable
    args: Callable[[dict], tuple]
    latent: Callable[[dict], dict] = lambda ref: ref


POSTERIORS = {
    "sblri-blr": Posterior(sblri_blr, lambda d: (_f32(d["X"]), _f32(d["y"]))),
    "kidiq-kidscore_interaction": Posterior(
        kidscore_interaction, lambda d: (_f32(d["mom_hs"]), _f32(d["mom_iq"]), _f32(d["kid_score"]))
    ),
    "eight_schools-eight_schools_noncentered": Posterior(
        eight_schools_noncentered, lambda d: (_f32(d["y"]), _f32(d["sigma"])), _noncentered_latent
    ),
    "eight_schools-eight_schools_centered": Posterior(eight_schools_centered, lambda d: (_f32(d["y"]), _f32(d["sigma"]))),
    "low_dim_gauss_mix-low_dim_gauss_mix": Posterior(low_dim_gauss_mix, lambda d: (_f32(d["y"]),)),
    "hmm_example-hmm_example": Posterior(hmm_example, lambda d: (_f32(d["y"]),)),
    "garch-garch11": Posterior(garch11, lambda d: (_f32(d["y"]), _f32(d["sigma1"])), _garch_latent),
    "diamonds-diamonds": Posterior(diamonds, _diamonds_args),
}

_STAN_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[([0-9, ]+)\])?$")


def _parse(name: str) -> tuple:
    """``"theta[3]"`` -> ``("theta", (2,))``: base name and 0-based index."""
    match = _STAN_NAME.match(name)
    if match is None:
        raise ValueError(f"cannot read the Stan parameter name {name!r}")
    index = tuple(int(i) - 1 for i in match.group(2).split(",")) if match.group(2) else ()
    return match.group(1), index


def columns(draws: dict, names: list) -> np.ndarray:
    """Draws by site ``{name: (n, *shape)}`` to a matrix ``(n, P)`` in the order of Stan ``names``."""
    out = []
    for name in names:
        base, index = _parse(name)
        if base not in draws:
            raise KeyError(f"the model has no site {base!r} for the reference parameter {name!r}")
        value = np.asarray(draws[base], np.float64)
        out.append(value[(slice(None),) + index])
    return np.stack(out, axis=1)


def by_site(matrix: np.ndarray, names: list) -> dict:
    """The inverse of :func:`columns`: ``(n, P)`` draws named in Stan to ``{base: (n, *shape)}``."""
    parsed = [_parse(name) for name in names]
    shapes: dict = {}
    for base, index in parsed:
        shapes[base] = tuple(max(a, i + 1) for a, i in zip(shapes.get(base, index), index))
    out = {base: np.zeros((matrix.shape[0],) + shape) for base, shape in shapes.items()}
    for column, (base, index) in enumerate(parsed):
        out[base][(slice(None),) + index] = matrix[:, column]
    return out


class Reference(NamedTuple):
    names: list
    mean: np.ndarray  # (P,)
    sd: np.ndarray  # (P,)
    data: dict


def load(folder: Path, name: str) -> Reference:
    summary = json.loads((folder / f"{name}.ref.json").read_text())["summary"]
    names = list(summary)
    data = json.loads((folder / f"{name}.data.json").read_text())
    return Reference(names, np.array([summary[k]["mean"] for k in names]), np.array([summary[k]["sd"] for k in names]), data)


def build_model(folder: Path, name: str) -> tuple:
    reference = load(folder, name)
    posterior = POSTERIORS[name]
    return vb.Model.from_numpyro(posterior.model, *posterior.args(reference.data)), reference


# Scoring


class Score(NamedTuple):
    mean_error: float  # max |mean - ref mean| / ref sd
    sd_ratio_min: float
    sd_ratio_max: float
    khat: float
    psis_mean_error: float  # the same, of the PSIS-reweighted draws (NaN for a point)
    psis_shift: float  # vibench's diagnostic: the largest guide mean - weighted mean, in guide sds


def score(fit, model, reference: Reference) -> Score:
    draws = columns(fit.sample(jax.random.key(1), NUM_DRAWS), reference.names)
    mean_error = np.max(np.abs(draws.mean(0) - reference.mean) / reference.sd)
    ratio = draws.std(0, ddof=1) / reference.sd
    khat = psis_error = shift = float("nan")
    if not fit.guide.point:  # a point mass has no density to weigh against
        # One set of NUM_WEIGHTS draws gives both the k-hat and the reweighted means.
        weighted = vb.diagnostics.importance_draws(fit, jax.random.key(2), NUM_WEIGHTS)
        log_weights, khat = vb.diagnostics.psis(weighted.log_weight)
        values = columns(weighted.values, reference.names)
        psis_mean = np.exp(log_weights) @ values
        psis_error = np.max(np.abs(psis_mean - reference.mean) / reference.sd)
        shift = vb.diagnostics.psis_shift(weighted.z, log_weights)
    return Score(float(mean_error), float(ratio.min()), float(ratio.max()), float(khat), float(psis_error), float(shift))


def run_fit(folder: Path, name: str, label: str, **overrides) -> dict:
    # A fresh Model per fit: vibench caches compiled programs per model, and each row's times
    # should include the compiling its own fit needs.
    model, reference = build_model(folder, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the start's fallback message is kept in fit.start
        fit = vb.fit(model, progress_bar=False, **overrides)
    result = score(fit, model, reference)
    row = dict(
        config=label,
        start=fit.start.method,
        start_seconds=fit.start.seconds,
        total_seconds=fit.wall_time,
        steps=fit.num_steps,
        stop=fit.stop_reason,
        message=fit.start.message,
        **result._asdict(),
    )
    _log(
        f"  {label}: start {row['start']} {row['start_seconds']:.1f}s, total {row['total_seconds']:.1f}s, "
        f"{row['steps']} steps ({row['stop']}), mean err {result.mean_error:.3f} sd, "
        f"sd ratio {result.sd_ratio_min:.2f}-{result.sd_ratio_max:.2f}, k-hat {result.khat:.2f}, "
        f"PSIS mean err {result.psis_mean_error:.3f} sd, shift {result.psis_shift:.2f}"
        + (f"; start: {row['message']}" if row["message"] else "")
    )
    return row


# Model check against the reference draws


def check(folder: Path, name: str) -> dict:
    """Score t-statistics at the reference draws: E[g] = 0 and E[g (z - mean)^T] = -I when the model's
    flat log density is the reference posterior's (up to a constant)."""
    model, reference = build_model(folder, name)
    stored = np.load(folder / f"{name}.draws.npz")
    names = [str(n) for n in stored["names"]]
    matrix = np.asarray(stored["draws"], np.float64).reshape(-1, len(names))
    latent = POSTERIORS[name].latent(by_site(matrix, names))
    latent = {k: jnp.asarray(v, jnp.float32) for k, v in latent.items() if k in model.sites}
    missing = set(model.sites) - set(latent)
    if missing:
        raise KeyError(f"{name}: no reference draws for the latent site(s) {sorted(missing)}")
    z = np.asarray(jax.vmap(model.unconstrain)(latent), np.float64)
    grad = np.asarray(jax.vmap(jax.grad(model.log_density))(jnp.asarray(z, jnp.float32)), np.float64)
    n = z.shape[0]
    finite = bool(np.all(np.isfinite(grad)) and np.all(np.isfinite(z)))

    def t_statistics(values, target):
        return (values.mean(0) - target) / (values.std(0, ddof=1) / math.sqrt(n))

    # Whitened by the draws' covariance (w = L^-1 (z - mean), its score L^T g) the identities hold
    # unchanged, and on a near-Gaussian posterior g_w ~ -w has little variance: ill-conditioned
    # posteriors get tight statistics too.
    chol = np.linalg.cholesky(np.cov(z, rowvar=False))
    white = np.linalg.solve(chol, (z - z.mean(0)).T).T
    grad = grad @ chol
    score_t = t_statistics(grad, 0.0)
    stein = grad[:, :, None] * white[:, None, :]  # (n, d, d)
    stein_t = t_statistics(stein, -np.eye(z.shape[1]))
    return dict(
        posterior=name,
        dim=z.shape[1],
        finite=finite,
        score_t=float(np.max(np.abs(score_t))),
        stein_t=float(np.max(np.abs(stein_t))),
        stein_diag=(float(np.min(-stein.mean(0).diagonal())), float(np.max(-stein.mean(0).diagonal()))),
    )


# Modes


PLAIN = dict(guide="fullrank", init="prior", schedule="constant", num_particles=8, learning_rate=1e-2, num_steps=6000)


def compare_start(folder: Path, names: list) -> list:
    rows = []
    for name in names:
        _log(f"{name}")
        rows.append(dict(posterior=name, **run_fit(folder, name, "default", guide="fullrank")))
        rows.append(dict(posterior=name, **run_fit(folder, name, "plain", **PLAIN)))
    return rows


def families(folder: Path, names: list) -> list:
    rows = []
    for name in names:
        _log(f"{name}")
        for guide in vb.guides.GUIDES:
            rows.append(dict(posterior=name, **run_fit(folder, name, guide, guide=guide)))
    return rows


def table(rows: list) -> str:
    lines = [
        "| posterior | config | start | start s | total s | steps | max mean err/sd | sd ratio | k-hat | mean shift | PSIS max mean err/sd |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        steps = f"{r['steps']}" + (f" ({r['stop']})" if r["stop"] != "completed" else "")
        khat = "n/a" if math.isnan(r["khat"]) else f"{r['khat']:.2f}"
        start = f"{r['start']} (fallback)" if r["message"] else r["start"]  # the start's message says why
        lines.append(
            f"| {r['posterior']} | {r['config']} | {start} | {r['start_seconds']:.1f} | {r['total_seconds']:.1f} | "
            f"{steps} | {r['mean_error']:.3f} | {r['sd_ratio_min']:.2f}-{r['sd_ratio_max']:.2f} | {khat} | "
            f"{_number(r['psis_shift'], '.2f')} | {_number(r['psis_mean_error'], '.3f')} |"
        )
    return "\n".join(lines)


def time_ratios(rows: list) -> str:
    default = {r["posterior"]: r["total_seconds"] for r in rows if r["config"] == "default"}
    plain = {r["posterior"]: r["total_seconds"] for r in rows if r["config"] == "plain"}
    parts = [f"{name}: {default[name] / plain[name]:.2f}" for name in default]
    total = sum(default.values()) / sum(plain.values())
    return f"Default total time / plain total time: {'; '.join(parts)}. All posteriors together: {total:.2f}."


def _number(value: float, spec: str) -> str:
    return "n/a" if math.isnan(value) else format(value, spec)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _default_folder() -> Path:
    return ROOT.parent / "shared" / "posteriordb"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posteriordb", type=Path, default=None, help="the reference folder (format: see the module docstring)")
    parser.add_argument("--only", choices=sorted(POSTERIORS), help="run one posterior")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="check each model's density at the reference draws (no VI)")
    mode.add_argument("--compare-start", action="store_true", help="default Config vs the plain start, full-rank guide")
    mode.add_argument("--families", action="store_true", help="every registered guide family with the default Config")
    args = parser.parse_args(argv)
    folder = args.posteriordb or _default_folder()
    if not folder.is_dir():
        parser.error(f"no posteriordb folder at {folder}; pass --posteriordb PATH")
    names = [args.only] if args.only else list(POSTERIORS)

    if args.check:
        print("| posterior | dim | finite | max abs t of E[g] | max abs t of E[g dz^T] + I | diag of -E[g dz^T] |")
        print("|---|---:|---|---:|---:|---|")
        for name in names:
            _log(name)
            r = check(folder, name)
            print(
                f"| {name} | {r['dim']} | {r['finite']} | {r['score_t']:.1f} | {r['stein_t']:.1f} | "
                f"{r['stein_diag'][0]:.2f}-{r['stein_diag'][1]:.2f} |",
                flush=True,
            )
        return
    began = time.perf_counter()
    rows = compare_start(folder, names) if args.compare_start else families(folder, names)
    print(table(rows))
    if args.compare_start:
        print()
        print(time_ratios(rows))
    _log(f"done in {time.perf_counter() - began:.0f}s")


if __name__ == "__main__":
    main()
