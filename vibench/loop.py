"""The chunk loop: one loop that drives one run (``fit``) or N runs stacked into one program
(``fit_many``), with the progress bar, callbacks and Ctrl-C handled in one place.

Each chunk is queued on the device before the last one is read back (the device computes the next
chunk while the host records this one); a chunk's trace comes to the host in one transfer. After
each chunk, every run's :class:`Run` commits the chunk and applies its stopping rules
(:mod:`vibench.stopping`); everything the next chunk depends on is committed before any callback
runs, so a Ctrl-C at any point leaves fits that ``init=`` continues exactly.
"""

from __future__ import annotations

import warnings
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .state import State, Trace
from .evaluation import elbo_values_program
from .plan import Plan
from .stopping import Memory, Rules

__all__ = ["Run", "drive", "plateau_signal", "PLATEAU_PARTICLES", "Callback"]

Callback = Callable[[int, Trace, State], Optional[bool]]

PLATEAU_PARTICLES = 32


def plateau_signal(model, plan: Plan) -> Optional[Callable[[State], np.ndarray]]:
    """What the plateau rule reads for a subsampled model: the per-step ELBOs of minibatches are
    too noisy to tell a fit that still improves from one that stopped, so it reads the full-data
    ELBO of 32 fixed particles instead (``(32,)``, the same noise each chunk). None otherwise."""
    if not model.batch_size or plan.config.schedule != "plateau" or plan.guide.point:
        return None
    values = elbo_values_program(model, plan.guide, PLATEAU_PARTICLES)
    key = jax.random.key(plan.config.seed)
    return lambda state: np.asarray(values(state.params, state.precond, key))


class Run:
    """One run's bookkeeping between chunks: its state, a preallocated host trace and its stopping
    rules. ``history`` is the trace of the fit it resumes, ``memory`` what that fit's rules knew,
    ``signal`` the plateau rule's input for a subsampled model (:func:`plateau_signal`) and
    ``base_learning_rate`` the rate the schedule decays from."""

    def __init__(self, state: State, plan: Plan, history: Optional[Trace] = None, memory: Optional[Memory] = None,
                 signal=None, base_learning_rate: Optional[float] = None):
        config = plan.config
        self.state, self.plan, self.memory, self.signal = state, plan, memory, signal
        self.error: Optional[tuple] = None  # (callback, step, exception) when a callback raised
        self.stop_reason = "completed"
        self.chunk_size = config.chunk_size
        self.remaining = config.num_steps
        base = config.learning_rate if base_learning_rate is None else base_learning_rate
        self.rules = Rules(config, base, float(state.hyper.learning_rate), memory, trains=plan.method.trains)
        offset = 0 if history is None else len(history.loss)
        total = offset + config.num_steps
        self._buffers = Trace(
            np.full(total, np.nan, np.float32), np.full(total, np.nan, np.float32),
            np.full(total, np.nan, np.float32), np.zeros(total, bool),
        )
        if history is not None:
            for buf, old in zip(self._buffers, history):
                buf[:offset] = old
        self.filled = self._start = offset
        self.rejected = int(np.sum(self._buffers.rejected[:offset]))
        self.elbo = float("nan")  # the last chunk's median accepted ELBO

    def trace(self) -> Trace:
        """The trace so far (views of the buffers, the resumed history included)."""
        return Trace(*(buf[: self.filled] for buf in self._buffers))

    def record(self, state: State, chunk: Trace) -> bool:
        """Commit one chunk: ``state`` after it and its ``chunk`` trace (host arrays ``(n,)``).
        Applies the stopping rules and the plateau decay; True when the run stops here."""
        n = len(chunk.loss)
        for buf, values in zip(self._buffers, chunk):
            buf[self.filled : self.filled + n] = values
        accepted = ~chunk.rejected
        if not accepted.any():
            self.state, self.filled, self.remaining = state, self.filled + n, self.remaining - n
            self.rejected += n
            self.elbo = float("nan")
            self._diverged(chunk)
            return True
        signal = None if self.signal is None else self.signal(state)
        learning_rate, converged, memory = self.rules.update(chunk.elbo[accepted], self.memory, signal)
        if learning_rate is not None:
            state = state._replace(hyper=state.hyper._replace(learning_rate=np.float32(learning_rate)))
        # One assignment: the state, the trace length and the rules' memory move together.
        self.state, self.filled, self.memory = state, self.filled + n, memory
        self.remaining -= n
        self.rejected += int(np.sum(chunk.rejected))
        self.elbo = memory.last_chunk[0]
        if converged:
            self.stop_reason = "converged"
        return converged

    def call(self, callbacks: Sequence[Callback]) -> bool:
        """Show the committed chunk to each callback; True when one asks to stop (or raises: the
        exception is kept in :attr:`error` and the run stops with reason ``"error"``)."""
        for callback in callbacks:
            try:
                stop = callback(self.filled, self.trace(), self.state)
            except Exception as err:  # noqa: BLE001 - re-raised by fit() with the fit so far
                self.error, self.stop_reason = (callback, self.filled, err), "error"
                return True
            if stop:
                self.stop_reason = "callback"
                return True
        return False

    def _diverged(self, chunk) -> None:
        if not np.all(np.isfinite(chunk.loss)):
            cause = "the objective is not finite at the guide's draws (the model's log density is NaN or infinite there)"
        else:
            cause = "the gradient (or the parameter update) is not finite"
        if self.filled - len(chunk.loss) == self._start:
            raise FloatingPointError(
                f"all {len(chunk.loss)} steps of the first chunk were rejected: {cause}. Check the model "
                "near its initial point, or try a smaller learning_rate / init_scale"
            )
        self.stop_reason = "diverged"
        warnings.warn(f"stopped after {self.filled} steps: a whole chunk was rejected ({cause}); the fit keeps the last good state")


