"""Freed memory kept by the C allocator for the next call, where it is glibc's.

A CRF call works in a few hundred MB of fresh arrays (the unary, the lattice, the plan's
corners and weights, the lattice values) and frees them on return. glibc hands the freed
top of its heap back to the system, so the next call's arrays start as untouched pages,
and faulting them in cost 15 % of a 600x400 call on the virtual machines this was
measured on (about 3,700 page faults, 30 ms of system time per call; 2 after). Raising
glibc's ``M_TOP_PAD`` makes it keep that much freed memory for the next request
instead: the process then holds up to :data:`MAX_PAD` (1 GiB) more resident memory between
calls, in return for calls that do not fault.

The pad only grows, to the working set of the largest call seen (at most
:data:`MAX_PAD`); ``DEEPLAB_KEEP_HEAP=0`` turns it off. Elsewhere than glibc nothing
changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading

log = logging.getLogger(__name__)

__all__ = ["MAX_PAD", "enabled", "keep_free", "pad"]

MAX_PAD = 1 << 30
_M_TOP_PAD = -2  # mallopt's parameter number (malloc.h)
_lock = threading.Lock()


class _State:
    pad = 0
    libc: ctypes.CDLL | None = None
    looked = False


def enabled() -> bool:
    """False where ``DEEPLAB_KEEP_HEAP`` turns keeping freed memory off."""
    return os.environ.get("DEEPLAB_KEEP_HEAP", "1").strip().lower() not in {
        "0", "false", "no", "off",
    }  # fmt: skip


def _glibc() -> ctypes.CDLL | None:
    if not _State.looked:
        _State.looked = True
        name = ctypes.util.find_library("c")
        try:
            lib = ctypes.CDLL(name) if name else None
        except OSError:
            lib = None
        # gnu_get_libc_version exists in glibc only: musl's mallopt does nothing.
        if lib is not None and hasattr(lib, "gnu_get_libc_version"):
            lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            lib.mallopt.restype = ctypes.c_int
            _State.libc = lib
    return _State.libc


def pad() -> int:
    """The pad this module has set, in bytes (0: none)."""
    return _State.pad


def keep_free(nbytes: int) -> int:
    """Let the allocator keep up to ``nbytes`` (at most :data:`MAX_PAD`) of freed memory
    for the next call; returns the pad in force (0 where nothing was set)."""
    want = min(max(int(nbytes), 0), MAX_PAD)
    if want <= pad() or not enabled():
        return pad()
    with _lock:
        libc = _glibc()
        if libc is not None and want > pad() and libc.mallopt(_M_TOP_PAD, want) == 1:
            log.debug("heap: keeping up to %d MiB of freed memory", want >> 20)
            _State.pad = want
    return pad()
