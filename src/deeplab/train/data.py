"""Where training and evaluation data come from, and the deterministic training stream.

:class:`DataSpec` names a data source (synthetic scenes, PASCAL VOC (+ SBD), or a folder) in
plain JSON-able fields, so a run's ``config.json`` records it; :func:`build_dataset` opens
it.

Training reads one endless stream: position ``p`` is sample ``perm_e[p mod n]`` of epoch
``e = p div n`` (``perm_e`` a permutation drawn from ``(seed, e)``), cropped and mirrored
with a generator seeded from ``(seed, e, index)`` as :class:`deeplab.data.TorchSegmentation`
does. Iteration ``t`` consumes positions ``t*B .. t*B + B - 1`` (B the global batch),
whatever the number of processes or micro-batches and wherever a run was resumed: the data
a run sees is a pure function of the seed.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from deeplab.data import (
    AUG_LABEL_DIR,
    FolderDataset,
    Sample,
    SegmentationDataset,
    SyntheticScenes,
    TrainTransform,
    VOCSegmentation,
    build_segmentation_class_aug,
    write_aug_lists,
)
from deeplab.data.camvid import CamVid
from deeplab.data.voc import LABEL_DIR, find_voc_root

__all__ = ["DATA_KINDS", "DataSpec", "MicroBatchSampler", "TrainStream", "build_dataset"]

log = logging.getLogger(__name__)

DATA_KINDS = ("synthetic", "voc", "folder", "camvid")


@dataclass(frozen=True)
class DataSpec:
    """A data source.

    Attributes:
        kind: "synthetic" (:class:`deeplab.data.SyntheticScenes`, the embedded default),
            "voc" (VOC 2012 layout, optionally completed with SBD) or "folder".
        voc_root / sbd_root / split: for "voc". Splits ending in ``_aug`` read labels from
            ``SegmentationClassAug``; with ``sbd_root`` the aug lists and labels are built
            first if missing (``deeplab.data.sbd``).
        images / masks / classes: for "folder".
        camvid_root: for "camvid" (:class:`deeplab.data.CamVid`); its ``split`` names a
            list file, ``train_aug`` (the training default, a VOC split) meaning ``train``.
        synthetic_count / synthetic_size / synthetic_seed: for "synthetic"; scenes of
            another seed are a disjoint, held-out family.
        limit: use only the first ``limit`` samples (quick runs), None for all.
    """

    kind: str = "synthetic"
    voc_root: str | None = None
    sbd_root: str | None = None
    split: str = "train_aug"
    images: str | None = None
    masks: str | None = None
    classes: str | None = None
    camvid_root: str | None = None
    synthetic_count: int = 2000
    synthetic_size: tuple[int, int] = (200, 200)
    synthetic_seed: int = 0
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in DATA_KINDS:
            raise ValueError(f"data kind must be one of {DATA_KINDS}, got {self.kind!r}")
        object.__setattr__(self, "synthetic_size", tuple(int(s) for s in self.synthetic_size))
        if len(self.synthetic_size) != 2:
            raise ValueError(f"synthetic_size must be (H, W), got {self.synthetic_size}")
        if self.kind == "voc" and not self.voc_root:
            raise ValueError("--data voc needs --voc-root")
        if self.kind == "camvid" and not self.camvid_root:
            raise ValueError("--data camvid needs --camvid-root")
        if self.kind == "folder" and not (self.images and self.masks and self.classes):
            raise ValueError("--data folder needs --images, --masks and --classes")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["synthetic_size"] = list(self.synthetic_size)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown data field(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(data))


class _Subset(SegmentationDataset):
    """The first ``n`` samples of a dataset."""

    def __init__(self, base: SegmentationDataset, n: int) -> None:
        self.base = base
        self.names = list(base.names[:n])
        self.class_names = base.class_names

    def _load(self, index: int) -> Sample:
        return self.base[index]


def _voc(spec: DataSpec) -> SegmentationDataset:
    root = find_voc_root(spec.voc_root or "")
    aug = spec.split.endswith("_aug")
    if aug and spec.sbd_root:
        if not (root / "ImageSets" / "SegmentationAug" / f"{spec.split}.txt").is_file():
            log.info("writing the train_aug/trainval_aug lists under %s", root)
            write_aug_lists(root, spec.sbd_root)
        if not (root / AUG_LABEL_DIR).is_dir():
            log.info("building %s from SBD (%s); this takes a while once", AUG_LABEL_DIR, root)
            build_segmentation_class_aug(root, spec.sbd_root)
    return VOCSegmentation(root, spec.split, label_dir=AUG_LABEL_DIR if aug else LABEL_DIR)


def build_dataset(spec: DataSpec) -> SegmentationDataset:
    """Open the dataset ``spec`` names."""
    if spec.kind == "synthetic":
        ds: SegmentationDataset = SyntheticScenes(
            spec.synthetic_count, size=spec.synthetic_size, seed=spec.synthetic_seed
        )
    elif spec.kind == "voc":
        ds = _voc(spec)
    elif spec.kind == "camvid":
        ds = CamVid(spec.camvid_root or "", "train" if spec.split == "train_aug" else spec.split)
    else:
        ds = FolderDataset(spec.images or "", spec.masks or "", Path(spec.classes or ""))
    if spec.limit is not None and spec.limit < len(ds):
        ds = _Subset(ds, spec.limit)
    log.info("data: %r from %s", ds, spec.kind)
    return ds


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
