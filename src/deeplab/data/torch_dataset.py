"""A ``torch.utils.data.Dataset`` over any of our datasets plus a transform.

Each item's random numbers come from ``numpy.random.default_rng([seed, epoch, index])``:
results do not depend on the number of DataLoader workers nor on which worker loads the
item, and change from epoch to epoch through :meth:`TorchSegmentation.set_epoch`. (With the
default non-persistent workers the dataset is sent to the workers afresh each epoch, so
``set_epoch`` before iterating reaches them; with ``persistent_workers=True`` it would not.)
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from deeplab.data.sample import Sample, SegmentationDataset

__all__ = ["SampleTransform", "TorchSegmentation"]

logger = logging.getLogger(__name__)


class SampleTransform(Protocol):
    """What :class:`TorchSegmentation` calls: ``TrainTransform`` and ``EvalTransform`` fit."""

    def __call__(
        self, sample: Sample, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...


class TorchSegmentation(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Items are (image (3, H, W) float32, label (h, w) int64) tensors.

    Args:
        dataset: any :class:`SegmentationDataset` (VOC, SBD, folder, synthetic).
        transform: e.g. ``TrainTransform()`` or ``EvalTransform()``.
        seed: base seed for the per-item generators.
    """

    def __init__(
        self, dataset: SegmentationDataset, transform: SampleTransform, seed: int = 0
    ) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.dataset = dataset
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose random crops/mirrors items get."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    @property
    def names(self) -> list[str]:
        return self.dataset.names

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.dataset.class_names

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.dataset[index]
        i = index + len(self) if index < 0 else index
        rng = np.random.default_rng([self.seed, self.epoch, i])
        image, label = self.transform(sample, rng)
        return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)), torch.from_numpy(
            np.ascontiguousarray(label, dtype=np.int64)
        )
