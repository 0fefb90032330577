"""Admission control for the demo's network and CRF jobs.

A :class:`JobQueue` admits at most ``capacity`` jobs (running or waiting for a worker),
and none that would wait out its time limit at the recent pace of jobs; the others are
refused at once with 503 and ``Retry-After``, before their body is read, so the
memory in use is bounded by the queue and not by the number of clients: a waiting job
holds its upload's bytes only, the decoding and everything after it happens in one of
``workers`` threads. The queue's methods run on the event loop; the work runs in daemon
worker threads (a job that outlives a shutdown cannot hold the process up).

A job whose caller stops waiting (client gone, time limit, shutdown) gives its place
back at once; its thread sees the cancel flag at its next check and drops the work, and
its worker slot is free when the thread is.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from deeplab.serve.service import ServiceError

__all__ = ["JobQueue", "default_queue_size"]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIME_LIMIT = 120.0


def default_queue_size(max_upload_bytes: int) -> int:
    """Jobs admitted at once on this machine: one per CPU core (2 to 16), fewer when the
    waiting uploads could not take a quarter of the available memory."""
    from deeplab.crf.dense import available_memory

    size = min(max(os.cpu_count() or 1, 2), 16)
    have = available_memory()
    if have is not None:
        size = min(size, max(1, have // 4 // max(max_upload_bytes, 1)))
    return int(size)


class Ticket:
    """An admitted job's place in the queue; :meth:`release` gives it back (once)."""

    def __init__(self, jobs: JobQueue) -> None:
        self._jobs = jobs
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._jobs._admitted -= 1


class _Running:
    """A job handed to a worker: its cancel flag and the future its caller awaits."""

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.cancel = threading.Event()
        self.future = future


class JobQueue:
    """At most ``capacity`` admitted jobs, ``workers`` of them running (module docstring).

    time_limit: seconds a request may take from admission to its answer (504 beyond).
    """

    def __init__(
        self, capacity: int, *, workers: int = 1, time_limit: float = DEFAULT_TIME_LIMIT
    ) -> None:
        if capacity < 1 or workers < 1:
            raise ValueError(f"capacity and workers must be >= 1, got {capacity}, {workers}")
        if not time_limit > 0:
            raise ValueError(f"time_limit must be > 0 seconds, got {time_limit}")
        self.capacity = capacity
        self.workers = workers
        self.time_limit = float(time_limit)
        self.closing = False
        self._admitted = 0
        self._busy = 0  # worker slots taken (a cancelled job keeps its slot until it stops)
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._running: set[_Running] = set()
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._seconds = 5.0  # running mean of a job's time, for Retry-After
        self.counts = {"served": 0, "refused": 0, "dropped": 0, "timed_out": 0, "failed": 0}

    # -- admission (event loop) ------------------------------------------------------------

    def admit(self) -> Ticket:
        """A place in the queue, or ServiceError 503 with Retry-After."""
        if self.closing:
            raise ServiceError(
                503, "the server is shutting down; try again in a moment", self._retry(5)
            )
        wait = self._seconds * (self._admitted / self.workers)
        # Also refused: a job that would only wait out its time limit (at the recent pace).
        hopeless = self._admitted >= self.workers and wait + self._seconds > self.time_limit
        if self._admitted >= self.capacity or hopeless:
            self.counts["refused"] += 1
            raise ServiceError(
                503,
                f"the server is busy: {self._admitted} images are being processed or waiting "
                f"(at most {self.capacity}); try again in about {math.ceil(wait)} s",
                self._retry(wait),
            )
        self._admitted += 1
        return Ticket(self)

    @staticmethod
    def _retry(seconds: float) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(seconds)))}

    def state(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "admitted": self._admitted,
            "running": len(self._running),
            "waiting": len(self._waiters),
            "workers": self.workers,
            "time_limit_s": self.time_limit,
            "closing": self.closing,
            **self.counts,
        }

    # -- running (event loop -> worker thread) -----------------------------------------------

    async def run(self, fn: Callable[[threading.Event], T]) -> T:
        """``fn(cancel)`` in a worker thread once one is free; its result or exception.
        Cancelling the caller sets ``cancel`` (see the module docstring)."""
        await self._acquire()
        loop = asyncio.get_running_loop()
        job = _Running(loop.create_future())
        self._running.add(job)
        self._ensure_threads()
        started = time.monotonic()
        self._work.put((fn, job, loop))
        try:
            return await job.future
        except asyncio.CancelledError:
            job.cancel.set()
            raise
        finally:
            self._running.discard(job)
            self._seconds = 0.8 * self._seconds + 0.2 * (time.monotonic() - started)

    async def _acquire(self) -> None:
        if self.closing:
            raise ServiceError(503, "the server is shutting down; try again in a moment")
        if self._busy < self.workers and not self._waiters:
            self._busy += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # _release hands its slot over: _busy stays as it is
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release()  # handed over just as the caller gave up
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._busy -= 1

    def _ensure_threads(self) -> None:
        while len(self._threads) < self.workers:
            thread = threading.Thread(
                target=self._worker, name=f"deeplab-serve-{len(self._threads)}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _worker(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            fn, job, loop = item
            try:
                outcome: tuple[Any, BaseException | None] = (fn(job.cancel), None)
            except BaseException as exc:
                outcome = (None, exc)
            try:
                loop.call_soon_threadsafe(self._settle, job, outcome)
            except RuntimeError:  # the loop is closed: the server has stopped
                return
            del fn, job, item, outcome

    def _settle(self, job: _Running, outcome: tuple[Any, BaseException | None]) -> None:
        self._release()
        if job.future.done():
            return
        result, exc = outcome
        if exc is None:
            job.future.set_result(result)
        else:
            job.future.set_exception(exc)

    # -- shutdown -----------------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Refuse new jobs, refuse the waiting ones (503), give the running ones ``grace``
        seconds, then drop them (their callers get 503 at once)."""
        self.closing = True
        stopping = ServiceError(503, "the server is shutting down; try again in a moment")
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(stopping)
        deadline = time.monotonic() + grace
        while self._running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for job in list(self._running):
            job.cancel.set()
            if not job.future.done():
                job.future.set_exception(
                    ServiceError(503, "the server is shutting down: this job was stopped")
                )
        if self._running:
            log.info("shutdown: stopped %d running job(s)", len(self._running))
        for _ in self._threads:
            self._work.put(None)
