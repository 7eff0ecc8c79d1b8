"""Throughput of a Workbench run with live views against the same run headless, in one process.

    python benchmarks/workbench_speed.py            # eight schools and logistic regression
    python benchmarks/workbench_speed.py --quick    # shorter runs

Each model is fitted with one Config (mean-field, the plain start, a constant step size, so every
run does the same steps) three ways, all warm (compiled once before timing): ``vb.fit`` headless,
a Workbench showing the Training tab (ELBO and gradient-norm traces), and a Workbench showing
the Posterior tab (marginals and the 2-D view, from fresh guide draws each refresh). The three
run back to back in each of ``--repeats`` rounds; medians are reported: steps/s, the ratio to
headless, and how often the views were redrawn per second. A Workbench run's time includes what
the Workbench adds at the end of a run (the precise ELBO and k-hat of its comparison row). The Workbench is
driven from Python with no browser attached (the same code path as in a notebook: widget values
are sent as comm messages, here to nowhere).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import vibench as vb


def headless(model, config) -> float:
    began = time.perf_counter()
    fit = vb.fit(model, config, progress_bar=False)
    return fit.num_steps / (time.perf_counter() - began)


def live(wb) -> tuple:
    """One run of a built, warm Workbench: (steps/s, view redraws per second)."""
    wb.reset()
    time.sleep(0.3)
    renders = wb.trace_view.renders + wb.marginals_view.renders
    began = time.perf_counter()
    wb.run()
    wb.runner.wait()
    seconds = time.perf_counter() - began
    return wb.fit.num_steps / seconds, (wb.trace_view.renders + wb.marginals_view.renders - renders) / seconds


def measure(model, config, repeats: int) -> dict:
    """Medians over ``repeats`` rounds, each round running the three ways back to back, so that a
    machine whose speed drifts (shared, or throttled) affects them alike."""
    vb.fit(model, config.replace(num_steps=2 * config.chunk_size), progress_bar=False)  # compile
    benches = {}
    for tab in (0, 1):
        wb = vb.Workbench(model, config.replace(num_steps=2 * config.chunk_size), refresh_hz=5)
        wb.tabs.selected_index = tab
        wb.run()
        wb.wait()  # compiles the chunk, the views' draws and the run's comparison numbers
        wb.set_config(config)
        benches[tab] = wb
    rows = {"headless": [], 0: [], 1: []}
    for _ in range(repeats):
        rows["headless"].append((headless(model, config), 0.0))
        for tab, wb in benches.items():
            rows[tab].append(live(wb))
    for wb in benches.values():
        wb.close()
    return {name: tuple(np.median(np.array(values), axis=0)) for name, values in rows.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; medians are reported (default 3)")
    args = parser.parse_args()
    models = {
        "eight schools": (vb.models.eight_schools(), 2_000_000),
        "logistic regression N=10k D=50": (vb.models.logistic_regression(), 20_000),
    }
    print(f"jax {jax.__version__}, device {jax.devices()[0]}")
    print("| model | steps | headless steps/s | Training tab: steps/s (ratio) | view redraws/s | "
          "Posterior tab: steps/s (ratio) | view redraws/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (model, steps) in models.items():
        if args.quick:
            steps //= 4
        config = vb.Config(guide="meanfield", init="prior", schedule="constant", num_steps=steps, learning_rate=1e-2)
        result = measure(model, config, args.repeats)
        base = result["headless"][0]
        (train_rate, train_redraws), (post_rate, post_redraws) = result[0], result[1]
        print(f"| {name} | {steps:,} | {base:,.0f} | {train_rate:,.0f} ({train_rate / base:.2f}) | {train_redraws:.1f} | "
              f"{post_rate:,.0f} ({post_rate / base:.2f}) | {post_redraws:.1f} |")


if __name__ == "__main__":
    main()
