"""Speed of vibench's fit against NumPyro's SVI and BlackJAX's mean-field VI, in one process.

    python benchmarks/core_speed.py            # all models, 1 and 8 particles
    python benchmarks/core_speed.py --quick    # shorter runs

Mean-field guide, Adam 1e-2, STL on for vibench and BlackJAX (NumPyro's Trace_ELBO has no STL).
Steady steps/s comes from two run lengths of warm (already compiled) calls, so compile time
cancels; the headless runs and vibench's are timed in interleaved rounds, the best of each kept. The peers run headless at their best (their step in one compiled ``lax.scan``) and NumPyro
also as users meet it with a progress bar (``SVI.run``). "vibench engine, one chunk" is vibench's
compiled step loop alone (``engine.run_chunk`` of the whole length, no driver). "First result"
is the wall time of a cold call that returns 500 steps, counted from a freshly built model.
"""

from __future__ import annotations

import argparse
import time

import blackjax
import jax
import numpyro
import optax
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal

import vibench as vb
from vibench import models
from vibench.fit import start_state

MODELS = {
    "eight schools (d=10)": (models.eight_schools_noncentered_model, (), models.EIGHT_SCHOOLS),
    "logistic N=10k D=50": (models.logistic_regression_model, models.logistic_regression_data(10_000, 50), {}),
    "hierarchical N=5k, 100 groups": (models.hierarchical_regression_model, models.hierarchical_regression_data(5_000, 100), {}),
}


def timed(fn):
    start = time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    return time.perf_counter() - start


def steady(run, n1, n2, repeats=3):
    """Steps/s from the best of ``repeats`` timings at two lengths (compile and overheads cancel);
    NaN when the longer run was not slower (the timing noise exceeded the difference)."""
    return steady_together({"run": run}, n1, n2, repeats)["run"]