def drive(engine, runs: Sequence[Run], *, stacked: bool = False, callbacks: Sequence[Callback] = (),
          progress_bar: bool = True, desc: str = "vibench") -> None:
    """Run chunks of every run in ``runs`` until each has stopped or taken its ``num_steps``.

    One run calls ``engine.run_chunk``; with ``stacked`` the runs' States are stacked on a
    leading axis and every chunk of every run is one call of ``engine.run_many``, a run that
    stopped riding along with its later steps discarded. The runs share ``num_steps`` and
    ``chunk_size``. ``callbacks`` see each run after each of its chunks. Ctrl-C stops every
    running run with reason ``"interrupted"``, as of its last committed chunk.
    """
    lanes = _Stacked(engine, runs) if stacked else _Single(engine, runs[0])
    active = [True] * len(runs)
    remaining, chunk_size = runs[0].remaining, runs[0].chunk_size
    bar = tqdm(total=remaining, desc=desc, disable=not progress_bar, leave=True)
    try:
        n = min(chunk_size, remaining)
        pending = lanes.advance(lanes.committed(), n)
        while True:
            following = min(chunk_size, remaining - n)
            # Queue the next chunk on the states this one will leave before reading this one back.
            # It is dropped if the host changes a state (a learning-rate decay).
            ahead = lanes.advance(lanes.after(pending), following) if following > 0 else None
            for i, (state, chunk) in enumerate(lanes.results(pending)):
                if active[i]:
                    active[i] = not runs[i].record(state, chunk)
                    # A diverged chunk ends the run before any callback sees it.
                    if callbacks and runs[i].stop_reason != "diverged" and runs[i].call(callbacks):
                        active[i] = False
            bar.update(n)
            if len(runs) == 1:
                run = runs[0]
                elbo = "n/a" if not np.isfinite(run.elbo) else f"{run.elbo:.4g}"
                bar.set_postfix(elbo=elbo, rejected=run.rejected, refresh=False)
            remaining -= n
            if not any(active) or ahead is None:
                return
            pending = ahead if lanes.unchanged(pending) else lanes.advance(lanes.committed(), following)
            n = following
    except KeyboardInterrupt:
        for i, run in enumerate(runs):
            if active[i]:
                run.stop_reason = "interrupted"
    finally:
        bar.close()


class _Single:
    """One run: chunks from ``engine.run_chunk`` on the run's device state."""

    def __init__(self, engine, run: Run):
        self.engine, self.run = engine, run

    def committed(self):
        return self.run.state

    def advance(self, state, n):
        return self.engine.run_chunk(state, n)

    def after(self, pending):
        return pending[0]

    def results(self, pending):
        state, chunk = pending
        return [(state, jax.device_get(chunk))]  # one transfer per chunk, not one per step

    def unchanged(self, pending) -> bool:
        return self.run.state is pending[0]


class _Stacked:
    """N runs as one program: chunks from ``engine.run_many`` on their stacked States."""

    def __init__(self, engine, runs: Sequence[Run]):
        self.engine, self.runs = engine, runs
        self.keys = [run.state.key for run in runs]  # constant over a run: kept, not fetched each chunk
        self.states = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(run.state for run in runs))

    def committed(self):
        # The plateau rule decays each run's learning rate on the host: hand it back.
        rates = np.array([run.state.hyper.learning_rate for run in self.runs], np.float32)
        return self.states._replace(hyper=self.states.hyper._replace(learning_rate=rates))

    def advance(self, states, n):
        return self.engine.run_many(states, n)

    def after(self, pending):
        return pending[0]

    def results(self, pending):
        states, chunk = pending
        self.states = states
        # One transfer per chunk for all runs; typed keys stay on the device.
        host_states, chunk = jax.device_get((states._replace(key=None), chunk))
        return [
            (jax.tree.map(lambda leaf: leaf[i], host_states)._replace(key=self.keys[i]), Trace(*(v[i] for v in chunk)))
            for i in range(len(self.runs))
        ]

    def unchanged(self, pending) -> bool:
        rates = np.asarray(pending[0].hyper.learning_rate)
        return all(float(run.state.hyper.learning_rate) == float(rate) for run, rate in zip(self.runs, rates))
