"""The record every dataset returns, and the sequence protocol they share.

A dataset here is a plain sequence of :class:`Sample`: ``len(ds)``, ``ds[i]``, ``ds.names``
(one name per index) and ``ds.class_names``. Images stay uint8 RGB and labels uint8 class
indices with 255 = void until a transform (``deeplab.data.transforms``) turns them into the
network's input convention.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from deeplab.conventions import IGNORE_INDEX

__all__ = ["Sample", "SegmentationDataset", "check_same_size"]


@dataclass(frozen=True, eq=False)
class Sample:
    """One image and its label map.

    Attributes:
        name: the image's identifier (file stem, e.g. ``2007_000032``).
        image: (H, W, 3) uint8, RGB.
        label: (H, W) uint8 class indices, 255 (``IGNORE_INDEX``) = void / not scored.
    """

    name: str
    image: np.ndarray
    label: np.ndarray

    def __post_init__(self) -> None:
        img, lab = self.image, self.label
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(
                f"sample {self.name!r}: image must be (H, W, 3) uint8, "
                f"got shape {img.shape} dtype {img.dtype}"
            )
        if lab.dtype != np.uint8 or lab.ndim != 2:
            raise ValueError(
                f"sample {self.name!r}: label must be (H, W) uint8, "
                f"got shape {lab.shape} dtype {lab.dtype}"
            )
        if img.shape[:2] != lab.shape:
            raise ValueError(
                f"sample {self.name!r}: image is {img.shape[0]}x{img.shape[1]} (HxW) but "
                f"label is {lab.shape[0]}x{lab.shape[1]}"
            )

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return (int(self.label.shape[0]), int(self.label.shape[1]))

    def present_classes(self) -> np.ndarray:
        """Sorted class indices present in the label, void excluded."""
        values = np.unique(self.label)
        return values[values != IGNORE_INDEX]


def check_same_size(
    image: np.ndarray,
    label: np.ndarray,
    image_path: str | os.PathLike[str],
    label_path: str | os.PathLike[str],
) -> None:
    """Refuse a label file read for an image of another size: (H, W, 3) image, (H, W) label.

    The datasets that read both from files call it, so the message names the two files
    (:class:`Sample` itself knows only the sample's name).
    """
    if image.shape[:2] != label.shape:
        raise ValueError(
            f"{label_path} is {label.shape[0]}x{label.shape[1]} but its image "
            f"{image_path} is {image.shape[0]}x{image.shape[1]} (HxW)"
        )


class SegmentationDataset(abc.ABC):
    """Base class: subclasses set ``names`` and ``class_names`` and implement ``_load(i)``.

    Gives negative indexing, bounds checks (so ``for s in ds`` stops) and iteration.
    """

    names: list[str]
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> Sample:
        if not isinstance(index, int | np.integer):
            raise TypeError(f"dataset index must be an int, got {type(index).__name__}")
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} samples")
        return self._load(i)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self._load(i)

    def index_of(self, name: str) -> int:
        """Position of the sample called ``name`` (ValueError if absent)."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(f"no sample named {name!r} in this dataset") from None

    @abc.abstractmethod
    def _load(self, index: int) -> Sample:
        """Read sample ``index`` (already bounds-checked, non-negative)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} samples, {self.num_classes} classes)"
