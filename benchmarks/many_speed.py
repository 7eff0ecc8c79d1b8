"""Throughput of N runs as one ``vb.fit_many`` call against N ``vb.fit`` calls one after another.

    python benchmarks/many_speed.py              # N = 1, 4, 16; 4000 steps per run
    python benchmarks/many_speed.py --steps 1000 # shorter

Eight schools (non-centred, d = 10), a mean-field and a full-rank guide, 4 particles, Adam 1e-2,
the constant schedule (every run takes all its steps) and the plain start (``init="prior"``: this
measures the step loop, not the per-run starting stage, which both paths run alike). Each
configuration is run once untimed first, so the timings are of warm (compiled) programs; "cold"
is that first call, compile included. Both paths run in the same process, one after the other,
so their ratio is fair even on a busy machine.
"""

from __future__ import annotations

import argparse
import time

import vibench as vb


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(model, config, n: int, repeats: int) -> dict:
    seeds = list(range(n))
    sequential = lambda: [vb.fit(model, config, seed=seed, progress_bar=False) for seed in seeds]  # noqa: E731
    batched = lambda: vb.fit_many(model, config, seeds=seeds, progress_bar=False)  # noqa: E731
    cold_many = timed(batched)
    cold_seq = timed(sequential)
    warm_seq = min(timed(sequential) for _ in range(repeats))
    warm_many = min(timed(batched) for _ in range(repeats))
    steps = n * config.num_steps
    return dict(n=n, seq=steps / warm_seq, many=steps / warm_many, cold_seq=cold_seq, cold_many=cold_many)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    model = vb.models.eight_schools()
    print("| guide | N runs | sequential steps/s | fit_many steps/s | speed-up | cold sequential s | cold fit_many s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for guide in ("meanfield", "fullrank"):
        config = vb.Config(guide=guide, num_particles=4, init="prior", schedule="constant", learning_rate=1e-2,
                           num_steps=args.steps, chunk_size=500)
        for n in args.runs:
            row = bench(model, config, n, args.repeats)
            print(f"| {guide} | {n} | {row['seq']:,.0f} | {row['many']:,.0f} | {row['many'] / row['seq']:.2f}x "
                  f"| {row['cold_seq']:.2f} | {row['cold_many']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
