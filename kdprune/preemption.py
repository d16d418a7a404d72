"""SIGTERM ends a run at the end of the epoch it is in, once that epoch's state is saved.

A batch scheduler sends SIGTERM before a time limit or to preempt a job, and SIGKILL a grace
period later (SLURM's KillWait, torchrun's 30 s). The first SIGTERM is noted (`requested`); the
training engine checks it after saving each epoch's state and then stops the run with
`Preempted` (every rank of a run over several processes at the same epoch), so the same command
resumes at the next epoch. A second SIGTERM stops at once, as does SIGKILL: the run then resumes
from the epoch before. Nothing half-written is left either way (every file is written atomically).
The note is process-wide, as signals are.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from kdprune.errors import Preempted

_REQUESTED = threading.Event()  # set by the SIGTERM handler: the one process-wide note


def requested() -> bool:
    """True once SIGTERM arrived: the run stops after saving the epoch it is in."""
    return _REQUESTED.is_set()


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Handle SIGTERM in the block: the first asks the run to stop after its epoch, a second
    raises `Preempted` at once. The previous handler is put back after (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: object) -> None:
        if _REQUESTED.is_set():
            raise Preempted(signal.Signals(signum).name)
        _REQUESTED.set()

    previous = signal.signal(signal.SIGTERM, handle)
    _REQUESTED.clear()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _REQUESTED.clear()
