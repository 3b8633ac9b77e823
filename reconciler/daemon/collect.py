"""Garbage collection for a process that holds 10,000s of long-lived objects (file records,
registry entries, status rows) and must answer ``/healthz`` within a fraction of a second.

A full collection walks every tracked object while holding the GIL: 0.1 to 0.5 s at 20,000
models, and the loading and listing of a full resync trigger several. So the daemon turns the
automatic full collections off and, after each full resync, collects the young generations
(a few ms) and freezes the survivors: frozen objects are never walked again, and are still
freed as soon as their last reference goes (the state holds no reference cycles). What could
build up is cyclic garbage among old objects; an hourly full collection clears it.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

FULL_EVERY = 3600.0  # seconds between full collections


def configure() -> None:
    """Turn the automatic full collections off (once, at start; process-wide). The young
    generations stay small (at most about 55,000 objects), so collecting them is a few ms."""
    gc.set_threshold(5_000, 10, 1_000_000)


class Collector:
    """Call :meth:`settle` after a full resync."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._full_at = clock()

    def settle(self) -> None:
        """Collect the young generations (and, once an hour, everything); freeze the rest."""
        now = self._clock()
        if now - self._full_at >= FULL_EVERY:
            self._full_at = now
            gc.unfreeze()
            gc.collect()
        else:
            gc.collect(1)
        gc.freeze()
