"""The process pool that runs CRF work for ``deeplab evaluate`` and ``deeplab tune-crf``.

The dense CRF of the paper (section 4.2) runs on the CPU, one image at a time; ``workers``
processes run that many images at once. Each worker pins numba and torch to one thread, so
N workers use N cores without oversubscribing them, and may load what every task needs once
when it starts (``setup``: tune-crf's images and saved scores). With ``workers=0`` the work
runs in the calling process, the same function on the same inputs.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from multiprocessing.pool import AsyncResult, Pool
from types import TracebackType
from typing import Any, Generic, TypeVar

__all__ = ["WorkerPool", "one_thread"]

TaskT = TypeVar("TaskT")
ResultT = TypeVar("ResultT")

Work = Callable[[Any, Any], Any]
"""``work(state, task)``: one task's result, ``state`` being what ``setup`` returned."""


def one_thread() -> None:
    """Pin numba and torch to one thread in this process."""
    import numba
    import torch

    numba.set_num_threads(1)
    torch.set_num_threads(1)


# What a worker process holds: its work function, what its setup returned, or the error
# its setup raised.
_WORK: Work | None = None
_STATE: Any = None
_SETUP_ERROR: Exception | None = None


def _start_worker(work: Work, setup: Callable[..., Any] | None, setup_args: Sequence[Any]) -> None:
    global _WORK, _STATE, _SETUP_ERROR
    one_thread()
    _WORK = work
    try:
        _STATE = None if setup is None else setup(*setup_args)
    except Exception as exc:
        # Raising here would make the pool start the worker again, forever; the first task
        # raises it in the parent instead.
        _SETUP_ERROR = exc


def _run_task(task: Any) -> Any:
    if _SETUP_ERROR is not None:
        raise _SETUP_ERROR
    assert _WORK is not None, "worker used before its initializer ran"
    return _WORK(_STATE, task)


class WorkerPool(Generic[TaskT, ResultT]):
    """Runs ``work(state, task)`` in a spawn pool of ``workers`` one-thread processes, or in
    this process when ``workers`` is 0 (or less).

    ``work`` and ``setup`` must be module-level functions (they are sent to the workers by
    name). ``state`` is ``setup(*setup_args)``, called once per worker (once here when
    ``workers`` is 0), or None without ``setup``.

    Two ways to feed it: :meth:`map_unordered` for a known list of tasks, results as they
    finish; :meth:`submit` and :meth:`drain` for a stream, results in submission order with
    at most ``2 * workers`` tasks in flight so memory stays bounded.

    Use it as a context manager, or call :meth:`close`: on an error or an interrupt
    (KeyboardInterrupt) the workers are stopped without finishing their queue.
    """

    def __init__(
        self,
        workers: int,
        work: Callable[[Any, TaskT], ResultT],
        setup: Callable[..., Any] | None = None,
        setup_args: Sequence[Any] = (),
    ) -> None:
        self.workers = workers
        self._work = work
        self._state: Any = None
        self._pool: Pool | None = None
        self._pending: deque[AsyncResult[ResultT]] = deque()
        if workers > 0:
            # spawn, not fork: the parent's torch/numba thread pools do not survive a fork.
            context = multiprocessing.get_context("spawn")
            self._pool = context.Pool(workers, _start_worker, (work, setup, tuple(setup_args)))
        elif setup is not None:
            self._state = setup(*setup_args)

    def map_unordered(self, tasks: Iterable[TaskT]) -> Iterator[ResultT]:
        """The result of every task, in the order they finish (task order when inline)."""
        if self._pool is None:
            for task in tasks:
                yield self._work(self._state, task)
            return
        yield from self._pool.imap_unordered(_run_task, tasks, chunksize=1)

    def submit(self, task: TaskT) -> Iterator[ResultT]:
        """Queue one task; yields the results that are ready, in submission order."""
        if self._pool is None:
            yield self._work(self._state, task)
            return
        self._pending.append(self._pool.apply_async(_run_task, (task,)))
        while len(self._pending) >= 2 * self.workers or (
            self._pending and self._pending[0].ready()
        ):
            yield self._pending.popleft().get()

    def drain(self) -> Iterator[ResultT]:
        """The results of every task still queued by :meth:`submit`, in submission order."""
        while self._pending:
            yield self._pending.popleft().get()

    def close(self, *, terminate: bool = False) -> None:
        """Wait for the workers to exit; ``terminate``: stop them without finishing the
        queue (after an error)."""
        if self._pool is not None:
            if terminate:
                self._pool.terminate()
            else:
                self._pool.close()
            self._pool.join()
            self._pool = None
        self._pending.clear()

    def __enter__(self) -> WorkerPool[TaskT, ResultT]:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(terminate=error is not None)
