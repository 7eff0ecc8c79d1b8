"""The stopping rules: when a run's learning rate decays and when it stops, decided on the host
between chunks from the chunk's per-step ELBOs.

- :class:`Plateau`: the ``"plateau"`` schedule (halve the rate at a plateau; converged at the floor).
- ``Config.tol``: converged once a chunk's median ELBO moves less than ``tol`` relative.
- A family that nothing trains (fitted by its start) is done after one chunk of ELBO estimates.

:class:`Rules` applies all three for one run and carries what they know in a :class:`Memory`, so a
resumed fit decides as an unbroken run would.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

__all__ = ["Memory", "chunk_stats", "Plateau", "Rules"]


class Memory(NamedTuple):
    """What the stopping rules carry from one chunk to the next; a resumed fit starts from it."""

    last_chunk: tuple  # (mean, squared standard error) of the last chunk's accepted ELBOs: tol's reference
    level: Optional[tuple]  # the plateau rule's reference: the last chunk that was a real improvement
    waited: int  # chunks since that level without a real improvement


def chunk_stats(elbo: np.ndarray) -> tuple:
    """``(centre, squared standard error)`` of a chunk's accepted per-step ELBOs, as Python floats:
    the median and its standard error from the median absolute deviation. Robust, because a poor
    guide's per-step ELBOs are heavy-tailed: a single draw 1e7 below the rest made a chunk's mean
    and variance useless, and the plateau rule read a steep climb as a plateau."""
    elbo = np.asarray(elbo, np.float64)
    centre = float(np.median(elbo))
    spread = 1.4826 * float(np.median(np.abs(elbo - centre)))
    return centre, (1.2533 * spread) ** 2 / max(len(elbo), 1)


class Plateau:
    """The ``"plateau"`` schedule: halve the learning rate once the chunk-median ELBO has failed
    ``patience`` chunks running to rise above its last level by two standard errors, down to
    ``final_lr_ratio`` of the base; a plateau at the floor means converged.

    Comparing against the last level that was a real improvement, not the previous chunk, lets a
    slow steady climb (a funnel's neck) accumulate until it counts instead of reading as a plateau.

    A resumed run passes what the rule knew (from ``Fit.memory``): ``current``, the rate it had
    decayed to, ``level``, the :func:`chunk_stats` of its last real improvement, and ``waited``,
    the chunks since then.
    """

    def __init__(
        self,
        learning_rate: float,
        final_lr_ratio: float,
        patience: int = 2,
        *,
        current: Optional[float] = None,
        level: Optional[tuple] = None,
        waited: int = 0,
    ):
        self.learning_rate = float(learning_rate if current is None else current)
        self.floor = float(learning_rate) * final_lr_ratio
        self.patience = patience
        self._level: Optional[tuple] = None if level is None else tuple(level)
        self._waited = int(waited)

    @property
    def level(self) -> Optional[tuple]:
        """``(mean, squared standard error)`` of the last chunk that was a real improvement."""
        return self._level

    @property
    def waited(self) -> int:
        """Chunks since :attr:`level` without a real improvement."""
        return self._waited

    def update(self, elbo: np.ndarray, paired: bool = False) -> tuple:
        """``elbo``: the accepted per-step ELBOs of the last chunk, or with ``paired`` the ELBO of
        each of a fixed set of particles (the same noise every chunk, so that differences between
        chunks are compared draw by draw). Returns ``(learning_rate or None if unchanged, converged)``."""
        elbo = np.asarray(elbo, np.float64)
        # A paired level keeps its particles' values after (mean, squared standard error).
        current = chunk_stats(elbo) + (tuple(map(float, elbo)) if paired else ())
        level = self._level
        if level is None:
            improved = True
        elif paired:
            change = elbo - np.asarray(level[2:])
            improved = np.mean(change) > 2.0 * np.std(change) / np.sqrt(len(change))
        else:
            improved = current[0] - level[0] > 2.0 * np.sqrt(current[1] + level[1])
        if improved:
            self._level, self._waited = current, 0
            return None, False
        self._waited += 1
        if self._waited < self.patience:
            return None, False
        self._level, self._waited = current, 0
        if self.learning_rate <= self.floor * (1 + 1e-6):
            return None, True
        self.learning_rate = max(0.5 * self.learning_rate, self.floor)
        return self.learning_rate, False


class Rules:
    """The stopping rules of one run with Config ``config`` (plateau schedule, ``tol``); ``trains``
    False for a family fitted by its start. ``base_learning_rate`` is the rate the schedule decays
    from, ``learning_rate`` the one the run is at now, ``memory`` what a resumed run knew."""

    def __init__(self, config, base_learning_rate: float, learning_rate: float, memory: Optional[Memory] = None,
                 trains: bool = True):
        self.tol, self.trains = config.tol, trains
        self.plateau = None
        if config.schedule == "plateau":
            self.plateau = Plateau(
                base_learning_rate,
                config.final_lr_ratio,
                current=float(learning_rate),
                level=None if memory is None else memory.level,
                waited=0 if memory is None else memory.waited,
            )

    def update(self, elbo: np.ndarray, memory: Optional[Memory], signal: Optional[np.ndarray] = None) -> tuple:
        """Read one chunk: ``elbo``, its accepted per-step ELBOs (non-empty), after ``memory`` (what
        the rules knew after the chunk before; None at the start), or with ``signal`` the plateau
        rule's paired particle ELBOs instead. Returns ``(learning_rate or None if unchanged,
        converged, memory)``; the caller commits the new memory with the chunk."""
        current = chunk_stats(elbo)
        learning_rate, converged = None, False
        plateau = self.plateau
        if plateau is not None:
            if signal is None:
                learning_rate, converged = plateau.update(elbo)
            else:
                learning_rate, converged = plateau.update(signal, paired=True)
        if not self.trains:
            converged = True  # one chunk of ELBO estimates says all there is
        if self.tol is not None and memory is not None:
            previous_mean = memory.last_chunk[0]
            converged |= abs(current[0] - previous_mean) <= self.tol * max(abs(previous_mean), 1e-12)
        memory = Memory(current, None, 0) if plateau is None else Memory(current, plateau.level, plateau.waited)
        return learning_rate, converged, memory
