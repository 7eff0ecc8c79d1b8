"""vibench: an interactive variational-inference workbench on a pure JAX core."""

# NumPyro loaded for real before any of its submodules: ArviZ 1.x (arviz-base) imported first leaves
# a lazy placeholder for numpyro in sys.modules, and `import numpyro.distributions` through that
# placeholder runs numpyro.distributions a second time without its submodules, so numpyro.factor
# fails. Reading an attribute of the package loads it; vibench imports ArviZ only inside functions.
import numpyro as _numpyro

_numpyro.__version__
del _numpyro

from . import diagnostics, engine, export, guides, methods, models, objectives, reference
from .cache import enable_compilation_cache
from .config import Config
from .engine import init_params, make_engine
from .state import Hyper, State, Trace, hyper_from_config
from .export import to_arviz
from .fit import fit, start_fit
from .guides import Guide, register_guide
from .many import fit_many
from .model import Density, Model, shard_data
from .objectives import Objective, register_objective
from .plan import Plan
from ._version import __version__
from .result import CallbackError, Fit


def __getattr__(name):
    # The Workbench pulls in ipywidgets and matplotlib: imported on first use, so that headless
    # fits (scripts, the CLI, CI) do not pay for them.
    if name == "Workbench":
        from .widgets import Workbench

        return Workbench
    raise AttributeError(f"module 'vibench' has no attribute {name!r}")


__all__ = [
    "CallbackError",
    "Config",
    "Density",
    "Fit",
    "Guide",
    "Hyper",
    "Model",
    "Objective",
    "Plan",
    "State",
    "Trace",
    "Workbench",
    "__version__",
    "diagnostics",
    "enable_compilation_cache",
    "engine",
    "export",
    "fit",
    "fit_many",
    "guides",
    "hyper_from_config",
    "init_params",
    "make_engine",
    "methods",
    "models",
    "objectives",
    "register_guide",
    "register_objective",
    "reference",
    "shard_data",
    "start_fit",
    "to_arviz",
]
