"""Where training and evaluation data come from: :class:`DataSpec` and :func:`build_dataset`.

A :class:`DataSpec` names a data source (synthetic scenes, PASCAL VOC 2012 with the SBD
``train_aug`` labels of paper section 5, CamVid, or a folder of images and masks) in plain
JSON-able fields, so a run's ``config.json`` records it; :func:`build_dataset` opens it.

Opening a dataset only reads. The ``train_aug`` files (``SegmentationClassAug/`` and
``ImageSets/SegmentationAug/``) are written once, explicitly, by ``deeplab prepare-voc``
(:func:`deeplab.data.sbd.prepare_train_aug`); when they are missing, opening a ``*_aug``
split says which folder is missing and the command that writes it.
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deeplab.data.camvid import CamVid
from deeplab.data.folder import FolderDataset
from deeplab.data.sample import Sample, SegmentationDataset
from deeplab.data.synthetic import SyntheticScenes
from deeplab.data.voc import AUG_LABEL_DIR, AUG_LIST_DIR, LIST_DIRS, VOCSegmentation, find_voc_root

__all__ = ["DATA_KINDS", "DataSpec", "build_dataset", "prepare_voc_command"]

log = logging.getLogger(__name__)

DATA_KINDS = ("synthetic", "voc", "folder", "camvid")


@dataclass(frozen=True)
class DataSpec:
    """A data source.

    Attributes:
        kind: "synthetic" (:class:`deeplab.data.SyntheticScenes`, the embedded default),
            "voc" (VOC 2012 layout, with SBD's extra labels for the ``*_aug`` splits),
            "camvid" or "folder".
        voc_root / sbd_root / aug_root / split: for "voc". Splits ending in ``_aug`` read
            their list from ``ImageSets/SegmentationAug`` and their labels from
            ``SegmentationClassAug`` under ``aug_root`` (default: the VOC folder), both
            written by ``deeplab prepare-voc``; ``sbd_root`` is the SBD folder they come from,
            named in the message when they are missing.
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
    aug_root: str | None = None

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


def prepare_voc_command(
    voc_root: str | Path, sbd_root: str | Path | None = None, out: str | Path | None = None
) -> str:
    """The ``deeplab prepare-voc`` command line that writes the ``train_aug`` files."""
    parts = ["deeplab", "prepare-voc", "--voc", str(voc_root)]
    parts += ["--sbd", str(sbd_root) if sbd_root else "SBD_ROOT"]
    if out is not None:
        parts += ["--out", str(out)]
    return shlex.join(parts)


def _voc(spec: DataSpec) -> SegmentationDataset:
    root = find_voc_root(spec.voc_root or "")
    if not spec.split.endswith("_aug"):
        return VOCSegmentation(root, spec.split)
    aug = Path(spec.aug_root) if spec.aug_root else root
    labels = aug / AUG_LABEL_DIR
    # Some copies keep train_aug.txt beside VOC's own lists: look where VOCSegmentation does,
    # and name prepare-voc's place (ImageSets/SegmentationAug) when neither holds it.
    lists = [aug / d / f"{spec.split}.txt" for d in LIST_DIRS]
    list_file = next((p for p in lists if p.is_file()), aug / AUG_LIST_DIR / f"{spec.split}.txt")
    missing = [str(p) for p in (labels, list_file) if not p.exists()]
    if missing:
        command = prepare_voc_command(spec.voc_root or root, spec.sbd_root, spec.aug_root)
        raise FileNotFoundError(
            f"split {spec.split!r} needs SBD's extra labels: {' and '.join(missing)} "
            f"not found; write them once with `{command}`"
        )
    return VOCSegmentation(root, spec.split, label_dir=str(labels), list_file=list_file)


def build_dataset(spec: DataSpec) -> SegmentationDataset:
    """Open the dataset ``spec`` names (reads only; nothing is written)."""
    ds: SegmentationDataset
    if spec.kind == "synthetic":
        ds = SyntheticScenes(
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
