"""The interactive Workbench: ipywidgets controls over a background runner of the core's ``fit``.

``controls`` (widgets <-> Config), ``runner`` (the training thread's state machine and the only
mutable state), ``records`` (finished runs and the numbers that rank them), ``launch`` (restarts
trained at once), ``views`` (matplotlib plots), ``workbench`` (composes them). Nothing here does
math.
"""

from .controls import Controls
from .launch import Launch, restart_configs
from .records import RunRecord, config_label
from .runner import Runner, Status
from .workbench import Workbench

__all__ = ["Controls", "Launch", "RunRecord", "Runner", "Status", "Workbench", "config_label", "restart_configs"]
