"""Stopping a training run cleanly when the scheduler asks (SIGTERM, SIGUSR1).

Cluster schedulers pre-empt a job with SIGTERM (Slurm's ``--signal`` and many requeue
scripts use SIGUSR1) and kill it a grace period later. :class:`StopRequest` turns those
signals into a flag: the loop finishes the iteration it is in, writes a checkpoint and
returns, so a resumed run loses no work. Under ``torchrun`` the flag is summed over the
processes with the loss of every iteration, so all of them stop after the same iteration
even when only some were signalled.

A second signal of the same kind is not caught: it ends the process as it would have
without us (for a user who does not want to wait).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType, TracebackType
from typing import Any

__all__ = [
    "PREEMPTED_EXIT_STATUS",
    "STOP_SIGNALS",
    "StopRequest",
    "ignore_stop_signals",
    "shut_down_workers",
]

log = logging.getLogger(__name__)

PREEMPTED_EXIT_STATUS = 75
"""`deeplab train`'s exit status after a stop signal and its checkpoint (EX_TEMPFAIL of
sysexits.h: a temporary failure, run again with ``--resume``)."""

STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name)
)


class StopRequest:
    """Catches :data:`STOP_SIGNALS` while active (a context manager) and remembers the first.

    Handlers can only be installed from the main thread; elsewhere (training started from a
    worker thread) the signals keep their previous behaviour and :attr:`signal` stays None.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self._signals = signals
        self._previous: dict[signal.Signals, Any] = {}
        self.signal: signal.Signals | None = None

    @property
    def pending(self) -> bool:
        """Whether this process has received a stop signal."""
        return self.signal is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        if self.signal is None:
            self.signal = sig
            return
        # A second signal: give it its old meaning (by default, the end of the process).
        previous = self._previous.get(sig, signal.SIG_DFL)
        signal.signal(sig, previous)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            os.kill(os.getpid(), signum)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is not threading.main_thread():
            log.info("not in the main thread: stop signals end training without a checkpoint")
            return self
        for sig in self._signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """``worker_init_fn`` of data-loader workers: a scheduler that signals every process of
    the job must not kill them before the main process has written its checkpoint. Their
    loader must then end them with :func:`shut_down_workers`."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def shut_down_workers(batches: Iterator[Any]) -> None:
    """Ask the workers of a data-loader iterator to exit, and wait for them.

    Left to itself an unfinished iterator is collected late, and at the interpreter's exit
    ``multiprocessing`` ends daemon processes with SIGTERM, which workers running
    :func:`ignore_stop_signals` ignore: the process would wait for them forever.
    """
    shutdown = getattr(batches, "_shutdown_workers", None)  # absent without workers
    if shutdown is not None:
        shutdown()
