"""What the score accumulators share: integer pixel counts that add.

The paper's mean IoU (section 5) comes from one confusion matrix accumulated over the whole
split, so an accumulator filled on part of the split (a worker process, a shard, a resumed
run) must add to another exactly. :class:`~deeplab.metrics.ConfusionMatrix` ((K, K)) and
:class:`~deeplab.metrics.TrimapEvaluator` ((W, K, K), one matrix per band width) keep their
counts in different arrays; this base class does the adding once.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

__all__ = ["Counts", "check_classes"]

_C = TypeVar("_C", bound="Counts")


def check_classes(num_classes: int, class_names: Sequence[str] | None) -> None:
    """Refuse fewer than one class, or a list of names of another length."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")


class Counts:
    """Int64 counts merged by ``+`` and ``+=``; subclasses say where the counts are and
    which accumulators they may be merged with."""

    def _counts(self) -> np.ndarray:
        """The int64 count array, updated in place."""
        raise NotImplementedError

    def _check_compatible(self, other: object) -> None:
        """TypeError for another kind of object, ValueError for other classes or bands."""
        raise NotImplementedError

    def reset(self) -> None:
        self._counts()[...] = 0

    def __iadd__(self: _C, other: _C) -> _C:
        self._check_compatible(other)
        self._counts()[...] += other._counts()
        return self

    def __add__(self: _C, other: _C) -> _C:
        self._check_compatible(other)
        out = copy.deepcopy(self)
        out += other
        return out
