"""Per-model memoisation of compiled programs.

A program built for a model (an engine, a draw, the starting stage's gradient) is kept as long as
the model lives and rebuilt for no one else: ``@per_model`` caches ``build(model, *args)`` under
``(build, args)``, where ``args`` are the objects that shape the program (a Guide, a Plan's
program, a draw count). Keys are those objects themselves, never names: a family registered again
under the same name is another object, and gets programs of its own.
"""

from __future__ import annotations

import functools
import threading
import weakref
from typing import Callable, TypeVar

__all__ = ["per_model"]

_CACHES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()

F = TypeVar("F", bound=Callable)


def per_model(build: F) -> F:
    """Cache ``build(model, *args)`` per model (weakly: dropped with the model) and per ``args``
    (hashable)."""

    @functools.wraps(build)
    def cached(model, *args):
        key = (build, args)
        with _LOCK:
            per = _CACHES.setdefault(model, {})
            if key in per:
                return per[key]
        value = build(model, *args)
        with _LOCK:
            # Two threads may build at once; the first to finish wins, so both then share one program.
            return per.setdefault(key, value)

    return cached
