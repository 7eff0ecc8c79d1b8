"""The Workbench: controls, a background runner and live views, composed into one widget.

    wb = vb.Workbench(model)            # or vb.Workbench(model, config=..., reference=mcmc_idata)
    wb                                  # shows the controls and the live views
    wb.fit                              # the current Fit, while paused and after the run

Training runs on the runner's thread (a launch of restarts from the Compare tab too, through
``vb.fit_many``); a second thread redraws the visible views at most
``refresh_hz`` times a second from the runner's newest snapshot, so neither the kernel nor the
training loop waits for a plot. The widgets do no math: numbers come from the core.
"""

from __future__ import annotations

import html
import math
import threading
import time
import traceback
from typing import Optional

import ipywidgets as widgets
import jax

from ..arviz_compat import group_names, to_netcdf
from ..config import Config, as_config
from ..model import Model, check_model
from ..reference import compare, plot_compare, scalar_draws, scalar_labels
from .controls import Controls
from .launch import RESTART_VARIES, restart_configs
from .runner import Runner
from .tables import duration, launch_report, runs_table
from .views import CompareView, MarginalsView, PairView, TraceView, forest_figure, render_png

__all__ = ["Workbench"]

VIEW_DRAWS = 2000  # guide draws behind the posterior views
MAX_DUTY = 0.5  # the largest share of wall time the view thread spends drawing
RESTART_RUNS = (2, 64)  # the fewest and most runs one launch of restarts takes


