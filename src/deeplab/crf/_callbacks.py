"""Per-iteration callbacks of the entry points, fed in the caller's layout."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from deeplab.crf.validation import ArrayOrTensor


def reshaped(
    callback: Callable[[int, ArrayOrTensor], None] | None, shape: Sequence[int]
) -> Callable[[int, ArrayOrTensor], None] | None:
    """``callback(it, q)`` given a copy of q reshaped to ``shape`` (the backends overwrite
    their marginals in place on the next update); None stays None."""
    if callback is None:
        return None
    target = tuple(shape)

    def wrapped(it: int, q: ArrayOrTensor) -> None:
        out = q.reshape(target)
        callback(it, out.copy() if isinstance(out, np.ndarray) else out.clone())

    return wrapped
