"""Throughput of a Workbench run with live views against the same run headless, in one process.

    python benchmarks/workbench_speed.py            # eight schools and logistic regression
    python benchmarks/workbench_speed.py --quick    # shorter runs

Each model is fitted with one Config (mean-field, the plain start, a constant step size, so every
run does the same steps) three ways, all warm (compiled once before timing): ``vb.fit`` headless,
a Workbench showing the Training tab (ELBO and gradient-norm traces), and a Workbench showing
the Posterior tab (marginals and the 2-D view, from fresh guide draws each refresh). Reports
steps/s, the ratio to headless, and how often the views were redrawn per second. The Workbench is
driven from Python with no browser attached (the same code path as in a notebook: widget values
are sent as comm messages, here to nowhere).
"""

from __future__ import annotations

import argparse
import time

import jax

import vibench as vb


def headless(model, config) -> float:
    vb.fit(model, config, progress_bar=False)  # compile
    began = time.perf_counter()
    fit = vb.fit(model, config, progress_bar=False)
    return fit.num_steps / (time.perf_counter() - began)


def workbench(model, config, tab: int) -> tuple:
    wb = vb.Workbench(model, config, refresh_hz=5)
    wb.tabs.selected_index = tab
    wb.run()
    wb.wait()  # the first run compiles everything
    wb.reset()
    time.sleep(0.5)
    refreshes = wb.refresh_count
    renders = wb.trace_view.renders + wb.marginals_view.renders
    began = time.perf_counter()
    wb.run()
    wb.runner.wait()
    seconds = time.perf_counter() - began
    rate = wb.fit.num_steps / seconds
    redraws = (wb.trace_view.renders + wb.marginals_view.renders - renders) / seconds
    wb.close()
    return rate, (wb.refresh_count - refreshes) / seconds, redraws


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
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
        base = headless(model, config)
        train_rate, _, train_redraws = workbench(model, config, 0)
        post_rate, _, post_redraws = workbench(model, config, 1)
        print(f"| {name} | {steps:,} | {base:,.0f} | {train_rate:,.0f} ({train_rate / base:.2f}) | {train_redraws:.1f} | "
              f"{post_rate:,.0f} ({post_rate / base:.2f}) | {post_redraws:.1f} |")


if __name__ == "__main__":
    main()