class Workbench:
    """An interactive VI laboratory for ``model`` (a :class:`vibench.Model`).

    ``config`` sets the starting controls (default ``vb.Config()``); ``reference`` (MCMC draws
    as a DataTree or InferenceData, a Dataset or a dict of draws) is overlaid on the posterior
    views and compared in the diagnostics tab; ``init_values`` (constrained, by site) seeds the starting stage;
    ``refresh_hz`` caps how often views redraw. Python methods mirror the buttons: :meth:`run`,
    :meth:`pause`, :meth:`resume`, :meth:`stop`, :meth:`reset`, :meth:`export`, :meth:`launch`
    (restarts, from the Compare tab), and :meth:`wait` blocks until a run or launch ends (for
    scripts and tests).
    """

    def __init__(self, model: Model, config: Optional[Config] = None, reference=None, init_values: Optional[dict] = None,
                 refresh_hz: float = 5.0):
        check_model(model, "Workbench")
        config = as_config(config)
        if isinstance(refresh_hz, bool) or not isinstance(refresh_hz, (int, float)) or not 0 < refresh_hz <= 60:
            raise ValueError(f"refresh_hz must be a number in (0, 60], got {refresh_hz!r}")
        self.runner = Runner(model, config, init_values=init_values)
        self.reference = reference
        self._reference_draws = None if reference is None else scalar_draws(reference, num_draws=VIEW_DRAWS, key=jax.random.key(7))
        self.refresh_interval = 1.0 / refresh_hz
        self.idata = None
        self.refresh_count = 0
        self._key = jax.random.key(config.seed + 12345)  # fixed: views move with the params, not the noise
        self._labels = _labels(model)
        self._dirty = threading.Event()
        self._draw_lock = threading.Lock()  # the view thread and wait() may both redraw
        self._closed = False
        self._last_trace_length = -1
        self._last_runs = (-1, -1)  # (runs, launches) last drawn in the Compare tab
        self._last_posterior = None
        self._message = ""
        self._build(model, config)
        self.runner.listeners.append(self._dirty.set)
        self._thread = threading.Thread(target=self._view_loop, name="vibench-views", daemon=True)
        self._thread.start()
        self._dirty.set()

    # ------------------------------------------------------------------ layout

    def _build(self, model: Model, config: Config) -> None:
        self.controls = Controls(config, num_data=model.num_data if model.rebuild is not None else None,
                                 batch_size=model.batch_size, on_change=self._config_changed, on_error=self._show_error)
        button = lambda text, style, tip: widgets.Button(description=text, button_style=style, tooltip=tip,  # noqa: E731
                                                         layout=widgets.Layout(width="92px"))
        self.run_button = button("Run", "success", "train (a fresh fit after a finished run)")
        self.pause_button = button("Pause", "", "pause after this chunk; click again to resume")
        self.stop_button = button("Stop", "danger", "stop after this chunk, keeping the last good state")
        self.reset_button = button("Reset", "warning", "forget the current fit (finished runs stay in Compare)")
        self.export_button = button("Export", "info", "the fit in ArviZ's format in wb.idata (and a netCDF file)")
        self.run_button.on_click(lambda _: self.run())
        self.pause_button.on_click(lambda _: self.resume() if self.runner.status.phase == "paused" else self.pause())
        self.stop_button.on_click(lambda _: self.stop())
        self.reset_button.on_click(lambda _: self.reset())
        self.export_button.on_click(lambda _: self._export_clicked())
        self.status = widgets.HTML(value="idle")
        self.step_label = widgets.Label(value="0")  # the step counter alone, for scripts and page tests
        self.step_label.add_class("vibench-step")
        self.status.add_class("vibench-status")
        self.progress = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, layout=widgets.Layout(width="320px"))
        self.message = widgets.HTML(value="")

        self.trace_view = TraceView()
        self.trace_view.image.add_class("vibench-trace")
        self.log_steps = widgets.Checkbox(value=False, description="log step axis", indent=False)
        self.log_steps.observe(self._log_steps_changed, names="value")
        training = widgets.VBox([self.trace_view.image, self.log_steps])

        self.marginals_view = MarginalsView()
        self.pair_view = PairView()
        self.sites = widgets.SelectMultiple(options=self._labels, value=tuple(self._labels[:4]), rows=6,
                                            description="marginals", layout=widgets.Layout(width="260px"))
        self.pair_x = widgets.Dropdown(options=self._labels, value=self._labels[0], description="x",
                                       layout=widgets.Layout(width="260px"))
        self.pair_y = widgets.Dropdown(options=self._labels, value=self._labels[min(1, len(self._labels) - 1)],
                                       description="y", layout=widgets.Layout(width="260px"))
        for control in (self.sites, self.pair_x, self.pair_y):
            control.observe(lambda _: self._posterior_changed(), names="value")
        posterior = widgets.VBox([
            self.marginals_view.image,
            widgets.HBox([self.pair_view.image, widgets.VBox([self.sites, self.pair_x, self.pair_y])]),
        ])

        self.compare_view = CompareView()
        self.compare_table = widgets.HTML()
        self.restarts = widgets.BoundedIntText(value=4, min=RESTART_RUNS[0], max=RESTART_RUNS[1], description="runs",
                                               layout=widgets.Layout(width="150px"), style={"description_width": "40px"})
        self.vary = widgets.Dropdown(options=list(RESTART_VARIES.items()), value="seed", description="varying",
                                     layout=widgets.Layout(width="220px"), style={"description_width": "55px"})
        self.launch_button = button("Launch", "primary", "train the runs at once with vb.fit_many; a launch runs to its end")
        self.launch_button.on_click(lambda _: self.launch())
        self.launch_report = widgets.HTML()
        restarts = widgets.HBox([widgets.HTML("<b>Restarts</b>"), self.restarts, self.vary, self.launch_button])
        compare_tab = widgets.VBox([restarts, self.launch_report, self.compare_view.image, self.compare_table])
        self._tooltips = {b: b.tooltip for b in (self.run_button, self.pause_button, self.stop_button, self.reset_button,
                                                 self.launch_button)}

        self.diagnose_button = widgets.Button(description="Diagnose", button_style="info",
                                              tooltip="PSIS k-hat, ELBO convergence, the start; the reference comparison")
        self.diagnose_button.on_click(lambda _: self.diagnose())
        self.diagnosis = widgets.HTML()
        self.diagnostics_plot = widgets.Image(format="png", layout=widgets.Layout(width="auto", max_width="100%"))
        self.reference_plot = widgets.Image(format="png", layout=widgets.Layout(width="auto", max_width="100%"))
        diagnostics_tab = widgets.VBox([self.diagnose_button, self.diagnosis, self.diagnostics_plot, self.reference_plot])

        self.export_path = widgets.Text(value="", placeholder="file.nc (optional)", description="netCDF path")
        self.export_draws = widgets.BoundedIntText(value=1000, min=1, max=1_000_000, description="draws")
        self.export_status = widgets.HTML()
        export_tab = widgets.VBox([self.export_path, self.export_draws, self.export_status])

        self.tabs = widgets.Tab(children=[training, posterior, compare_tab, diagnostics_tab, export_tab])
        for i, title in enumerate(["Training", "Posterior", "Compare", "Diagnostics", "Export"]):
            self.tabs.set_title(i, title)
        self.tabs.observe(lambda _: self._dirty.set(), names="selected_index")

        buttons = widgets.HBox([self.run_button, self.pause_button, self.stop_button, self.reset_button, self.export_button])
        header = widgets.HTML(f"<b>vibench Workbench</b> &middot; {html.escape(repr(model))}")
        right = widgets.VBox([buttons, widgets.HBox([self.progress, widgets.Label("step"), self.step_label]), self.status,
                              self.message, self.tabs], layout=widgets.Layout(flex="1 1 auto"))
        self.widget = widgets.VBox([header, widgets.HBox([self.controls.widget, right])])
        self.widget.add_class("vibench-workbench")

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------------ commands

    @property
    def fit(self):
        """The current :class:`vibench.Fit` (as of the newest chunk), or None before any run."""
        return self.runner.fit

    @property
    def config(self) -> Config:
        """The Config the next chunk runs with (the controls' settings)."""
        return self.runner.config

    @property
    def runs(self) -> list:
        """Finished runs (:class:`vibench.widgets.runner.RunRecord`), oldest first."""
        return list(self.runner.runs)

    def run(self) -> None:
        """Start training, or resume a paused run (refused, with a message, while a launch trains)."""
        try:
            self.runner.run()
        except RuntimeError as err:
            self._show_error(str(err))
            return
        self._message = ""
        self._dirty.set()

    def pause(self) -> None:
        """Pause after the current chunk; :meth:`resume` continues exactly. A launch cannot pause."""
        if self._launch_runs_on("Pause"):
            return
        self.runner.pause()

    def resume(self) -> None:
        """Continue a paused run."""
        self.runner.resume()

    def stop(self) -> None:
        """End the run after the current chunk; ``wb.fit`` keeps the last good state. A launch
        cannot be stopped: it runs to its end."""
        if self._launch_runs_on("Stop"):
            return
        self.runner.stop()

    def reset(self) -> None:
        """Stop any run and forget the current fit (ended runs stay in :attr:`runs`); refused, with
        a message, while a launch trains."""
        try:
            self.runner.reset()
        except RuntimeError as err:
            self._show_error(str(err))
            return
        self._last_trace_length = -1
        self._dirty.set()

    def launch(self, num_runs: Optional[int] = None, vary: Optional[str] = None) -> bool:
        """Train ``num_runs`` restarts of the current Config at once with ``vb.fit_many``, in the
        background; each joins :attr:`runs` and the Compare tab, labelled by what varied.

        ``num_runs`` (2 to 64) and ``vary`` (``"seed"``: seeds ``config.seed``, ``config.seed + 1``,
        ...; ``"learning_rate"``: rates log-spaced over ``config.learning_rate / 10 .. * 10``)
        default to the Restarts controls. A launch runs to its end (``fit_many`` cannot be paused
        or stopped); :meth:`wait` blocks until then. True if launched; when refused (a subsampled
        model, a run going or paused, another launch), the reason is shown in the message area
        and False is returned.
        """
        num_runs = int(self.restarts.value) if num_runs is None else num_runs
        vary = self.vary.value if vary is None else vary
        low, high = RESTART_RUNS
        try:
            if isinstance(num_runs, bool) or not isinstance(num_runs, int) or not low <= num_runs <= high:
                raise ValueError(f"a launch takes {low} to {high} runs, got {num_runs!r}")
            configs, labels = restart_configs(self.runner.config, vary, num_runs)
            self.runner.run_many(configs, labels)
        except (TypeError, ValueError, RuntimeError) as err:
            self._show_error(f"Launch refused: {err}")
            return False
        self.message.value = ""
        self._dirty.set()
        return True

    def _launch_runs_on(self, command: str) -> bool:
        """True (with a message) when a launch trains, which ``command`` cannot touch."""
        if self.runner.launching:
            self._show_error(f"{command}: a launch of restarts runs to its end (fit_many cannot be paused or stopped)")
            return True
        return False

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the run (or launch) ends, then redraw the views; True if it ended within
        ``timeout``."""
        ended = self.runner.wait(timeout)
        if ended:
            self._guarded_refresh(force=True)
        return ended

    def set_config(self, config: Optional[Config] = None, **changes) -> None:
        """Change the run's settings from Python, as the controls do (keyword changes of the Config)."""
        config = (config or self.runner.config).replace(**changes) if changes else as_config(config, required=True)
        self._config_changed(config, self.controls.batch_size)
        self.controls.set_config(config)

    def export(self, path=None, num_draws: int = 1000, key: Optional[jax.Array] = None, **kwargs):
        """The current fit in ArviZ's format (kept in ``wb.idata``: an ``xarray.DataTree`` on ArviZ
        1.x, an ``arviz.InferenceData`` on 0.23), written to netCDF at ``path`` when given;
        ``kwargs`` go to :meth:`vibench.Fit.to_arviz`."""
        fit = self.runner.fit
        if fit is None or fit.num_steps == 0:
            raise ValueError("nothing to export yet: run the Workbench first")
        idata = fit.to_arviz(num_draws=num_draws, key=jax.random.key(fit.config.seed + 2) if key is None else key, **kwargs)
        if path:
            to_netcdf(idata, path)
        self.idata = idata
        return idata

    def diagnose(self):
        """Diagnose the current fit into the diagnostics tab; returns the :class:`Diagnosis`."""
        fit = self.runner.fit
        if fit is None or fit.num_steps == 0:
            self.diagnosis.value = "<i>run the Workbench first</i>"
            return None
        key = jax.random.key(fit.config.seed + 3)
        diagnosis = fit.diagnose(key=key)
        parts = [f"<pre>{html.escape(repr(diagnosis))}</pre>"]
        self.diagnostics_plot.value = render_png(forest_figure(fit, key))
        if self.reference is not None:
            table = compare(fit, self.reference, key=key)
            parts.append("<b>Against the reference</b>" + table.to_html(float_format=lambda v: f"{v:.3g}"))
            fig = plot_compare(fit, self.reference, key=key, max_panels=8, figsize=(9, 4))
            self.reference_plot.value = render_png(fig)
        self.diagnosis.value = "".join(parts)
        return diagnosis

    def close(self) -> None:
        """Stop training and the view thread, and close the widgets (a launch of restarts is
        waited for: it cannot be stopped)."""
        self.runner.stop()
        self.runner.wait()
        self._closed = True
        self._dirty.set()
        self.widget.close()

    # ------------------------------------------------------------------ reactions

    def _config_changed(self, config: Config, batch_size) -> None:
        message = self.runner.set_config(config, batch_size)
        if message:
            self._message = message
        self._dirty.set()

    def _show_error(self, message: str) -> None:
        self.message.value = f"<span style='color:#b00'>{html.escape(message)}</span>"

    def _log_steps_changed(self, change) -> None:
        self.trace_view.set_log_steps(bool(change["new"]))
        self._last_trace_length = -1
        self._dirty.set()

    def _posterior_changed(self) -> None:
        self._last_posterior = None
        self._dirty.set()

    def _export_clicked(self) -> None:
        try:
            path = self.export_path.value.strip() or None
            idata = self.export(path, num_draws=int(self.export_draws.value))
        except Exception as err:  # noqa: BLE001 - shown to the person who clicked
            self.export_status.value = f"<span style='color:#b00'>export failed: {html.escape(str(err))}</span>"
            self.tabs.selected_index = 4
            return
        where = f" and written to {html.escape(path)}" if path else ""
        groups = ", ".join(group_names(idata))
        self.export_status.value = f"exported to <code>wb.idata</code>{where}: {groups}"
        self.tabs.selected_index = 4

    # ------------------------------------------------------------------ views

    def _view_loop(self) -> None:
        last, cost = 0.0, 0.0
        while True:
            self._dirty.wait()
            if self._closed:
                return
            # At most refresh_hz, and drawing at most MAX_DUTY of the time: on a slow machine the
            # views slow down rather than the training.
            wait = last + max(self.refresh_interval, cost / MAX_DUTY) - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            self._dirty.clear()
            last = time.perf_counter()
            self._guarded_refresh()
            cost = time.perf_counter() - last

    def _guarded_refresh(self, force: bool = False) -> None:
        try:
            self.refresh(force)
        except Exception as err:  # noqa: BLE001 - a failing view stops the run, loudly, keeping the fit
            detail = "".join(traceback.format_exception_only(type(err), err)).strip()
            self.runner.stop(f"error in a view: {detail}; the run stopped and keeps its state")
            self._show_error(f"error in a view: {detail}")

    def refresh(self, force: bool = False) -> None:
        """Redraw the status line and the visible tab's views from the runner's newest snapshot."""
        with self._draw_lock:
            self._refresh(force)

    def _refresh(self, force: bool) -> None:
        status = self.runner.status
        self._show_status(status)
        tab = self.tabs.selected_index
        fit = self.runner.fit
        if tab == 0 and fit is not None and (force or len(fit.trace.loss) != self._last_trace_length):
            self.trace_view.update(fit.trace)
            self._last_trace_length = len(fit.trace.loss)
        elif tab == 1 and fit is not None:
            marker = (fit.num_steps, id(fit.state))
            if force or marker != self._last_posterior:
                draws = scalar_draws(fit, num_draws=VIEW_DRAWS, key=self._key)
                self.marginals_view.update(draws, self.sites.value, self._reference_draws)
                self.pair_view.update(draws, self.pair_x.value, self.pair_y.value, self._reference_draws)
                self._last_posterior = marker
        elif tab == 2 and (force or (len(self.runner.runs), len(self.runner.launches)) != self._last_runs):
            runs, launches = list(self.runner.runs), list(self.runner.launches)
            self.compare_view.update(runs)
            self.compare_table.value = runs_table(runs)
            self.launch_report.value = launch_report(launches[-1], runs, launches) if launches else ""
            self._last_runs = (len(runs), len(launches))
        self.refresh_count += 1

    def _show_status(self, status) -> None:
        phase = "compiling" if status.compiling and status.phase in ("starting", "running") else status.phase
        launching = status.phase == "launching"
        parts = [f"<b>{phase}</b>"]
        if not launching:  # the step is the current fit's, which a launch leaves alone
            parts.append(f"step {status.step:,} / {status.target:,}")
        if math.isfinite(status.steps_per_second) and status.phase == "running":
            parts.append(f"{status.steps_per_second:,.0f} steps/s")
        if math.isfinite(status.elbo):
            parts.append(f"ELBO {status.elbo:.5g}")
        if math.isfinite(status.seconds_left):
            parts.append(f"{duration(status.seconds_left)} left")
        if status.rejected:
            parts.append(f"<span style='color:#b60'>{status.rejected:,} non-finite steps skipped</span>")
        note = " &middot; ".join(parts)
        messages = [m for m in (status.message, self._message) if m]
        start = status.start
        if start is not None and not status.message.startswith("start:"):
            messages.append(f"start: {start.method} in {start.seconds:.2f} s" + (f" ({start.message})" if start.message else ""))
        if messages:
            note += "<br><small>" + " &middot; ".join(html.escape(m) for m in dict.fromkeys(messages)) + "</small>"
        self.status.value = note
        self.step_label.value = str(status.step)
        self.progress.value = min(status.step / max(status.target, 1), 1.0)
        paused = status.phase == "paused"
        self.pause_button.description = "Resume" if paused else "Pause"
        # A launch cannot be paused or stopped: its buttons say so rather than doing nothing.
        for button, tooltip in self._tooltips.items():
            button.disabled = launching
            button.tooltip = "a launch of restarts runs to its end; wait for it" if launching else tooltip


def _labels(model: Model) -> list:
    """Every scalar parameter's label (``"theta[3]"``), deterministic sites included, in the
    naming of :func:`vibench.reference.scalar_draws`."""
    values = jax.eval_shape(model.constrain, model.init_z)
    return [label for name, value in values.items() for label in scalar_labels(name, tuple(value.shape), None)]
