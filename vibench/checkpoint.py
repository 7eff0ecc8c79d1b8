"""Checkpoints of a :class:`~vibench.fit.Fit`: ``save(fit, path)`` and ``load(path, model)``.

A checkpoint is one ``.npz`` archive, read back with ``allow_pickle=False``, so loading one never
runs code. It holds the engine state (guide params, optimizer state, the RBG key's data, the step
counters, the runtime numbers ``hyper``, the preconditioner), the ELBO trace, and a JSON header: the
format version, the Config JSON, the model's name, dimension and sites, the starting stage and the
stopping rules' memory (``Fit.memory``). Pytrees are stored as their leaves; their structure is
rebuilt from a fresh ``init`` for the loaded Config on the given model, so nothing is unpickled.

The model is code and is not stored: ``load`` takes it and checks that its dimension and sites are
the saved ones. A custom optax optimizer is code too: pass the same transformation again as
``optimizer=``.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from typing import Optional

import jax
import numpy as np
import optax

from ._version import __version__
from .config import CUSTOM, Config
from .engine import init_params, make_engine
from .state import Hyper, Precond, State, Trace, hyper_from_config
from .result import Fit
from .stopping import Memory
from .model import Model, check_model
from .start import Start

__all__ = ["FORMAT", "VERSION", "save", "load"]

FORMAT = "vibench-fit"
VERSION = 1  # bump when the layout changes; load refuses versions it does not know


def save(fit: Fit, path) -> None:
    """Write ``fit`` to ``path`` (the name is used as given; ``.npz`` is the usual suffix).

    The file is written next to ``path`` and moved into place at the end, so an interrupted save
    never leaves a half-written checkpoint where a good one was.
    """
    if not isinstance(fit, Fit):
        raise TypeError(f"save expects a vibench.Fit, got {type(fit).__name__}")
    path = os.fspath(path)
    state = fit.state
    arrays = {}
    params = _leaves(state.params, "params", arrays)
    opt_state = _leaves(state.opt_state, "opt_state", arrays)
    arrays["key"] = np.asarray(jax.random.key_data(state.key))
    arrays["step"] = np.asarray(state.step, np.int32)
    arrays["num_rejected"] = np.asarray(state.num_rejected, np.int32)
    for name, value in zip(Hyper._fields, state.hyper):
        arrays[f"hyper.{name}"] = np.asarray(value)
    for name, value in zip(Precond._fields, state.precond):
        arrays[f"precond.{name}"] = np.asarray(value)
    for name, value in zip(Trace._fields, fit.trace):
        arrays[f"trace.{name}"] = np.asarray(value)
    start = fit.start
    header = {
        "format": FORMAT,
        "version": VERSION,
        "vibench": __version__,
        "model": {"name": fit.model.name, "dim": fit.model.dim, "sites": {k: list(v) for k, v in fit.model.sites.items()}},
        "config": fit.config.to_json(),
        "key_impl": str(jax.random.key_impl(state.key)),
        "num_leaves": {"params": params, "opt_state": opt_state},
        "start": None if start is None else {
            "method": start.method, "scale": float(start.scale), "message": start.message, "seconds": float(start.seconds),
        },
        "stop_reason": fit.stop_reason,
        "wall_time": float(fit.wall_time),
        "memory": None if fit.memory is None else {
            "last_chunk": [float(x) for x in fit.memory.last_chunk],
            "level": None if fit.memory.level is None else [float(x) for x in fit.memory.level],
            "waited": int(fit.memory.waited),
        },
    }
    arrays["header"] = np.frombuffer(json.dumps(header, allow_nan=False).encode(), np.uint8)
    folder = os.path.dirname(os.path.abspath(path))
    handle, partial = tempfile.mkstemp(dir=folder, prefix=".vibench-", suffix=".npz.partial")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez_compressed(file, **arrays)
        os.replace(partial, path)
    except BaseException:
        os.unlink(partial)
        raise


def load(path, model: Model, optimizer: Optional[optax.GradientTransformation] = None) -> Fit:
    """The fit saved at ``path``, attached to ``model`` (which must have the saved dimension and
    sites). ``optimizer``: the optax transformation of a fit made with ``fit(optimizer=...)``."""
    check_model(model, "Fit.load")
    path = os.fspath(path)
    arrays = _read(path)
    header = _header(arrays, path)
    _check_model_matches(header["model"], model, path)
    config = Config.from_json(header["config"])
    if config.optimizer == CUSTOM and optimizer is None:
        raise ValueError(
            f"{path} is a fit made with a custom optax optimizer, which a checkpoint cannot hold (it is "
            "code): pass the same optax transformation as optimizer=, e.g. vb.Fit.load(path, model, optimizer=opt)"
        )
    if optimizer is not None:
        if config.optimizer != CUSTOM:
            raise ValueError(
                f"optimizer= is only for fits made with a custom optax optimizer; {path} was fitted with "
                f"optimizer={config.optimizer!r}, which the checkpoint rebuilds itself"
            )
        if not isinstance(optimizer, optax.GradientTransformation):
            raise TypeError(f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")

    engine = make_engine(model, config, optimizer)
    template = init_params(model, config, jax.random.key(0))
    params = _rebuild(template, arrays, "params", header, path, f"the params of guide {config.guide!r} on {model!r}")
    what = "the state of the optimizer passed" if optimizer is not None else f"the state of optimizer {config.optimizer!r}"
    opt_state = _rebuild(engine.optimizer.init(template), arrays, "opt_state", header, path, what)
    hyper = Hyper(*(
        np.asarray(_array(arrays, f"hyper.{name}", path), np.asarray(default).dtype)
        for name, default in zip(Hyper._fields, hyper_from_config(config))
    ))
    precond = Precond(*(jax.numpy.asarray(_array(arrays, f"precond.{name}", path)) for name in Precond._fields))
    if precond.shift.shape != (model.dim,):
        raise ValueError(f"{path} is corrupted: its preconditioner has shape {precond.shift.shape}, the model's dimension is {model.dim}")
    try:
        key = jax.random.wrap_key_data(_array(arrays, "key", path), impl=header["key_impl"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path} is corrupted: its random key cannot be restored ({err})") from None
    state = State(
        params=params,
        opt_state=opt_state,
        key=key,
        step=jax.numpy.asarray(_array(arrays, "step", path), np.int32),
        num_rejected=jax.numpy.asarray(_array(arrays, "num_rejected", path), np.int32),
        hyper=hyper,
        precond=precond,
    )
    trace = Trace(*(_array(arrays, f"trace.{name}", path) for name in Trace._fields))
    if len({column.shape for column in trace}) != 1:
        raise ValueError(f"{path} is corrupted: its trace columns differ in length")
    saved_start = header.get("start")
    start = None if saved_start is None else Start(
        saved_start["method"], precond, saved_start["scale"], saved_start["message"], saved_start["seconds"]
    )
    memory = _memory(header.get("memory"), path)
    return Fit(
        model=model,
        config=config,
        state=state,
        trace=trace,
        wall_time=float(header.get("wall_time", 0.0)),
        stop_reason=header.get("stop_reason", "completed"),
        optimizer=optimizer,
        start=start,
        memory=memory,
    )


def _memory(saved, path: str) -> Optional[Memory]:
    if saved is None:
        return None
    try:
        level = saved["level"]
        return Memory(tuple(map(float, saved["last_chunk"])), None if level is None else tuple(map(float, level)), int(saved["waited"]))
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path} is corrupted: its stopping rules' memory is garbled") from None


def _leaves(tree, prefix: str, arrays: dict) -> int:
    leaves = jax.tree_util.tree_leaves(tree)
    for i, leaf in enumerate(leaves):
        value = np.asarray(leaf)
        if value.dtype == object:
            raise TypeError(f"{prefix} leaf {i} is a {type(leaf).__name__}, not an array; a checkpoint stores arrays only")
        arrays[f"{prefix}.{i}"] = value
    return len(leaves)


def _read(path: str) -> dict:
    """Every array of the archive, read now (a damaged member fails here, not later)."""
    unreadable = (
        f"{path} is not a vibench checkpoint, or it is corrupted or truncated; it cannot be read"
    )
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an archive")
        with archive:
            return {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        raise ValueError(f"{unreadable} ({type(err).__name__}: {err})") from None


def _header(arrays: dict, path: str) -> dict:
    if "header" not in arrays:
        raise ValueError(f"{path} is not a vibench checkpoint (it has no header); write one with fit.save(path)")
    try:
        header = json.loads(arrays["header"].tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{path} is corrupted: its header is not JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a vibench checkpoint (format {header.get('format') if isinstance(header, dict) else None!r})")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{path} is corrupted: format version {version!r}")
    if version > VERSION:
        raise ValueError(
            f"{path} has checkpoint format version {version} (written by vibench {header.get('vibench', '?')}); "
            f"this vibench {__version__} reads versions up to {VERSION}: upgrade vibench to load it"
        )
    missing = {"model", "config", "key_impl", "num_leaves"} - set(header)
    model = header.get("model")
    if not missing and not (isinstance(model, dict) and isinstance(model.get("sites"), dict) and isinstance(model.get("dim"), int)):
        missing = {"model"}
    if missing or not isinstance(header["num_leaves"], dict):
        raise ValueError(f"{path} is corrupted: its header lacks or garbles {sorted(missing or {'num_leaves'})}")
    return header


def _check_model_matches(saved: dict, model: Model, path: str) -> None:
    sites = {k: tuple(v) for k, v in saved["sites"].items()}
    if saved["dim"] == model.dim and sites == dict(model.sites):
        return
    differences = []
    if saved["dim"] != model.dim:
        differences.append(f"dimension {saved['dim']} vs {model.dim}")
    if set(sites) != set(model.sites):
        differences.append(f"sites {sorted(sites)} vs {sorted(model.sites)}")
    else:
        differences += [f"site {k!r} shape {sites[k]} vs {model.sites[k]}" for k in sites if sites[k] != model.sites[k]]
    raise ValueError(
        f"{path} holds a fit of another model ({saved.get('name')!r}); it cannot be loaded for {model!r}: "
        + "; ".join(differences)
    )


def _array(arrays: dict, name: str, path: str) -> np.ndarray:
    try:
        return arrays[name]
    except KeyError:
        raise ValueError(f"{path} is corrupted: it lacks the array {name!r}") from None


def _rebuild(template, arrays: dict, prefix: str, header: dict, path: str, what: str):
    """``template``'s pytree structure filled with the saved leaves, each checked for shape and dtype."""
    leaves, treedef = jax.tree_util.tree_flatten(template)
    saved = header["num_leaves"].get(prefix)
    if saved != len(leaves):
        raise ValueError(f"{path} does not match {what}: it holds {saved} arrays, {len(leaves)} expected")
    restored = []
    for i, leaf in enumerate(leaves):
        value = _array(arrays, f"{prefix}.{i}", path)
        if value.shape != np.shape(leaf) or value.dtype != np.asarray(leaf).dtype:
            raise ValueError(
                f"{path} does not match {what}: array {i} is {value.dtype}{list(value.shape)}, "
                f"{np.asarray(leaf).dtype}{list(np.shape(leaf))} expected"
            )
        restored.append(jax.numpy.asarray(value))
    return jax.tree_util.tree_unflatten(treedef, restored)
