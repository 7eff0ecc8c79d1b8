"""Argument checks shared by every entry point: one copy of each rule, so every function that takes
a count, a key or a number says the same thing about a bad one."""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["check_count", "check_type", "as_integer", "as_real", "as_key"]


def check_count(name: str, n) -> int:
    """``n`` as an int if it is an integer >= 1; else TypeError (not an integer) or ValueError."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= 1, got {n!r} of type {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {n!r}")
    return int(n)


def check_type(name: str, value, kind: type) -> None:
    """TypeError unless ``value`` is a ``kind`` (a bool is not taken for an int)."""
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise TypeError(f"{name} must be a {kind.__name__}, got {value!r} of type {type(value).__name__}")


def as_integer(name: str, value, low=None, high=None) -> int:
    """``value`` as an int within ``[low, high]`` (either may be None)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" + ("" if high is None else f" and <= {high}")
        raise ValueError(f"{name} must be an integer {bounds}, got {value}")
    return value


def as_real(name: str, value, positive: bool = False) -> float:
    """``value`` as a finite float (and > 0 with ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} of type {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:  # an int beyond float range
        raise ValueError(f"{name} must be a finite number{' > 0' if positive else ''}, got {value}") from None
    if not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{name} must be a finite number{' > 0' if positive else ''}, got {value}")
    return value


def as_key(key):
    """``key``, or ``jax.random.key(0)`` when None; TypeError for anything that is not a JAX key."""
    import jax

    if key is None:
        return jax.random.key(0)
    if not isinstance(key, jax.Array):
        raise TypeError(f"key must be a JAX random key such as jax.random.key(0), got {key!r}")
    return key
