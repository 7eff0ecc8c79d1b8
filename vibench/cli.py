"""The ``vibench`` command: ``vibench demo`` fits eight schools and prints the posterior;
``vibench lab`` opens JupyterLab on the notebooks."""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

from .cache import cache_environment


def _demo(args) -> int:
    import jax

    import vibench as vb

    vb.enable_compilation_cache()  # a second demo loads its programs instead of compiling them
    model = vb.models.eight_schools(centered=False)
    config = vb.Config(
        guide=args.guide, num_particles=args.particles, num_steps=args.steps, learning_rate=args.learning_rate, seed=args.seed
    )
    print(f"Fitting {model!r}\nwith {config}\n")
    fit = vb.fit(model, config)
    print(f"\n{fit}\nELBO (1,000 particles): {fit.elbo(jax.random.key(1)):.3f}   wall time: {fit.wall_time:.2f} s\n")
    table = fit.summary()
    print(table.to_string())
    print(f"\n{table.attrs['diagnosis']}")
    return 0


def notebooks_dir(cwd: Optional[Path] = None, package_dir: Optional[Path] = None) -> Path:
    """Where ``vibench lab`` opens: the ``notebooks/`` folder of the vibench checkout that this
    package is imported from (an editable install) or that ``cwd`` lies in; else ``cwd`` itself."""
    cwd = Path.cwd() if cwd is None else Path(cwd)
    package_dir = Path(__file__).resolve().parent if package_dir is None else Path(package_dir)
    for root in (package_dir.parent, cwd, *cwd.parents):
        if _is_checkout(root):
            return root / "notebooks"
    return cwd


def _is_checkout(root: Path) -> bool:
    pyproject = root / "pyproject.toml"
    try:
        return (root / "notebooks").is_dir() and 'name = "vibench"' in pyproject.read_text(encoding="utf-8")
    except OSError:
        return False


_ROOT_OPTIONS = ("--notebook-dir", "--ServerApp.root_dir")


def lab_argv(extra: Sequence[str] = (), cwd: Optional[Path] = None, package_dir: Optional[Path] = None,
             executable: Optional[str] = None) -> list:
    """The command line ``vibench lab`` runs: ``python -m jupyter lab --notebook-dir=DIR`` followed
    by ``extra`` (JupyterLab's own options, passed through); a folder given in ``extra`` wins."""
    argv = [sys.executable if executable is None else executable, "-m", "jupyter", "lab"]
    if not any(arg.split("=", 1)[0] in _ROOT_OPTIONS for arg in extra):
        argv.append(f"--notebook-dir={notebooks_dir(cwd, package_dir)}")
    return argv + list(extra)


def _lab(args, extra) -> int:
    argv = lab_argv(extra)
    if args.dry_run:
        print(shlex.join(argv))
        return 0
    if importlib.util.find_spec("jupyterlab") is None:
        print('vibench lab: JupyterLab is not installed; install the notebooks extra: pip install "vibench[notebooks]" '
              '(from a checkout: pip install -e ".[notebooks]")', file=sys.stderr)
        return 2
    # The kernels inherit JAX's persistent compilation cache: a restarted kernel loads its
    # programs instead of compiling them again.
    env = cache_environment()
    if os.name == "posix":
        # JupyterLab takes this process's place, so Ctrl-C and kill reach it and leave nothing behind.
        sys.stdout.flush()
        os.execve(argv[0], argv, env)
    try:
        return subprocess.call(argv, env=env)
    except KeyboardInterrupt:  # JupyterLab shuts itself down on the same Ctrl-C
        return 130


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="vibench", description="vibench: an interactive VI workbench")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="fit eight schools with a progress bar and print a summary")
    demo.add_argument("--guide", default="fullrank", help="guide family (default: fullrank)")
    demo.add_argument("--particles", type=int, default=8, help="Monte Carlo particles per step (default: 8)")
    demo.add_argument("--steps", type=int, default=5000, help="optimisation steps (default: 5000)")
    demo.add_argument("--learning-rate", type=float, default=1e-2, help="Adam learning rate (default: 0.01)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)
    lab = commands.add_parser(
        "lab", help="open JupyterLab on the notebooks",
        description="Open JupyterLab on the notebooks/ folder of this vibench checkout (else the current folder). "
                    "Other options go to JupyterLab unchanged, e.g. vibench lab --port 8890 --no-browser.",
        allow_abbrev=False,
    )
    lab.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    lab.set_defaults(run=_lab)
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "lab":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.run(args, extra) if args.command == "lab" else args.run(args)
    except (ValueError, TypeError) as err:
        print(f"vibench {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
