"""The Workbench's text: the status line's durations, the Compare tab's ranking of finished runs and
its report of the last launch, as HTML strings."""

from __future__ import annotations

import html
import math

__all__ = ["duration", "runs_table", "launch_report"]


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}h{seconds % 3600 // 60:02d}"


def runs_table(runs) -> str:
    """An HTML table of finished runs ranked by their precise ELBO (``Fit.elbo`` with many particles), best first."""
    if not runs:
        return "<i>finished runs appear here, ranked by a precise ELBO</i>"
    order = sorted(range(len(runs)), key=lambda i: -runs[i].elbo if math.isfinite(runs[i].elbo) else math.inf)
    rows = []
    for rank, i in enumerate(order, 1):
        run = runs[i]
        khat = "n/a" if run.khat is None else f"{run.khat:.2f}"
        rows.append(
            f"<tr><td>{rank}</td><td>#{i + 1}</td><td>{html.escape(run.label)}</td><td>{run.elbo:.4f}</td>"
            f"<td>{run.fit.num_steps:,}</td><td>{run.wall_time:.2f}</td><td>{run.steps_per_second:,.0f}</td>"
            f"<td>{khat}</td><td>{html.escape(run.fit.stop_reason)}</td></tr>"
        )
    head = ("<tr><th>rank</th><th>run</th><th>config</th><th>ELBO (1000 particles)</th><th>steps</th><th>time s</th>"
            "<th>steps/s</th><th>PSIS k-hat</th><th>ended</th></tr>")
    return f"<table class='vibench-runs'>{head}{''.join(rows)}</table>"


def launch_report(launch, runs, launches) -> str:
    """A line on a launch's throughput: N runs, their wall time and steps/s per run, against the
    newest ordinary run (not launched) of the same Config and length, when there is one."""
    n = len(launch.labels)
    line = (f"Last launch: {n} runs ({html.escape(launch.labels[0])} ... {html.escape(launch.labels[-1])}) "
            f"took {launch.wall_time:.2f} s together (starts and compile included): "
            f"{launch.steps_per_second:,.0f} steps/s per run, {n * launch.steps_per_second:,.0f} in all")
    launched = {i for each in launches for i in each.runs}
    steps = max(launch.num_steps)
    for i in reversed(range(len(runs))):
        run = runs[i]
        if i not in launched and run.fit.config == launch.config and run.fit.num_steps == steps:
            line += (f"; one ordinary run of this Config (#{i + 1}) took {run.wall_time:.2f} s, "
                     f"so {n} of them ~{n * run.wall_time:.2f} s one after another")
            break
    return f"<small>{line}</small>"
