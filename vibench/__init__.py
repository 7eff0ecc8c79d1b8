"""vibench: an interactive variational-inference workbench on a pure JAX core."""

from . import diagnostics, engine, export, guides, models, objectives
from .config import Config
from .engine import Hyper, State, Trace, hyper_from_config, init_params, make_engine
from .export import to_arviz
from .fit import CallbackError, Fit, fit
from .guides import Guide, register_guide
from .model import Density, Model, shard_data
from .objectives import Objective, register_objective

__version__ = "0.1.0"

__all__ = [
    "CallbackError",
    "Config",
    "Density",
    "Fit",
    "Guide",
    "Hyper",
    "Model",
    "Objective",
    "State",
    "Trace",
    "diagnostics",
    "engine",
    "export",
    "fit",
    "guides",
    "hyper_from_config",
    "init_params",
    "make_engine",
    "models",
    "objectives",
    "register_guide",
    "register_objective",
    "shard_data",
    "to_arviz",
]
