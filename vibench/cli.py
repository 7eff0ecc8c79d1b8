"""The ``vibench`` command: ``vibench demo`` fits eight schools and prints the posterior."""

from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    import jax

    import vibench as vb

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
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError) as err:
        print(f"vibench {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
