"""SIGTERM is the cluster's Ctrl-C.

Slurm sends SIGTERM at a job's time limit, on preemption and on ``scancel``, then SIGKILL after
``KillWait``. Python's default for SIGTERM is to die at once, which would leave the trial in flight
``running``, the run record open and helper workers orphaned. Inside :func:`interruptible` SIGTERM
and SIGINT both raise :class:`Interrupted`, a ``KeyboardInterrupt``, so one path gives work back
for both: the runner releases the trial in flight, closes the run record and refreshes the Parquet
mirror; the CLI stops its helper workers.

Only the first signal interrupts. Later ones arrive while that clean-up runs (a terminal's Ctrl-C
reaches every process of the group, and the CLI then also sends SIGTERM to its helpers) and must
not cut it short, so once one has fired the process ignores the rest inside these blocks; the
scheduler's SIGKILL still ends it after ``KillWait``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_fired = threading.Event()  # set by the first signal: the process is on its way out


class Interrupted(KeyboardInterrupt):
    """The process received SIGTERM (a time limit, preemption, ``scancel``) or SIGINT (Ctrl-C)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal number (143 for SIGTERM, 130 for Ctrl-C), as a shell reports a signal death."""
        return 128 + self.signum


@contextmanager
def interruptible() -> Iterator[None]:
    """Within this block SIGTERM and SIGINT raise :class:`Interrupted`, once per process.

    Does nothing outside the main thread, where Python cannot install signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, _frame) -> None:
        if not _fired.is_set():
            _fired.set()
            raise Interrupted(signum)

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """The exit status for an interruption: 128 + its signal (a plain KeyboardInterrupt is SIGINT)."""
    return interrupt.exit_code if isinstance(interrupt, Interrupted) else 128 + signal.SIGINT


def describe(interrupt: KeyboardInterrupt) -> str:
    """How the interruption arrived, in words for the one line the CLI prints."""
    if isinstance(interrupt, Interrupted) and interrupt.signum == signal.SIGTERM:
        return "terminated (SIGTERM: a time limit, preemption or cancellation)"
    return "interrupted (Ctrl-C)"
