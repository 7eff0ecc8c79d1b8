"""``Plan``: a Config resolved once into the objects it names.

A :class:`~vibench.Config` holds names (``guide="fullrank"``, ``objective="elbo"``,
``optimizer="adam"``); a Plan holds what they mean: the :class:`~vibench.guides.Guide`, the fitting
:class:`~vibench.methods.Method`, the :class:`~vibench.objectives.Objective`, whether
stick-the-landing is on, the starting stage and the optimizer. It is resolved at the edge
(``fit``, ``fit_many``, the Workbench) and passed down; nothing below looks a name up again, and
compiled programs are cached on :attr:`Plan.program`, the objects that shape them.

The names a Config may use (optimizers, schedules, starting stages) are listed here, with the one
copy of the rules that resolve them.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, NamedTuple, Optional

import optax

from .guides import Guide, get_guide
from .methods import ESTIMATOR_FIELDS, Method, get_method
from .objectives import Objective, get_objective

__all__ = ["Plan", "Program", "resolve", "as_plan", "adjust", "make_objective", "check_names", "optimizer_options",
           "OPTIMIZERS", "SCHEDULES", "INITS", "CUSTOM"]

OPTIMIZERS = {
    "adam": optax.adam,
    "adamw": optax.adamw,
    "sgd": optax.sgd,
    "momentum": optax.sgd,  # optax's sgd with its `momentum` option, 0.9 unless set
    "rmsprop": optax.rmsprop,
    "adagrad": optax.adagrad,
    "adabelief": optax.adabelief,
}
_DEFAULT_OPTIONS = {"momentum": {"momentum": 0.9}}
SCHEDULES = ("plateau", "constant", "exponential", "cosine")
INITS = ("laplace", "pathfinder", "map", "prior")
CUSTOM = "custom"  # the optimizer name recorded when fit() is handed an optax transformation


class Program(NamedTuple):
    """What shapes a compiled engine, and nothing else: two Plans with equal programs share one.

    ``optimizer`` is ``(name, options)`` for a named optax optimizer, or the custom
    transformation itself; ``schedule`` is the one compiled in (``"plateau"`` decays through the
    runtime learning rate, so it compiles as ``"constant"``).
    """

    guide: Guide
    method: Method
    objective: Objective
    num_particles: int
    schedule: str
    optimizer: Any

    def transformation(self) -> tuple:
        """``(optax transformation, scale_updates)``: a named optimizer runs at unit step size and
        the engine scales its update by the runtime learning rate and schedule (optax's aliases
        all end in that same scaling); a custom one is used as given."""
        if isinstance(self.optimizer, optax.GradientTransformation):
            return self.optimizer, False
        name, options = self.optimizer
        return OPTIMIZERS[name](learning_rate=1.0, **dict(options)), True


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
    """A Config resolved: ``guide``, ``method``, ``objective``, ``stl`` (as it runs), ``start``
    (the starting stage that runs) and ``optimizer`` (a custom optax transformation, or None for
    the Config's named one)."""

    config: Any
    guide: Guide
    method: Method
    objective: Objective
    stl: bool
    start: str
    optimizer: Optional[optax.GradientTransformation] = None

    @property
    def num_particles(self) -> int:
        return self.config.num_particles

    @property
    def program(self) -> Program:
        """The part of the plan that shapes compiled programs (the engine's cache key)."""
        config = self.config
        if self.optimizer is not None:
            optimizer = self.optimizer
        elif config.optimizer == CUSTOM:
            raise ValueError("config.optimizer is 'custom': pass the optax transformation as optimizer=")
        else:
            optimizer = (config.optimizer, tuple(sorted(optimizer_options(config.optimizer, config.optimizer_options).items())))
        schedule = "constant" if config.schedule == "plateau" else config.schedule
        return Program(self.guide, self.method, self.objective, config.num_particles, schedule, optimizer)

    def takes(self, field: str) -> bool:
        """Whether the Config field ``field`` means anything for this plan (the estimator settings
        a fitting method fixes do not; ``alpha`` only for the objectives that read it)."""
        if field not in ESTIMATOR_FIELDS:
            return True
        if field not in self.method.takes:
            return False
        if field == "alpha":
            return self.objective.name == "renyi"
        if field == "stl":
            return self.guide.supports_stl
        return True


def check_names(config) -> None:
    """ValueError naming the first of ``config``'s guide, objective, optimizer, start or schedule
    that is not a known name."""
    get_guide(config.guide)
    get_objective(config.objective)
    if config.optimizer != CUSTOM and config.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {config.optimizer!r}; known optimizers: {sorted(OPTIMIZERS)}")
    if config.init not in INITS:
        raise ValueError(f"unknown init {config.init!r}; known starts: {list(INITS)}")
    if config.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {config.schedule!r}; known schedules: {list(SCHEDULES)}")


def resolve(config, optimizer: Optional[optax.GradientTransformation] = None) -> Plan:
    """The :class:`Plan` of ``config`` (``optimizer``: the custom optax transformation of a Config
    whose optimizer is ``"custom"``); ValueError for a combination the family or objective cannot
    serve."""
    guide = get_guide(config.guide)
    method = get_method(guide.method)
    objective = get_objective(config.objective)
    if config.optimizer in OPTIMIZERS:
        _check_optimizer_options(config.optimizer, config.optimizer_options)
    stl = config.stl if config.stl is not None else method.default_stl(guide, objective)
    method.check(guide, objective, stl, config.num_particles)
    return Plan(config, guide, method, objective, bool(stl), method.start or config.init, optimizer)


def as_plan(config_or_plan, optimizer: Optional[optax.GradientTransformation] = None) -> Plan:
    """``config_or_plan`` if it is a Plan, else the Plan :func:`resolve` gives for it."""
    if isinstance(config_or_plan, Plan):
        return config_or_plan
    return resolve(config_or_plan, optimizer)


def adjust(config, **changes):
    """``config.replace(**changes)``; when ``changes`` name a new family or objective, with the
    estimator settings that leaves invalid put back to ones they take: stick-the-landing to its
    default, then the particles a multi-particle bound needs (8), then the ELBO objective, then one
    particle. A field named in ``changes`` is never adjusted, and a change of any other field is
    refused as it is. Raises the Config's ValueError if nothing serves."""
    if not {"guide", "objective"} & set(changes):
        return config.replace(**changes)
    fallbacks = ({}, {"stl": None}, {"stl": None, "num_particles": 8}, {"stl": None, "objective": "elbo"},
                 {"stl": None, "objective": "elbo", "num_particles": 1})
    first_error = None
    for fallback in fallbacks:
        fallback = {name: value for name, value in fallback.items() if name not in changes}
        if fallback.get("num_particles") == 8 and config.num_particles >= 2:
            continue  # more particles only for a bound that needs two or more
        try:
            return config.replace(**{**fallback, **changes})
        except ValueError as err:
            first_error = first_error or err
    raise first_error


def make_objective(name: str, model, guide: Guide, num_particles: int):
    """``fn(params, eps, hyper) -> (loss, {"elbo": elbo})`` with ``eps`` of shape ``(K, m)``: the
    loss that fits ``guide`` on ``model`` with objective ``name``, as the family's fitting method
    builds it (a MAP's is minus the log joint at its location, whatever ``name``)."""
    return get_method(guide.method).build(model, guide, get_objective(name), num_particles)


def optimizer_options(name: str, options: dict) -> dict:
    """The keyword options of the named optax optimizer (defaults for ``momentum`` included)."""
    return {**_DEFAULT_OPTIONS.get(name, {}), **options}


def _check_optimizer_options(name: str, options: dict) -> None:
    allowed = set(inspect.signature(OPTIMIZERS[name]).parameters) - {"learning_rate"}
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"optimizer_options: optimizer {name!r} has no option(s) {sorted(unknown)}; it takes {sorted(allowed)}")
