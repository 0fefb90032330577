"""Thread counts that follow the cores actually free.

A parallel region ends at a barrier: when another process holds one of two cores, the
thread sharing that core reaches each barrier a scheduler time slice late, and the CRF's
hundred-odd regions per call ran 3.4x slower with two threads than with one. So the
numba kernels run on as many threads as there are cores nobody else is using, re-decided
between mean-field updates (at most every 10 ms), never more than the thread count the
caller set (``numba.set_num_threads``, ``deeplab --threads``), which stays the cap.

The signal is the kernel's instantaneous count of runnable tasks (``/proc/loadavg``,
fourth field) minus this process's own running threads (``/proc/self/task/*/stat``):
tasks of other processes that are running or waiting for a core right now. Where that is
not available (not Linux) the cap is used as it is. ``DEEPLAB_ADAPTIVE_THREADS=0`` turns
adaptation off.

Results never depend on the count chosen: work is split into :func:`thread_shares`
buffers fixed by the cap, and fewer threads only run more shares each.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numba

log = logging.getLogger(__name__)

__all__ = [
    "adapted_threads",
    "adaptive_enabled",
    "free_cores",
    "is_running",
    "rebalance",
    "runnable_elsewhere",
    "thread_shares",
]

_LOADAVG = "/proc/loadavg"
RECHECK_SECONDS = 0.01
"""A decision is re-made after this long (a time slice of the scheduler is a few ms)..."""
RECHECK_MAX_SECONDS = 0.08
"""... and, while looks keep agreeing, after twice as long each time up to this: a look
costs 0.1-0.4 ms, a few percent of the work at every 10 ms."""
_TASKS = "/proc/self/task"
_local = threading.local()


def adaptive_enabled() -> bool:
    """False where ``DEEPLAB_ADAPTIVE_THREADS`` turns adaptation off."""
    return os.environ.get("DEEPLAB_ADAPTIVE_THREADS", "1").strip().lower() not in {
        "0", "false", "no", "off",
    }  # fmt: skip


def _own_running() -> int:
    """Threads of this process in state R (running or runnable) right now."""
    running = 0
    try:
        tasks = os.listdir(_TASKS)
    except OSError:
        return 1
    for tid in tasks:
        try:
            with open(f"{_TASKS}/{tid}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # the thread ended while we looked
            continue
        running += is_running(stat)
    return max(running, 1)  # the caller itself runs


def is_running(stat: bytes) -> bool:
    """Whether a ``/proc/.../stat`` line is of a task in state R (running or runnable)."""
    # The state follows the command name, which may contain spaces and parentheses.
    end = stat.rfind(b")")
    return end >= 0 and stat[end + 2 : end + 3] == b"R"


def runnable_elsewhere() -> int | None:
    """Tasks of other processes running or waiting for a core now; None where unknown."""
    # Our own threads are counted before and after the system-wide figure and the larger
    # count taken: a worker that stops spinning in between would otherwise be counted as
    # another process's task, and a quiet machine would look busy.
    before = _own_running()
    try:
        with open(_LOADAVG, "rb") as f:
            fields = f.read().split()
        total = int(fields[3].split(b"/")[0])
    except (OSError, IndexError, ValueError):
        return None
    return max(0, total - max(before, _own_running()))


def free_cores(samples: int = 2) -> int | None:
    """Cores not used by other processes: the most seen in ``samples`` looks in a row (a
    task that ran for a moment does not count); None where unknown."""
    cpus = os.cpu_count() or 1
    seen = []
    for _ in range(max(1, samples)):
        others = runnable_elsewhere()
        if others is None:
            return None
        seen.append(others)
        if not others:
            break
    return max(1, cpus - min(seen))


def _cap() -> int:
    cap = getattr(_local, "cap", None)
    return int(cap) if cap is not None else max(1, int(numba.get_num_threads()))


def thread_shares() -> int:
    """How many thread-private buffers a parallel scatter uses: the cap, so results are
    the same whatever number of threads :func:`rebalance` picks."""
    return _cap()


def _recent_free_cores() -> int | None:
    """:func:`free_cores`, looked at again only after :data:`RECHECK_SECONDS` (each look
    reads a few /proc files), doubling up to :data:`RECHECK_MAX_SECONDS` while the looks
    agree, and changed only when two looks in a row agree on the new figure: a task caught
    for an instant (a thread on its way to sleep is still counted as runnable) must not
    cost a whole interval on one thread, nor a moment of quiet between another process's
    bursts put a thread on a core about to be taken."""
    now = time.monotonic()
    # (time of the look, free cores, candidate, interval to the next look)
    state = getattr(_local, "state", None)
    if state is not None and now - state[0] < state[3]:
        return state[1]
    # Once a decision stands, a change needs two looks in a row to agree already: one
    # sample per look is enough (each costs about 0.15 ms).
    free = free_cores(2 if state is None else 1)
    if state is None or free == state[1]:
        interval = RECHECK_SECONDS if state is None else min(2 * state[3], RECHECK_MAX_SECONDS)
        current, candidate = free, None
    elif free == state[2]:
        current, candidate, interval = free, None, RECHECK_SECONDS
    else:
        current, candidate, interval = state[1], free, RECHECK_SECONDS
    _local.state = (now, current, candidate, interval)
    return current


def rebalance() -> int:
    """Inside :func:`adapted_threads`: set numba's thread count for the next kernels to
    the free cores (at most the cap, at least 1); returns the count."""
    cap = getattr(_local, "cap", None)
    if cap is None or cap <= 1 or not adaptive_enabled():
        return max(1, int(numba.get_num_threads()))
    free = _recent_free_cores()
    count = cap if free is None else max(1, min(cap, free))
    if count != numba.get_num_threads():
        log.debug("CRF threads: %d of %d (free cores: %s)", count, cap, free)
        numba.set_num_threads(count)
    return count


@contextmanager
def adapted_threads() -> Iterator[int]:
    """Run the block's numba kernels on the free cores (see the module docstring); the
    caller's thread count is restored afterwards. Nested blocks share the outer cap."""
    if getattr(_local, "cap", None) is not None:
        yield rebalance()
        return
    cap = max(1, int(numba.get_num_threads()))
    _local.cap = cap
    try:
        yield rebalance()
    finally:
        _local.cap = None
        if numba.get_num_threads() != cap:
            numba.set_num_threads(cap)
