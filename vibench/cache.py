"""A persistent compilation cache: each of vibench's programs compiles once per machine, not once
per process.

Most of a first fit's time is XLA compiling its chunk (1.2-2.2 s on a 2-core CPU; 0.3-0.6 s
from the cache, see benchmarks/README.md); with
JAX's persistent cache a new kernel or a rerun notebook loads the compiled program from disk
instead. ``vibench demo`` and ``vibench lab`` turn it on; in your own scripts call
:func:`enable_compilation_cache` once, before the first fit. It is JAX's own cache
(``jax_compilation_cache_dir``), so it also serves your other JAX code, and a cache directory you
have configured yourself is left as it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

__all__ = ["enable_compilation_cache", "default_cache_dir", "cache_environment"]

MIN_COMPILE_SECONDS = 0.0  # cache every program: the model build compiles many small ones (JAX: 1 s)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/vibench/jax`` (``~/.cache/vibench/jax`` when XDG_CACHE_HOME is unset)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "vibench" / "jax"


def enable_compilation_cache(path: Optional[Union[str, Path]] = None) -> Path:
    """Point JAX's persistent compilation cache at ``path`` (default :func:`default_cache_dir`, or
    the directory already configured through ``jax_compilation_cache_dir`` / the
    ``JAX_COMPILATION_CACHE_DIR`` variable) and return it. Every compiled program is stored (a
    model's programs take well under a megabyte; the folder may be deleted at any time)."""
    import jax

    configured = jax.config.jax_compilation_cache_dir
    if path is None:
        path = configured or default_cache_dir()
    path = Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    if configured != str(path):
        jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return path


def cache_environment(environ: Optional[dict] = None) -> dict:
    """``environ`` (default ``os.environ``) with JAX's cache variables set as
    :func:`enable_compilation_cache` sets them, where unset: for processes started from here
    (``vibench lab``'s kernels)."""
    env = dict(os.environ if environ is None else environ)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(default_cache_dir()))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", str(MIN_COMPILE_SECONDS))
    return env
