"""A short check of vibench's core on a GPU, in one process (the device's own speed figures).

    python benchmarks/gpu_check.py

1. Eight schools (non-centred) with a full-rank guide and the default start: the means and sds
   must be finite and near the reference posterior (mu ~ 4.4, tau ~ 3.6).
2. Logistic regression N=10k D=50, mean-field, 1 and 8 particles: steady steps/s of vibench
   (bar on) against NumPyro's svi.update and BlackJAX's step in a compiled lax.scan, as
   core_speed.py measures them (BlackJAX only where it is installed).
"""

from __future__ import annotations

import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import vibench as vb  # noqa: E402
from vibench import models  # noqa: E402


def eight_schools_check():
    model = models.eight_schools()
    start = time.perf_counter()
    fit = vb.fit(model, guide="fullrank", progress_bar=False)
    wall = time.perf_counter() - start
    mean, std = fit.mean(20_000), fit.std(20_000)
    print(f"eight schools, full-rank, default start: {fit!r}, {wall:.1f} s (compiles included)")
    for name in ("mu", "tau"):
        print(f"  {name}: mean {float(mean[name]):.3f}, sd {float(std[name]):.3f}")
    print("  theta means: " + ", ".join(f"{v:.2f}" for v in np.asarray(mean["theta"])))
    finite = all(np.all(np.isfinite(np.asarray(v))) for v in list(mean.values()) + list(std.values()))
    sane = finite and 3.0 < float(mean["mu"]) < 6.0 and 1.5 < float(mean["tau"]) < 6.0
    print(f"  sane: {sane} (finite, mu in (3, 6), tau in (1.5, 6))")
    return sane


def logistic_speed(n1, n2):
    import core_speed as cs

    have_blackjax = True
    try:
        import blackjax  # noqa: F401
    except ImportError:
        have_blackjax = False
    fn, fn_args, fn_kwargs = cs.MODELS["logistic N=10k D=50"]
    print("| model | K | vibench, bar on | NumPyro svi.update in scan | BlackJAX in scan | vibench / best peer headless | first result: vibench / NumPyro / BlackJAX (s) |")
    print("|---|---|---|---|---|---|---|")
    for particles in (1, 8):
        vib, vib_first, _, _ = cs.bench_vibench(fn, fn_args, fn_kwargs, particles, n1, n2)
        np_off, np_first = cs.bench_numpyro(fn, fn_args, fn_kwargs, particles, n1, n2, progress_bar=False)
        bj, bj_first = cs.bench_blackjax(fn, fn_args, fn_kwargs, particles, n1, n2) if have_blackjax else (float("nan"), float("nan"))
        best = np.nanmax([np_off, bj])
        print(f"| logistic N=10k D=50 | {particles} | {vib:,.0f} | {np_off:,.0f} | {bj:,.0f} | {vib / best:.2f}x | "
              f"{vib_first:.2f} / {np_first:.2f} / {bj_first:.2f} |", flush=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", type=int, nargs=2, default=(2000, 10000), metavar=("N1", "N2"),
                        help="the two run lengths of the speed comparison")
    lengths = parser.parse_args().lengths
    print(f"jax {jax.__version__}, devices {jax.devices()}, kind {jax.devices()[0].device_kind}")
    ok = eight_schools_check()
    logistic_speed(*lengths)
    sys.exit(0 if ok else 1)