def steady_together(runs, n1, n2, repeats=7):
    """:func:`steady` of several runners, their timings interleaved round by round: on a shared
    machine a slow spell then slows every contender alike instead of whichever ran during it."""
    best = {name: {n1: float("inf"), n2: float("inf")} for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            for n in (n1, n2):
                best[name][n] = min(best[name][n], timed(lambda: run(n)))
    return {name: (n2 - n1) / (t[n2] - t[n1]) if t[n2] > t[n1] else float("nan") for name, t in best.items()}


def ratio(a, b, digits):
    return "nan" if a != a or b != b else f"{a / b:.{digits}f}x"


def bench_vibench(fn, args, kwargs, particles):
    """vibench's runners, ``fit`` with its bar and the engine alone, and its first result (s)."""
    model = vb.Model.from_numpyro(fn, *args, **kwargs)
    # The plain start and a fixed step size: this measures the step loop, not the starting stage or
    # the plateau rule (which may stop a run early).
    config = vb.Config(guide="meanfield", num_particles=particles, learning_rate=1e-2, chunk_size=500,
                       init="prior", schedule="constant")
    first = timed(lambda: vb.fit(model, config, num_steps=500, progress_bar=True).trace.elbo)
    # The engine alone: one compiled chunk of n steps, no driver (the fit's per-chunk costs, its
    # dispatch, trace transfer, statistics and bar, are the difference).
    engine = vb.make_engine(model, config)
    state, _ = start_state(model, config, engine, vb.hyper_from_config(config, model))
    runs = {
        "fit": lambda n: vb.fit(model, config, num_steps=n, progress_bar=True).trace.elbo,
        "engine": lambda n: engine.run_chunk(state, n)[1].elbo,
    }
    return runs, first


def bench_numpyro(fn, args, kwargs, particles, n1, n2, progress_bar):
    """NumPyro's SVI with AutoNormal. Headless (returns a runner): ``svi.update`` in one ``lax.scan`` compiled per
    length (SVI.run without a bar compiles a new loop on every call, so its two-length differences
    measured compile-time noise). With the bar: SVI.run itself, a Python loop over a jitted step,
    whose compile does not depend on the length, so the two lengths cancel it."""
    guide = AutoNormal(fn)
    svi = SVI(fn, guide, numpyro.optim.Adam(1e-2), Trace_ELBO(num_particles=particles))
    key = jax.random.key(0)
    first = timed(lambda: svi.run(key, 500, *args, progress_bar=False, **kwargs).losses)
    if progress_bar:
        return steady(lambda n: svi.run(key, n, *args, progress_bar=True, **kwargs).losses, n1, n2), first
    state = svi.init(key, *args, **kwargs)

    def run(n):
        return jax.lax.scan(lambda s, _: svi.update(s, *args, **kwargs), state, None, length=n)[1]

    compiled = {n: jax.jit(run, static_argnums=0).lower(n).compile() for n in (n1, n2)}
    return lambda n: compiled[n](), first


def bench_blackjax(fn, args, kwargs, particles, n1, n2):
    """BlackJAX's ``meanfield_vi`` step in one ``lax.scan`` (a runner), and its first result (s)."""
    model = vb.Model.from_numpyro(fn, *args, **kwargs)
    mfvi = blackjax.meanfield_vi(model.log_density, optax.adam(1e-2), num_samples=particles)

    def run(n):
        def body(state, key):
            state, info = mfvi.step(key, state)
            return state, info.elbo

        return jax.lax.scan(body, mfvi.init(model.init_z), jax.random.split(jax.random.key(0), n))

    compiled = {n: jax.jit(run, static_argnums=0).lower(n).compile() for n in (500, n1, n2)}
    first = timed(lambda: jax.jit(lambda: run(500))())
    return lambda n: compiled[n]()[1], first


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--only", choices=sorted(MODELS), help="run one model")
    args = parser.parse_args()
    print(f"jax {jax.__version__}, numpyro {numpyro.__version__}, blackjax {blackjax.__version__}, device {jax.devices()[0]}")
    header = "| model | K | vibench, bar on | vibench engine, one chunk | NumPyro svi.update in scan | NumPyro SVI.run, bar on | BlackJAX in scan | vibench / best peer headless | vibench / NumPyro bar on | first result: vibench / NumPyro / BlackJAX (s) |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name, (fn, fn_args, fn_kwargs) in MODELS.items():
        if args.only and name != args.only:
            continue
        slow = "logistic" in name or "hierarchical" in name
        for particles in (1, 8):
            n1, n2 = (1000, 3000) if slow else (5000, 20000)
            if args.quick:
                n1, n2 = n1 // 2, n2 // 2
            runs, vib_first = bench_vibench(fn, fn_args, fn_kwargs, particles)
            runs["numpyro"], np_first = bench_numpyro(fn, fn_args, fn_kwargs, particles, n1, n2, progress_bar=False)
            runs["blackjax"], bj_first = bench_blackjax(fn, fn_args, fn_kwargs, particles, n1, n2)
            rates = steady_together(runs, n1, n2, repeats=3 if slow else 7)
            vib, vib_chunk, np_off, bj = rates["fit"], rates["engine"], rates["numpyro"], rates["blackjax"]
            # SVI.run with a bar runs a Python loop and compiles its step again on every call (1-5 s on a loaded
            # machine), so the two lengths must differ by seconds of steps for the difference to stand above that noise.
            np_on, _ = bench_numpyro(fn, fn_args, fn_kwargs, particles, n1 // 10, n2 if slow else n2 // 2, progress_bar=True)
            best = max(np_off, bj)
            print(
                f"| {name} | {particles} | {vib:,.0f} | {vib_chunk:,.0f} | {np_off:,.0f} | {np_on:,.0f} | {bj:,.0f} | "
                f"{ratio(vib, best, 2)} | {ratio(vib, np_on, 1)} | {vib_first:.2f} / {np_first:.2f} / {bj_first:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
