"""``Config``: the one serialisable description of a VI run.

The widgets edit a Config, the engine consumes it, the export stores it. It is validated where it
is built, before anything compiles; every field, its range and its default are listed in
``docs/config.md``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

from ._checks import as_integer, as_real, check_type
from .plan import CUSTOM, INITS, OPTIMIZERS, SCHEDULES, check_names, resolve

__all__ = ["Config", "INITS", "OPTIMIZERS", "SCHEDULES", "CUSTOM", "MAX_STEPS", "as_config"]

MAX_STEPS = 2**31 - 1  # the engine counts steps in int32


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a VI run; see ``docs/config.md`` for each field's range.

    ``stl=None`` means "the objective's default": on for ``elbo`` with a family that serves it
    (not the flows, nor the families fitted at a mode or by their start), off otherwise (read the
    resolved value from :attr:`use_stl`).
    """

    guide: str = "meanfield"
    rank: Optional[int] = None
    guide_options: dict = dataclasses.field(default_factory=dict)
    init: str = "laplace"
    init_scale: float = 0.1
    objective: str = "elbo"
    num_particles: int = 1
    stl: Optional[bool] = None
    alpha: float = 0.5
    optimizer: str = "adam"
    optimizer_options: dict = dataclasses.field(default_factory=dict)
    learning_rate: float = 1e-2
    schedule: str = "plateau"
    warmup_steps: int = 0
    final_lr_ratio: float = 0.01
    clip_norm: Optional[float] = None
    num_steps: int = 10_000
    seed: int = 0
    chunk_size: int = 500
    tol: Optional[float] = None

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        for name in ("guide", "objective", "optimizer", "schedule", "init"):
            check_type(name, getattr(self, name), str)
        check_names(self)

        set_("num_particles", as_integer("num_particles", self.num_particles, low=1))
        set_("num_steps", as_integer("num_steps", self.num_steps, low=1, high=MAX_STEPS))
        set_("chunk_size", as_integer("chunk_size", self.chunk_size, low=1, high=MAX_STEPS))
        set_("warmup_steps", as_integer("warmup_steps", self.warmup_steps, low=0, high=MAX_STEPS))
        set_("seed", as_integer("seed", self.seed, low=0, high=2**32 - 1))
        set_("learning_rate", as_real("learning_rate", self.learning_rate, positive=True))
        set_("init_scale", as_real("init_scale", self.init_scale, positive=True))
        set_("final_lr_ratio", as_real("final_lr_ratio", self.final_lr_ratio, positive=True))
        if self.final_lr_ratio > 1:
            raise ValueError(f"final_lr_ratio must be in (0, 1], got {self.final_lr_ratio}")
        set_("alpha", as_real("alpha", self.alpha))
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0 (0 is the IWAE bound), got {self.alpha}")
        if self.objective == "renyi" and self.alpha == 1:
            raise ValueError("alpha must not be 1 for objective 'renyi' (alpha -> 1 is the ELBO: use objective='elbo')")
        if self.clip_norm is not None:
            set_("clip_norm", as_real("clip_norm", self.clip_norm, positive=True))
        if self.tol is not None:
            set_("tol", as_real("tol", self.tol, positive=True))
        if self.stl is not None:
            check_type("stl", self.stl, bool)
        if self.rank is not None:
            if self.guide != "lowrank":
                raise ValueError(f"rank applies to guide 'lowrank' only, got guide={self.guide!r} with rank={self.rank}")
            set_("rank", as_integer("rank", self.rank, low=1))
        # Options are stored as their JSON form: a Config stays serialisable, hashable per value and
        # equal to its round trip (tuples become lists, NumPy scalars Python numbers).
        set_("guide_options", _json_options("guide_options", self.guide_options, scalars=False))
        set_("optimizer_options", _json_options("optimizer_options", self.optimizer_options, scalars=True))
        resolve(self)  # the names and their combination: a Config that resolves can run

    @property
    def use_stl(self) -> bool:
        """Stick-the-landing as it will run: ``stl``, or the objective's default when unset."""
        return resolve(self).stl

    @property
    def guide_init_options(self) -> dict:
        """The options the guide family's ``init`` receives (``rank`` folded in)."""
        options = dict(self.guide_options)
        if self.rank is not None:
            options["rank"] = self.rank
        return options

    def replace(self, **changes) -> "Config":
        """A copy with ``changes`` applied (and validated)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"Config has no field(s) {sorted(unknown)}; fields: {[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The Config as a JSON string; :meth:`from_json` reads it back."""
        return json.dumps({"vibench_config": 1, **self.to_dict()}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Config":
        """The Config written by :meth:`to_json` (validated like any other)."""
        if not isinstance(text, (str, bytes)):
            raise TypeError(f"Config.from_json expects a JSON string, got {type(text).__name__}")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"Config.from_json: the text is not JSON ({err}); pass the string Config.to_json() wrote") from None
        if not isinstance(data, dict):
            raise ValueError(f"Config.from_json expects a JSON object, got a JSON {type(data).__name__}")
        version = data.pop("vibench_config", 1)
        if version != 1:
            raise ValueError(
                f"this Config JSON has format version {version!r}; this vibench reads version 1 "
                "(a newer vibench wrote it: upgrade vibench to read it)"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"Config.from_json: unknown field(s) {sorted(unknown)}; fields: {sorted(fields)}")
        return cls(**data)


_SCALARS = (str, int, float, bool, type(None))


def _json_options(name: str, options, scalars: bool) -> dict:
    check_type(name, options, dict)
    plain = {}
    for key, value in options.items():
        if not isinstance(key, str):
            raise TypeError(f"{name} keys must be option names (str), got {key!r} of type {type(key).__name__}")
        if hasattr(value, "item") and getattr(value, "shape", None) == ():
            value = value.item()  # a NumPy or JAX scalar
        if scalars and not isinstance(value, _SCALARS):
            raise TypeError(
                f"{name}[{key!r}] must be a number, bool, str or None, got {value!r} of type "
                f"{type(value).__name__}; for anything richer pass an optax transformation as fit(optimizer=...)"
            )
        try:
            json.dumps(value, allow_nan=False)
        except TypeError:
            raise TypeError(
                f"{name}[{key!r}] must be a JSON value (number, bool, str, None, or a list or dict of those) "
                f"so the Config can be saved, got {value!r} of type {type(value).__name__}"
            ) from None
        except ValueError:
            raise ValueError(f"{name}[{key!r}] must be finite, got {value!r}") from None
        plain[key] = value
    return json.loads(json.dumps(plain))


def as_config(config, required: bool = False) -> Config:
    """``config`` if it is a :class:`Config`, ``Config()`` when None (unless ``required``); a
    TypeError otherwise. Every entry point that takes a Config calls this, so all say the same."""
    if config is None and not required:
        return Config()
    if not isinstance(config, Config):
        raise TypeError(f"config must be a vibench.Config, got {type(config).__name__}")
    return config
