"""The interactive Workbench: ipywidgets controls over a background runner of the core's ``fit``.

``controls`` (widgets <-> Config), ``runner`` (the training loop and the only mutable state),
``views`` (matplotlib plots), ``workbench`` (composes them). Nothing here does math.
"""

from .controls import Controls
from .runner import Launch, RunRecord, Runner, Status, config_label, restart_configs
from .workbench import Workbench

__all__ = ["Controls", "Launch", "RunRecord", "Runner", "Status", "Workbench", "config_label", "restart_configs"]
