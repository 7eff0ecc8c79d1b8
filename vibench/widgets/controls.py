"""The Workbench's controls: ipywidgets that read and write a :class:`vibench.Config`.

Each control maps to one Config field. A change builds a new Config with ``vibench.plan.adjust``
(which validates it, and puts back estimator settings the new family or objective cannot take)
and hands it to ``on_change``; a value the Config refuses is put back and the error is reported,
so the controls never hold a Config that could not run. Which controls apply is asked of the
Config's :class:`~vibench.plan.Plan`.
"""

from __future__ import annotations

from typing import Callable, Optional

import ipywidgets as widgets

from ..config import Config
from ..guides import GUIDES
from ..methods import ESTIMATOR_FIELDS
from ..objectives import OBJECTIVES
from ..plan import INITS, OPTIMIZERS, SCHEDULES, adjust, resolve

__all__ = ["Controls"]

_WIDE = widgets.Layout(width="300px")
_STYLE = {"description_width": "110px"}


class Controls:
    """Widgets for every Config field a person changes while exploring.

    ``on_change(config, batch_size)`` is called with each new valid Config (``batch_size`` None
    for all data); ``on_error(message)`` with the reason a value was refused. ``num_data`` enables
    the batch-size control (for models that can subsample), starting at ``batch_size``.
    """

    def __init__(self, config: Config, num_data: Optional[int] = None, batch_size: Optional[int] = None,
                 on_change: Optional[Callable] = None, on_error: Optional[Callable[[str], None]] = None):
        self.config = config
        self.batch_size: Optional[int] = batch_size
        self.on_change, self.on_error = on_change, on_error
        self._updating = False
        self.guide = widgets.Dropdown(options=sorted(GUIDES), value=config.guide, description="guide")
        self.rank = widgets.BoundedIntText(value=config.rank or 1, min=1, max=10_000, description="rank")
        self.init = widgets.Dropdown(options=list(INITS), value=config.init, description="start")
        self.objective = widgets.Dropdown(options=sorted(OBJECTIVES), value=config.objective, description="objective")
        self.stl = widgets.Checkbox(value=config.use_stl, description="stick-the-landing", indent=False)
        self.num_particles = widgets.BoundedIntText(value=config.num_particles, min=1, max=4096, description="particles")
        self.alpha = widgets.FloatText(value=config.alpha, step=0.1, description="Renyi alpha")
        self.optimizer = widgets.Dropdown(options=sorted(OPTIMIZERS), value=config.optimizer if config.optimizer in OPTIMIZERS
                                          else "adam", description="optimizer")
        self.learning_rate = widgets.FloatLogSlider(value=config.learning_rate, base=10, min=-5, max=0, step=0.1,
                                                    description="learning rate", readout_format=".1e", continuous_update=False)
        self.schedule = widgets.Dropdown(options=list(SCHEDULES), value=config.schedule, description="schedule")
        self.clip_norm = widgets.FloatText(value=config.clip_norm or 0.0, description="clip norm (0 off)")
        self.num_steps = widgets.BoundedIntText(value=config.num_steps, min=1, max=2**31 - 1, step=1000, description="steps")
        self.seed = widgets.BoundedIntText(value=config.seed, min=0, max=2**32 - 1, description="seed")
        self.batch = widgets.BoundedIntText(value=batch_size or 0, min=0, max=num_data or 0, description="batch size (0 all)",
                                            disabled=num_data is None)
        self._fields = {
            "guide": self.guide, "rank": self.rank, "init": self.init, "objective": self.objective, "stl": self.stl,
            "num_particles": self.num_particles, "alpha": self.alpha, "optimizer": self.optimizer,
            "learning_rate": self.learning_rate, "schedule": self.schedule, "clip_norm": self.clip_norm,
            "num_steps": self.num_steps, "seed": self.seed,
        }
        for name, control in self._fields.items():
            control.style = _STYLE
            control.layout = _WIDE
            control.observe(lambda change, name=name: self._changed(name, change), names="value")
        self.batch.style, self.batch.layout = _STYLE, _WIDE
        self.batch.observe(self._batch_changed, names="value")
        self.widget = widgets.VBox([
            widgets.HTML("<b>Guide</b>"), self.guide, self.rank, self.init,
            widgets.HTML("<b>Estimator</b>"), self.objective, self.stl, self.num_particles, self.alpha,
            widgets.HTML("<b>Optimizer</b>"), self.optimizer, self.learning_rate, self.schedule, self.clip_norm,
            self.num_steps, self.seed, self.batch,
        ], layout=widgets.Layout(min_width="320px"))
        self._sync()

    def _changed(self, name: str, change) -> None:
        if self._updating:
            return
        value = change["new"]
        changes = {name: value}
        if name == "clip_norm":
            changes = {"clip_norm": float(value) if value and value > 0 else None}
        elif name == "guide":
            changes["rank"] = int(self.rank.value) if value == "lowrank" else None
        elif name == "rank" and self.config.guide != "lowrank":
            return
        elif name == "objective":
            changes["stl"] = None  # each objective's own default
        elif name == "learning_rate":
            changes = {name: float(value)}
        self._apply(changes)

    def _batch_changed(self, change) -> None:
        if self._updating:
            return
        batch_size = int(change["new"]) or None
        try:
            if self.on_change is not None:
                self.on_change(self.config, batch_size)
        except (TypeError, ValueError) as err:
            self._refuse(err)
            return
        self.batch_size = batch_size

    def _apply(self, changes: dict) -> None:
        try:
            config = adjust(self.config, **changes)
            if self.on_change is not None:
                self.on_change(config, self.batch_size)
        except (TypeError, ValueError) as err:
            self._refuse(err)
            return
        self.config = config
        self._sync()

    def _refuse(self, err: Exception) -> None:
        self._sync()  # put the refused value back
        if self.on_error is not None:
            self.on_error(str(err))

    def set_config(self, config: Config) -> None:
        """Show ``config`` (without calling ``on_change``)."""
        self.config = config
        self._sync()

    def _sync(self) -> None:
        """Widgets show ``self.config``; controls that do not apply are disabled."""
        self._updating = True
        try:
            c = self.config
            for name, control in self._fields.items():
                if name == "stl":
                    control.value = c.use_stl
                elif name == "rank":
                    control.value = c.rank or control.value
                elif name == "clip_norm":
                    control.value = c.clip_norm or 0.0
                elif name == "optimizer" and c.optimizer not in OPTIMIZERS:
                    control.disabled = True
                else:
                    control.value = getattr(c, name)
            self.batch.value = self.batch_size or 0
            plan = resolve(c)
            self.rank.disabled = c.guide != "lowrank"
            for name in ESTIMATOR_FIELDS:
                self._fields[name].disabled = not plan.takes(name)
        finally:
            self._updating = False
