"""The Runner, the Workbench's state machine, driven without any widgets (vibench/widgets/runner.py)."""

import numpy as np
from numpyro.distributions import constraints

import vibench as vb
from vibench.widgets.runner import Runner

from oracles import workbench_config as _config


def test_runner_reports_errors_and_keeps_the_fit():
    model = vb.Model.from_log_density(lambda v: -0.5 * (v["x"] ** 2).sum(), supports={"x": constraints.real},
                                      shapes={"x": (2,)})
    runner = Runner(model, _config(num_steps=500))
    runner.run()
    assert runner.wait(60)
    assert runner.status.phase == "finished" and runner.fit.num_steps == 500
    assert len(runner.runs) == 1 and np.isfinite(runner.runs[0].elbo)
