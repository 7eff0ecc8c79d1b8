"""The Workbench's training loop: the core's chunked ``fit`` on a background thread.

The runner holds the Workbench's only mutable state. Training runs on a daemon thread (XLA releases
the GIL inside a compiled chunk, so the kernel stays free for clicks and new cells); between chunks
the thread honours Pause, Stop and settings changes, and hands a snapshot to whoever listens. It
imports no widget library and does no math: every number comes from ``vibench.fit``.

A run is a chain of ``vb.fit(model, config, init=previous)`` segments, each ended by a chunk
callback when something needs the loop's attention; resuming is exact (the same keys, the same
trace as one unbroken call), so Pause/Resume and live changes lose nothing.

A launch (:meth:`Runner.run_many`) trains several restarts of one program at once with
``vb.fit_many`` on the same thread, and keeps each as a finished run. ``fit_many`` has no chunk
callback, so a launch cannot be paused or stopped: it runs to its end, and the commands of a single
run are refused meanwhile.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np

from ..config import Config, as_config
from ..fit import fit, start_fit
from ..many import check_one_program
from ..model import Model
from ..result import Fit
from ..start import Start
from ..stopping import chunk_stats
from .launch import Launch, train_launch
from .records import RunRecord, config_label, score

__all__ = ["Runner", "Status", "RESTART_FIELDS"]

#: Config fields that define the guide or where it starts: changing one starts a fresh fit.
RESTART_FIELDS = ("guide", "rank", "guide_options", "init", "init_scale", "seed")

IDLE, STARTING, RUNNING, PAUSED, STOPPED, FINISHED, ERROR, LAUNCHING = (
    "idle", "starting", "running", "paused", "stopped", "finished", "error", "launching")


class Status(NamedTuple):
    """What the loop is doing, for a status line; read with :attr:`Runner.status`.

    ``phase``: idle, starting (the starting stage and first compile), running, paused, stopped,
    finished, error, or launching (restarts training with ``fit_many``; see
    :meth:`Runner.run_many`). ``compiling`` is True while a segment waits for its first chunk.
    ``elbo`` is the median Monte Carlo ELBO of the last chunk (NaN before the first).
    """

    phase: str
    step: int
    target: int
    steps_per_second: float
    elbo: float
    rejected: int
    compiling: bool
    start: Optional[Start]
    message: str

    def __repr__(self) -> str:
        start = "none" if self.start is None else self.start.method
        return (f"Status({self.phase}, step {self.step}/{self.target}, {self.steps_per_second:.4g} steps/s, "
                f"elbo {self.elbo:.5g}, rejected {self.rejected}, compiling={self.compiling}, start={start}, "
                f"message={self.message!r})")

    @property
    def seconds_left(self) -> float:
        """Steps still to run at the current rate (NaN unless running)."""
        if self.phase != RUNNING or not self.steps_per_second > 0:
            return float("nan")
        return max(self.target - self.step, 0) / self.steps_per_second


class Runner:
    """Train ``model`` under ``config`` in the background; see the module docstring.

    ``listeners`` are called with no arguments after every chunk and every phase change, on the
    training thread: they must be quick (the Workbench's only sets an event for its view thread).
    ``elbo_particles`` and ``khat_draws`` size the comparison numbers kept for each finished run.
    ``launches`` lists the launches of restarts (:class:`Launch`), oldest first.
    """

    def __init__(self, model: Model, config: Optional[Config] = None, init_values: Optional[dict] = None,
                 elbo_particles: int = 1000, khat_draws: int = 2000):
        config = as_config(config)
        self.listeners: list[Callable[[], None]] = []
        self.runs: list[RunRecord] = []
        self.launches: list[Launch] = []
        self.init_values = init_values
        self.elbo_particles, self.khat_draws = elbo_particles, khat_draws
        self._base_model = model
        self._lock = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._model, self._config = model, config
        self._fit: Optional[Fit] = None  # the last finished segment (or start_fit)
        self._live: Optional[tuple] = None  # (config, state, trace, model) after the newest chunk
        self._phase, self._message = IDLE, ""
        self._pause = self._stop = self._attention = self._restart = False
        self._stop_message = ""
        self._segment_began = 0.0
        self._segment_chunks = 0
        self._rate = float("nan")
        self._last_chunk = (0, 0.0)  # (step, time) of the newest chunk
        self._launching = 0  # the number of runs of the launch in progress; 0 when none
        self.error: Optional[BaseException] = None

    # ------------------------------------------------------------------ what the views read

    @property
    def model(self) -> Model:
        """The model the next chunk runs on (with the batch size chosen)."""
        return self._model

    @property
    def config(self) -> Config:
        """The Config the next chunk runs with (live changes included)."""
        return self._config

    @property
    def fit(self) -> Optional[Fit]:
        """The current fit, as of the newest chunk (None before the first run starts)."""
        with self._lock:
            live, base = self._live, self._fit
        if live is None:
            return base
        config, state, trace, model = live
        return Fit(model, config, state, trace, base.wall_time + time.perf_counter() - self._segment_began,
                   stop_reason=_running_reason(self._phase), start=base.start, memory=base.memory)

    @property
    def status(self) -> Status:
        """What the loop is doing now (:class:`Status`)."""
        with self._lock:
            fit, live = self._fit, self._live
            trace = live[2] if live else (fit.trace if fit else None)
            step = 0 if trace is None else len(trace.loss)
            rejected = 0 if trace is None else int(np.sum(trace.rejected))
            # Read here, a few times a second, rather than after each of hundreds of chunks.
            tail = slice(-self._config.chunk_size, None)
            accepted = np.zeros(0) if trace is None else trace.elbo[tail][~trace.rejected[tail]]
            elbo = chunk_stats(accepted)[0] if accepted.size else float("nan")
            compiling = self._phase == STARTING or (self._phase == RUNNING and self._segment_chunks == 0)
            return Status(self._phase, step, self._config.num_steps, self._rate, elbo, rejected,
                          compiling, fit.start if fit else None, self._message)

    @property
    def running(self) -> bool:
        """True while the training thread is alive (running, paused or launching)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def launching(self) -> bool:
        """True while a launch of restarts trains (:meth:`run_many`)."""
        return self._launching > 0

    @property
    def _fitting(self) -> bool:
        # A single run's thread (running or paused), which Pause, Stop and live changes address.
        return self.running and not self._launching

    # ------------------------------------------------------------------ commands

    def run(self) -> None:
        """Start a run, or resume a paused one. After a run has finished, stopped or failed (or a
        restart is pending), a fresh run starts; the ended one stays in :attr:`runs`. Refused
        (RuntimeError) while a launch trains."""
        with self._lock:
            self._refuse_while_launching("Run")
            if self.running:
                self._pause = False
                self._lock.notify_all()
                return
            if self._restart or self._phase in (FINISHED, STOPPED, ERROR):
                self._fit, self._restart = None, False  # a fresh run: the ended one stays in self.runs
            self._pause = self._stop = self._attention = False
            self._stop_message, self.error = "", None
            self._rate = float("nan")
            self._thread = threading.Thread(target=self._train, name="vibench-workbench", daemon=True)
            self._thread.start()

    def pause(self) -> None:
        """Pause after the current chunk (the state is kept; :meth:`resume` continues exactly).
        A launch cannot pause: nothing happens."""
        with self._lock:
            if self._fitting:
                self._pause = self._attention = True

    def resume(self) -> None:
        """Continue a paused run."""
        with self._lock:
            self._pause = False
            self._lock.notify_all()

    def stop(self, message: str = "") -> None:
        """Stop after the current chunk; the fit keeps the last good state. A launch runs to its
        end: nothing happens."""
        with self._lock:
            if self._fitting:
                self._stop = self._attention = True
                self._pause = False
                self._stop_message = message
                self._lock.notify_all()

    def reset(self) -> None:
        """Stop any run and forget the current fit (finished runs stay in :attr:`runs`). Refused
        (RuntimeError) while a launch trains."""
        with self._lock:
            self._refuse_while_launching("Reset")
        self.stop()
        self.wait()
        with self._lock:
            self._fit, self._live, self._restart = None, None, False
            self._phase, self._message, self._rate = IDLE, "", float("nan")
        self._notify()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the training thread ends (or ``timeout`` seconds); True if it ended."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def set_config(self, config: Config, batch_size: Optional[int] = -1) -> str:
        """Use ``config`` (and ``batch_size``: None for all data, -1 to keep) from the next chunk.

        Numbers and estimator settings apply at the next chunk with the guide's params kept; a
        change of guide family or start (:data:`RESTART_FIELDS`) starts a fresh fit: at once if
        a run is going (the old run is kept for comparison), else at the next :meth:`run`.
        Returns a sentence saying which happened.
        """
        config = as_config(config, required=True)
        same = batch_size == -1 or batch_size == self._model.batch_size
        model = self._model if same else self._base_model.with_batch_size(batch_size)
        with self._lock:
            changed = [f.name for f in dataclasses.fields(Config) if getattr(config, f.name) != getattr(self._config, f.name)]
            if model is not self._model:
                changed.append("batch_size")
            restart = [name for name in changed if name in RESTART_FIELDS]
            self._config, self._model = config, model
            if not changed:
                return ""
            # A launch trains the Configs it was given: a change waits for the next Run or launch.
            fitting = self._fitting
            if restart and (self._fit is not None or fitting):
                self._restart = True
                message = f"{', '.join(restart)} changed: "
                if fitting:
                    message += "Resume starts a fresh fit" if self._pause else "restarting with a fresh fit"
                else:
                    message += "the next Run starts a fresh fit"
            else:
                message = f"{', '.join(changed)} changed" + (": applies from the next chunk" if fitting else "")
            self._attention = fitting
            self._message = message
            self._lock.notify_all()
        self._notify()
        return message

    def run_many(self, configs: Sequence[Config], labels: Optional[Sequence[str]] = None) -> None:
        """Train ``configs`` (N Configs differing only in ``vb.many.RUN_FIELDS``) at once with
        ``vb.fit_many`` on the training thread; each resulting Fit joins :attr:`runs`, labelled
        ``labels[i]`` (what varied, e.g. ``"seed 4"``) before its config, and the launch joins
        :attr:`launches`. The current fit is left as it was.

        A launch runs to its end: ``fit_many`` has no way to stop between chunks, so Pause and
        Stop do nothing and Run and Reset are refused until it ends (:meth:`wait` blocks until
        then). Refused at once, with a ValueError or RuntimeError saying why, for a subsampled
        model (``fit_many`` runs full-data models only), while a run or another launch is going,
        or when the Configs do not make one program.
        """
        configs = list(configs)
        if not configs or not all(isinstance(c, Config) for c in configs):
            raise TypeError("configs must be a non-empty list of vibench.Config")
        labels = [f"run {i + 1}" for i in range(len(configs))] if labels is None else [str(label) for label in labels]
        if len(labels) != len(configs):
            raise ValueError(f"got {len(labels)} labels for {len(configs)} configs")
        with self._lock:
            self._refuse_while_launching("another launch")
            if self.running:
                raise RuntimeError("a run is going (or paused): Stop it, or let it end, before launching restarts")
            model = self._model
            if model.batch_size:
                raise ValueError(
                    f"restarts run with vb.fit_many, which does not run subsampled models (batch size "
                    f"{model.batch_size}): set the batch size to 0 (all data), or train runs one by one with Run")
            check_one_program(configs)  # here, not in the thread: a mismatch is the caller's to see
            self._launching, self.error = len(configs), None
            before = self._phase
            self._phase = LAUNCHING
            self._message = (f"launching {len(configs)} restarts ({labels[0]} ... {labels[-1]}) with fit_many: "
                             "a launch runs to its end")
            self._thread = threading.Thread(target=self._train_many, args=(model, configs, labels, self._config, before),
                                            name="vibench-workbench-launch", daemon=True)
            self._thread.start()
        self._notify()

    def _refuse_while_launching(self, what: str) -> None:
        if self._launching:
            raise RuntimeError(f"{what} must wait: {self._launching} restarts are training with fit_many, "
                               "which runs to its end (it cannot be paused or stopped)")

    # ------------------------------------------------------------------ the training thread

    def _train_many(self, model: Model, configs: list, labels: list, base: Config, before: str) -> None:
        message = ""

        def keep(fit, label, rate):
            return len(self.runs) - 1 if self._archive(fit, "finished", f"{label} | ", rate) else None

        try:
            launch, message = train_launch(model, configs, labels, base, self.init_values, keep)
            self.launches.append(launch)
        except BaseException as err:  # noqa: BLE001 - shown in the status; nothing is archived
            self.error = err
            message = f"launch failed: {type(err).__name__}: {err}"
        finally:
            with self._lock:
                self._launching = 0
                self._phase = before  # the current fit and what Run does next are as before the launch
                self._message = message
            self._notify()

    def _next_action(self) -> str:
        """What the loop does next, decided under the lock: stop, wait, restart or go."""
        with self._lock:
            while self._pause and not self._stop:
                if self._phase != PAUSED:
                    self._phase = PAUSED
                    self._notify()  # listeners only set events: safe under the (reentrant) lock
                self._lock.wait()
            self._attention = False
            if self._stop:
                return "stop"
            return "restart" if self._restart else "go"

    def _train(self) -> None:
        try:
            while True:
                action = self._next_action()
                if action == "stop":
                    steps = self._fit.num_steps if self._fit else 0
                    self._finish(STOPPED, self._stop_message or f"stopped after {steps} steps: the fit keeps the last good state")
                    return
                if action == "restart":
                    self._archive(self._fit, "restarted")
                    with self._lock:
                        self._fit, self._live, self._restart = None, None, False
                config, model = self._config, self._model
                if self._fit is None:
                    self._set_phase(STARTING, f"starting stage ({config.init}) and first compile")
                    began = start_fit(model, config, self.init_values)
                    note = f"start: {began.start.method} in {began.start.seconds:.2f} s"
                    with self._lock:
                        self._fit, self._live = began, None
                        self._message = note + (f" ({began.start.message})" if began.start.message else "")
                    continue
                remaining = config.num_steps - self._fit.num_steps
                if remaining <= 0:
                    self._finish(FINISHED, f"finished: {self._fit.num_steps} steps")
                    return
                with self._lock:
                    self._segment_began, self._segment_chunks = time.perf_counter(), 0
                self._set_phase(RUNNING)
                result = fit(model, config.replace(num_steps=remaining), init=self._fit, callbacks=[self._on_chunk],
                             progress_bar=False)
                with self._lock:
                    self._fit, self._live = result, None
                if result.stop_reason in ("converged", "diverged"):
                    self._finish(FINISHED, f"{result.stop_reason} after {result.num_steps} steps")
                    return
        except BaseException as err:  # noqa: BLE001 - shown in the status; the fit so far is kept
            self.error = err
            with self._lock:
                if isinstance(getattr(err, "fit", None), Fit):
                    self._fit, self._live = err.fit, None
            self._finish(ERROR, f"error: {type(err).__name__}: {err}")

    def _on_chunk(self, step, trace, state) -> bool:
        now = time.perf_counter()
        with self._lock:
            previous_step, previous_time = self._last_chunk
            # Only full chunks after a segment's first: a first or shorter chunk may include a compile.
            if self._segment_chunks > 0 and step - previous_step == self._config.chunk_size:
                rate = (step - previous_step) / max(now - previous_time, 1e-9)
                self._rate = rate if not np.isfinite(self._rate) else 0.7 * self._rate + 0.3 * rate
            self._last_chunk = (step, now)
            self._segment_chunks += 1
            self._live = (self._config, state, trace, self._model)
            attention = self._attention
        self._notify()
        return attention

    def _archive(self, fit: Optional[Fit], reason: str, prefix: str = "",
                 steps_per_second: Optional[float] = None) -> bool:
        """Keep ``fit`` in :attr:`runs` with its comparison numbers (training thread), its label
        after ``prefix``; ``steps_per_second`` defaults to the steady rate measured between
        chunks. True if it was kept (a fit with no steps is not)."""
        if fit is None or fit.num_steps == 0:
            return False
        if reason != "finished":
            fit = dataclasses.replace(fit, stop_reason=reason)
        label = prefix + config_label(fit.config, fit.model.batch_size)
        rate = self._rate if steps_per_second is None else steps_per_second
        self.runs.append(score(fit, label, rate, self.elbo_particles, self.khat_draws))
        return True

    def _finish(self, phase: str, message: str) -> None:
        """End the run: the fit records the run's Config and why it ended, and is archived."""
        with self._lock:
            fit = self._fit if self._live is None else self.fit
            if fit is not None:
                reason = {STOPPED: "stopped", ERROR: "error"}.get(phase, fit.stop_reason)
                fit = dataclasses.replace(fit, config=self._config, stop_reason=reason)
            self._fit, self._live = fit, None
        try:
            self._archive(fit, "finished")
        except Exception as err:  # noqa: BLE001 - the fit itself is kept; only its comparison row is lost
            message += f" (comparison numbers failed: {type(err).__name__}: {err})"
        self._set_phase(phase, message)

    def _set_phase(self, phase: str, message: Optional[str] = None) -> None:
        with self._lock:
            self._phase = phase
            if message is not None:
                self._message = message
        self._notify()

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener()


def _running_reason(phase: str) -> str:
    return {RUNNING: "running", PAUSED: "paused", STOPPED: "stopped"}.get(phase, "completed")
