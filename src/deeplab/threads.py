"""Torch's CPU thread count, following the cores actually free.

The same reasoning as :mod:`deeplab.crf.threads` for the CRF: each of torch's parallel
operations ends at a barrier, so with a core taken by another process a second thread
made a training iteration 6x slower than one thread. :func:`rebalance_torch_threads`,
called before each network pass (prediction, a training iteration), sets torch's
intra-op threads to the free cores, never above the cap: the count torch was last given by
anyone else (``torch.set_num_threads``, or :func:`set_torch_thread_cap` for ``deeplab
--threads``), all cores by default.
``DEEPLAB_ADAPTIVE_THREADS=0`` turns adaptation off.
"""

from __future__ import annotations

import logging
import threading

import torch

from deeplab.crf.threads import adaptive_enabled, free_cores

log = logging.getLogger(__name__)

__all__ = ["rebalance_torch_threads", "set_torch_thread_cap"]

_lock = threading.Lock()
_cap: int | None = None
_ours: int | None = None  # the count this module last set


def set_torch_thread_cap(threads: int) -> None:
    """The most intra-op threads torch gets (and gets at once)."""
    global _cap, _ours
    with _lock:
        _cap = _ours = max(1, int(threads))
        torch.set_num_threads(_cap)


def rebalance_torch_threads() -> int:
    """Set torch's intra-op threads to the free cores (at most the cap); returns the count.

    A count set by someone else since the last call (``torch.set_num_threads``) becomes
    the new cap, so callers keep control."""
    global _cap, _ours
    with _lock:
        current = torch.get_num_threads()
        if _cap is None or current != _ours:
            _cap = max(1, current)
        cap = _cap
        if cap <= 1 or not adaptive_enabled():
            count = cap
        else:
            free = free_cores()
            count = cap if free is None else max(1, min(cap, free))
        if count != current:
            log.debug("torch threads: %d of %d", count, cap)
            torch.set_num_threads(count)
        _ours = count
    return count
