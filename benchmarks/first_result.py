"""Time to first result in a fresh process, with JAX's persistent compilation cache cold and warm.

    python benchmarks/first_result.py            # three models, three fresh processes each way

Each measurement is a new Python process that imports vibench, builds the model, and times
``vb.fit(model, init="prior", schedule="constant", num_steps=500)`` (the plain start, one
500-step chunk, progress bar on), as in ``core_speed.py``'s "first result". *cold*: the process
uses an empty cache folder, so everything compiles (what a first run on a machine pays); *warm*:
it uses the folder a previous process filled (what ``vibench demo``, ``vibench lab``'s kernels
and scripts that call ``vb.enable_compilation_cache()`` pay from the second run on). Times are
printed as a markdown table; the import and model-building time is reported beside it.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile

MODELS = {
    "eight schools (d=10)": "vb.models.eight_schools()",
    "logistic N=10k D=50": "vb.models.logistic_regression(10_000, 50)",
    "hierarchical N=5k, 100 groups": "vb.models.hierarchical_regression(5_000, 100)",
}

CHILD = """
import json, sys, time
began = time.perf_counter()
import vibench as vb
vb.enable_compilation_cache(sys.argv[1])
model = {model}
built = time.perf_counter()
vb.fit(model, init="prior", schedule="constant", num_steps=500)
print(json.dumps({{"first": time.perf_counter() - built, "build": built - began}}))
"""


def measure(model: str, cache: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD.format(model=model), cache], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    repeats = 3
    print("| model | first result, cold cache (s) | first result, warm cache (s) | import + model build, cold / warm (s) |")
    print("|---|---|---|---|")
    for name, model in MODELS.items():
        cold, warm = [], []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as cache:
                cold.append(measure(model, cache))
                warm.append(measure(model, cache))
        first = lambda runs: ", ".join(f"{r['first']:.2f}" for r in runs)  # noqa: E731
        build = lambda runs: statistics.median(r["build"] for r in runs)  # noqa: E731
        print(f"| {name} | {first(cold)} | {first(warm)} | {build(cold):.2f} / {build(warm):.2f} |", flush=True)


if __name__ == "__main__":
    main()
