"""SIGINT/SIGTERM during ``diff`` or ``sync``, and a run the registry cut short: how they end.

Before any write a signal ends the run at once. Once writing, the first signal lets no new write
start (:class:`~reconciler.apply.Stop`) and waits for those in flight, up to ``GRACE`` seconds;
a second one abandons them. The exit status is 130 after SIGINT, 143 after SIGTERM, as shells
expect of a command stopped by a signal.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import TypeVar

import anyio
from rich.console import Console

from .. import defaults
from ..apply import Outcome, Stop

EXIT_SIGINT, EXIT_SIGTERM = 130, 143
GRACE = defaults.GRACE  # seconds the writes in flight get to finish after the first signal
SIGNALS = (signal.SIGINT, signal.SIGTERM)

T = TypeVar("T")


class Interrupted(Exception):
    """A signal arrived before any write started: the run ends here."""


class Interrupt:
    """The signals of one one-shot run, and the :class:`Stop` they drive."""

    def __init__(self, err: Console, grace: float = GRACE) -> None:
        self.err = err
        self.stop = Stop(grace)
        self.signal: signal.Signals | None = None
        self.writing = False  # set once the first write may start
        self._scope: anyio.CancelScope | None = None

    @property
    def signal_name(self) -> str:
        return self.signal.name if self.signal is not None else "SIGINT"

    @property
    def exit_code(self) -> int:
        return EXIT_SIGTERM if self.signal is signal.SIGTERM else EXIT_SIGINT

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Outside the event loop, a signal raises :class:`Interrupted`; handlers restored after."""
        previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
        for sig in SIGNALS:
            signal.signal(sig, self._raise)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _raise(self, signum: int, frame: FrameType | None) -> None:
        self.signal = self.signal or signal.Signals(signum)
        if not self.writing:
            raise Interrupted
        # The writes are over and being reported: finish that, then exit 130/143.

    async def run(self, main: Callable[[], Awaitable[T]]) -> T:
        """Run ``main`` with the signals handled in the loop; raises :class:`Interrupted` when a
        signal came before the writes (they cancel the reading)."""
        loop = asyncio.get_running_loop()
        with anyio.CancelScope() as self._scope:
            for sig in SIGNALS:
                loop.add_signal_handler(sig, self._on_signal, sig)
            try:
                return await main()
            finally:
                for sig in SIGNALS:
                    loop.remove_signal_handler(sig)
                    signal.signal(sig, self._raise)  # asyncio put the default back
        raise Interrupted

    def _on_signal(self, sig: signal.Signals) -> None:
        first = self.signal is None
        self.signal = self.signal or sig
        if not self.writing:
            if self._scope is not None:
                self._scope.cancel()
        elif first:
            self.stop.set(f"interrupted by {sig.name}")
            self.err.print(
                f"{sig.name}: stopping: {self.stop.landed} write(s) landed, no new write starts, "
                f"{self.stop.in_flight} in flight finish (within {self.stop.grace:g} s; signal "
                "again to abandon them)",
                markup=False,
            )
        else:
            self.stop.abandon()

    def report(self, outcomes: Sequence[Outcome]) -> int:
        """The one line of an interrupted run, on stderr; the exit status."""
        applied = sum(o.ok for o in outcomes)
        skipped = sum(not o.attempted for o in outcomes)
        failed = len(outcomes) - applied - skipped
        line = f"interrupted: {applied} applied, {skipped} not attempted"
        self.err.print(line + (f", {failed} failed" if failed else ""), markup=False)
        return self.exit_code

    def report_early(self) -> int:
        """An interrupt before any write: nothing was written."""
        self.err.print("interrupted: 0 applied, nothing written", markup=False)
        return self.exit_code


def registry_gone(outcomes: Sequence[Outcome]) -> str | None:
    """The summary of a sync whose registry stopped answering, if it did."""
    skipped = sum(not o.attempted for o in outcomes)
    if not skipped:
        return None
    applied = sum(o.ok for o in outcomes)
    failures = [o for o in outcomes if o.attempted and not o.ok]
    cause = f" (last: {failures[-1].error})" if failures else ""
    return (
        f"the registry stopped answering: {applied} write(s) landed, {len(failures)} failed, "
        f"{skipped} not attempted{cause}"
    )
