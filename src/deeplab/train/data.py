"""The deterministic training stream and its micro-batches.

Training reads one endless stream: position ``p`` is sample ``perm_e[p mod n]`` of epoch
``e = p div n`` (``perm_e`` a permutation drawn from ``(seed, e)``), cropped and mirrored
with a generator seeded from ``(seed, e, index)`` as :class:`deeplab.data.TorchSegmentation`
does. Iteration ``t`` consumes positions ``t*B .. t*B + B - 1`` (B the global batch),
whatever the number of processes or micro-batches and wherever a run was resumed: the data
a run sees is a pure function of the seed. Where the samples come from is
:class:`deeplab.data.DataSpec`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from deeplab.data import SegmentationDataset, TrainTransform

__all__ = ["MicroBatchSampler", "TrainStream"]

log = logging.getLogger(__name__)


class TrainStream(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Position ``p`` of the endless, seeded training stream -> (image (3, c, c) float32,
    label (c', c') int64), ``c' = ceil((c - offset) / 8)`` (module docstring)."""

    def __init__(self, dataset: SegmentationDataset, transform: TrainTransform, seed: int) -> None:
        if len(dataset) == 0:
            raise ValueError("the training dataset is empty")
        self.dataset = dataset
        self.transform = transform
        self.seed = int(seed)
        self._perms: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        # Positions are unbounded; samplers index it directly. A length keeps DataLoader happy.
        return 2**62

    def permutation(self, epoch: int) -> np.ndarray:
        """The sample order of ``epoch`` (cached: a worker walks at most two epochs at once)."""
        perm = self._perms.get(epoch)
        if perm is None:
            perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset))
            self._perms[epoch] = perm
            while len(self._perms) > 2:
                self._perms.popitem(last=False)
        return perm

    def index_at(self, position: int) -> tuple[int, int]:
        """(epoch, dataset index) of stream ``position``."""
        epoch, k = divmod(int(position), len(self.dataset))
        return epoch, int(self.permutation(epoch)[k])

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = self.index_at(position)
        # The same per-item generator as deeplab.data.TorchSegmentation: (seed, epoch, index).
        rng = np.random.default_rng([self.seed, epoch, index])
        image, label = self.transform(self.dataset[index], rng)
        return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)), torch.from_numpy(
            np.ascontiguousarray(label, dtype=np.int64)
        )


class MicroBatchSampler(Sampler[list[int]]):
    """Stream positions of this process's micro-batches for iterations ``start .. stop - 1``.

    Iteration ``t``'s global batch ``t*B .. t*B + B - 1`` is cut into ``world_size``
    contiguous slices, one per process, each cut into ``accumulate`` micro-batches: one
    process with ``accumulate = k*W`` sees the same micro-batches as W processes with k.
    """

    def __init__(
        self, start: int, stop: int, batch: int, accumulate: int, rank: int = 0, world_size: int = 1
    ) -> None:
        if batch % (world_size * accumulate):
            raise ValueError(
                f"batch {batch} does not split into {world_size} x {accumulate} micro-batches"
            )
        if not 0 <= start <= stop:
            raise ValueError(f"need 0 <= start <= stop, got {start}, {stop}")
        self.start, self.stop = start, stop
        self.batch, self.accumulate = batch, accumulate
        self.rank, self.world_size = rank, world_size
        self.micro = batch // (world_size * accumulate)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.accumulate

    def __iter__(self) -> Iterator[list[int]]:
        share = self.batch // self.world_size
        for t in range(self.start, self.stop):
            first = t * self.batch + self.rank * share
            for j in range(self.accumulate):
                lo = first + j * self.micro
                yield list(range(lo, lo + self.micro))
