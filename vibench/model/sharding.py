"""Placing a model's data across several devices; it needs nothing of the model itself."""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def shard_data(*arrays, devices: Optional[Sequence] = None):
    """Place each array's leading (data) axis across ``devices`` (default: all of ``jax.devices()``).

    Pass the results to the model as usual: vibench hands a model's data to the compiled step as
    arguments, so JAX computes the likelihood where each shard lies and sums across devices. The
    leading axis must divide evenly. Returns one array, or a tuple for several.
    """
    devices = list(jax.devices() if devices is None else devices)
    mesh = Mesh(np.array(devices), ("data",))
    placed = []
    for array in arrays:
        array = np.asarray(array)
        if array.ndim == 0 or array.shape[0] % len(devices):
            raise ValueError(
                f"shard_data splits the leading axis over {len(devices)} devices; it must divide evenly, got an "
                f"array of shape {array.shape} (trim or pad the data to a multiple of {len(devices)})"
            )
        placed.append(jax.device_put(array, NamedSharding(mesh, PartitionSpec("data"))))
    return placed[0] if len(placed) == 1 else tuple(placed)
