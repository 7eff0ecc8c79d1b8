"""The interactive Workbench: ipywidgets controls over a background runner of the core's ``fit``.

``controls`` (widgets <-> Config), ``runner`` (the training loop and the only mutable state),
``views`` (matplotlib plots), ``workbench`` (composes them). Nothing here does math.
"""

from .controls import Controls
from .runner import RunRecord, Runner, Status, config_label
from .workbench import Workbench

__all__ = ["Controls", "RunRecord", "Runner", "Status", "Workbench", "config_label"]
