"""Steps/s of full-batch vs minibatch VI on a large logistic regression, in one process.

    python benchmarks/scale.py                    # N=1,000,000, D=100, B=1,000
    python benchmarks/scale.py --num-data 100000  # smaller

The same NumPyro model with and without ``subsample_size``; mean-field guide, one particle, the
plain start and a constant step size (this measures the step loop). Steady steps/s comes from two
run lengths of warm calls, so compile time cancels. Records the device it ran on.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist

import vibench as vb


def logistic(X, y=None, batch_size=None):
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0], subsample_size=batch_size) as index:
        numpyro.sample("y", dist.Bernoulli(logits=X[index] @ beta), obs=y[index])


def steps_per_second(model, config, n1, n2):
    def run(n):
        start = time.perf_counter()
        fit = vb.fit(model, config, num_steps=n, progress_bar=False)
        jax.block_until_ready(fit.state.params)
        return time.perf_counter() - start

    run(n1)  # compile
    t1 = min(run(n1) for _ in range(2))
    t2 = min(run(n2) for _ in range(2))
    return (n2 - n1) / max(t2 - t1, 1e-9)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-data", type=int, default=1_000_000)
    parser.add_argument("--num-features", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=1_000)
    parser.add_argument("--full-steps", type=int, nargs=2, default=(20, 60), metavar=("N1", "N2"),
                        help="the two run lengths of the full-batch fit (longer on a fast device)")
    parser.add_argument("--mini-steps", type=int, nargs=2, default=(200, 1200), metavar=("N1", "N2"),
                        help="the two run lengths of the minibatch fit")
    parser.add_argument("--chunk-size", type=int, default=100)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.num_data, args.num_features)).astype(np.float32)
    y = (rng.random(args.num_data) < 1 / (1 + np.exp(-X @ (rng.normal(size=args.num_features) / 10)))).astype(np.float32)
    X, y = vb.shard_data(X, y)  # one device here unless there are several
    config = vb.Config(guide="meanfield", init="prior", schedule="constant", chunk_size=args.chunk_size)
    print(f"device: {jax.devices()[0].device_kind} x{len(jax.devices())}, jax {jax.__version__}")
    print(f"logistic regression N={args.num_data:,} D={args.num_features}, chunk_size {args.chunk_size}, "
          f"full-batch lengths {args.full_steps}, minibatch lengths {args.mini_steps}")
    full = steps_per_second(vb.Model.from_numpyro(logistic, X, y), config, *args.full_steps)
    mini = steps_per_second(vb.Model.from_numpyro(logistic, X, y, batch_size=args.batch_size), config, *args.mini_steps)
    print("| data per step | steps/s | data points/s |")
    print("|---|---|---|")
    print(f"| all {args.num_data:,} | {full:,.1f} | {full * args.num_data:,.0f} |")
    print(f"| minibatch {args.batch_size:,} | {mini:,.0f} | {mini * args.batch_size:,.0f} |")
    print(f"minibatch / full-batch steps/s: {mini / full:,.0f}x")


if __name__ == "__main__":
    main()
