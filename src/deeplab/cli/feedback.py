"""What the command line shows while it works: notices for slow steps, progress bars.

Not a subcommand. Three rules the commands follow through these helpers:

- a step that may be silent for seconds says what it is doing (:func:`notice_after`);
- the CRF's numba kernels are compiled (or loaded from numba's cache) by
  :func:`prepare_crf` before the real work, with a line saying so when they are compiled:
  that happens once after installing (about 20-30 s), later runs load them in under a
  second;
- a progress bar is cleared, not left on the screen, when the command fails
  (:func:`progress_bar` and :func:`close_bar`), so an error is never printed around one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["close_bar", "crf_kernels_cached", "notice_after", "prepare_crf", "progress_bar"]

log = logging.getLogger(__name__)

COMPILE_MESSAGE = (
    "compiling the CRF kernels with numba (once after installing, about 20-30 s; "
    "later runs load them from numba's cache)..."
)
LOAD_MESSAGE = (
    "loading the CRF kernels (numba compiles them once after installing, then loads them "
    "from its cache)..."
)


def say(message: str) -> None:
    """One status line on stderr (stdout stays for results)."""
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def notice_after(seconds: float, message: str) -> Iterator[None]:
    """Print ``message`` if the block is still running after ``seconds``."""
    timer = threading.Timer(seconds, say, args=(message,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def crf_kernels_cached() -> bool | None:
    """Whether numba's cache holds the CRF kernels: True, False, or None when it cannot
    tell (numba's cache layout is not public API, so any surprise means "unknown")."""
    try:
        from numba.core.registry import CPUDispatcher

        import deeplab.crf.dense  # noqa: F401 (loads the kernel modules)

        found = {
            value
            for name, module in list(sys.modules.items())
            if name.startswith("deeplab.crf") and module is not None
            for value in vars(module).values()
            if isinstance(value, CPUDispatcher)
        }
        # numba's dispatcher cache is private API (undeclared in its types); any surprise is
        # caught below.
        indexes = [d._cache._cache_file._index_path for d in found]  # type: ignore[attr-defined]
        if not indexes:
            return None
        return any(os.path.exists(p) for p in indexes)
    except Exception:
        return None


def prepare_crf(params: Any, *, quiet: bool = False) -> None:
    """Run the CRF once on a 16x16 input with ``params`` (a :class:`CRFParams`; None: no
    CRF, nothing to do) so its kernels are compiled or loaded before the real work, and
    before worker processes start (they then load the kernels from the cache instead of
    each compiling them). Prints what it does when that takes a while."""
    if params is None:
        return
    import numpy as np

    from deeplab.crf import dense_crf_from_logits

    image = np.zeros((16, 16, 3), np.uint8)
    image[:, 8:] = 255
    logits = np.zeros((2, 16, 16), np.float32)
    logits[0, :, :8] = 1.0

    def warm_up() -> None:
        try:
            dense_crf_from_logits(image, logits, params.replace(iterations=2))
        except (MemoryError, ValueError) as exc:
            # Best effort: the real work meets the same limit and reports it per image.
            log.debug("CRF warm-up skipped: %s", exc)

    cached = crf_kernels_cached()
    if cached is False and not quiet:
        say(COMPILE_MESSAGE)
        warm_up()
        say("CRF kernels compiled and cached")
        return
    with contextlib.ExitStack() as stack:
        if not quiet:
            message = LOAD_MESSAGE if cached else COMPILE_MESSAGE
            stack.enter_context(notice_after(1.5, message))
        warm_up()


def progress_bar(*, disable: bool = False, **options: Any) -> Any:
    """A tqdm bar on stderr (``options`` go to tqdm), or a no-op one when ``disable``."""
    from tqdm import tqdm

    return tqdm(disable=disable, dynamic_ncols=True, file=sys.stderr, **options)


def close_bar(bar: Any, failed: bool) -> None:
    """Close a bar; when the command failed, erase it so the error stands alone."""
    if bar is None:
        return
    if failed:
        bar.leave = False
    bar.close()
