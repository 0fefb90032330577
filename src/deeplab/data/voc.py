"""PASCAL VOC 2012 segmentation in its standard layout (paper section 5).

::

    VOC2012/
      JPEGImages/<name>.jpg
      SegmentationClass/<name>.png        palette PNGs, 255 on object borders
      SegmentationClassAug/<name>.png     optional: SBD + VOC labels for train_aug ('L' or 'P')
      ImageSets/Segmentation/{train,val,trainval}.txt
      ImageSets/SegmentationAug/{train_aug,trainval_aug}.txt   optional (deeplab prepare-voc)

The paper trains on ``train_aug`` (10,582 images, labels from ``SegmentationClassAug``) and
scores on ``val`` (1,449 images, labels from ``SegmentationClass``).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import numpy as np

from deeplab.conventions import VOC_CLASSES
from deeplab.data import image_io
from deeplab.data.classes import write_label_png
from deeplab.data.sample import Sample, SegmentationDataset, check_same_size

__all__ = [
    "AUG_LABEL_DIR",
    "AUG_LIST_DIR",
    "LABEL_DIR",
    "VOCSegmentation",
    "find_voc_root",
    "read_name_list",
    "write_name_list",
    "write_voc_layout",
]

logger = logging.getLogger(__name__)

LABEL_DIR = "SegmentationClass"
AUG_LABEL_DIR = "SegmentationClassAug"
IMAGE_DIR = "JPEGImages"
AUG_LIST_DIR = "ImageSets/SegmentationAug"
LIST_DIRS = ("ImageSets/Segmentation", AUG_LIST_DIR)
_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})


def check_listed_files(
    names: Sequence[str],
    image_path: Callable[[str], Path],
    label_path: Callable[[str], Path],
    list_file: Path,
) -> None:
    """FileNotFoundError naming the count and a few of the images and labels that the list
    names but the disk lacks."""
    missing = [
        str(path)
        for name in names
        for path in (image_path(name), label_path(name))
        if not path.is_file()
    ]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} file(s) listed by {list_file} are missing, e.g. "
            + ", ".join(missing[:3])
        )


def read_name_list(path: str | os.PathLike[str]) -> list[str]:
    """Read an image-name list: one name per line, blank lines skipped.

    Also accepts the two-column lists shipped with DeepLab
    (``/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png``): the name is the
    stem of the first path. Duplicates raise ValueError (they would silently reweight data).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image list not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"image list {p} is not UTF-8 text: {exc}") from exc
    names: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        first = fields[0]
        is_path = "/" in first or Path(first).suffix.lower() in _IMAGE_SUFFIXES
        names.append(Path(first).stem if is_path else first)
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ValueError(f"image list {p} repeats {len(duplicates)} name(s), e.g. {duplicates[:3]}")
    return names


def write_name_list(path: str | os.PathLike[str], names: Sequence[str]) -> None:
    """Write one name per line (atomic), the format of ``ImageSets/Segmentation/*.txt``."""
    image_io.write_text(path, "".join(f"{n}\n" for n in names))


def find_voc_root(root: str | os.PathLike[str]) -> Path:
    """Resolve ``root`` to the folder holding ``JPEGImages``.

    Accepts the ``VOC2012`` folder itself, or ``VOCdevkit`` / the folder above it.
    """
    base = Path(root)
    if not base.exists():
        raise FileNotFoundError(f"VOC root not found: {base}")
    for candidate in (base, base / "VOC2012", base / "VOCdevkit" / "VOC2012"):
        if (candidate / IMAGE_DIR).is_dir():
            if candidate != base:
                logger.debug("using VOC root %s", candidate)
            return candidate
    raise FileNotFoundError(
        f"{base} is not a VOC 2012 folder: no {IMAGE_DIR}/ in it, nor in VOC2012/ or "
        f"VOCdevkit/VOC2012/ below it"
    )


class VOCSegmentation(SegmentationDataset):
    """PASCAL VOC 2012 segmentation split as a sequence of :class:`Sample`.

    Args:
        root: the ``VOC2012`` folder (or a folder above it, see :func:`find_voc_root`).
        split: list name, looked up as ``ImageSets/Segmentation/<split>.txt`` then
            ``ImageSets/SegmentationAug/<split>.txt`` ("train", "val", "trainval", "train_aug",
            "trainval_aug").
        label_dir: ``"SegmentationClass"`` (VOC's own labels) or ``"SegmentationClassAug"``
            (written by ``deeplab prepare-voc``); relative to the VOC folder, or absolute.
        list_file: an explicit list file; overrides the lookup by ``split``.
        class_names: defaults to the 21 VOC classes.
        check_files: stat every image and label now, so a missing file fails at construction.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        label_dir: str = LABEL_DIR,
        list_file: str | os.PathLike[str] | None = None,
        class_names: Sequence[str] = VOC_CLASSES,
        check_files: bool = True,
    ) -> None:
        self.root = find_voc_root(root)
        self.split = split
        self.image_dir = self.root / IMAGE_DIR
        self.label_dir = self.root / label_dir
        if not self.label_dir.is_dir():
            hint = " (write it with `deeplab prepare-voc`)" if label_dir == AUG_LABEL_DIR else ""
            raise FileNotFoundError(f"label folder not found: {self.label_dir}{hint}")
        self.list_file = Path(list_file) if list_file is not None else self._find_list(split)
        self.names = read_name_list(self.list_file)
        self.class_names = tuple(class_names)
        if not self.names:
            raise ValueError(f"image list {self.list_file} is empty")
        if check_files:
            self._check_files()
        logger.debug("VOC %s: %d images from %s", split, len(self.names), self.list_file)

    def _find_list(self, split: str) -> Path:
        tried = [self.root / d / f"{split}.txt" for d in LIST_DIRS]
        for candidate in tried:
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(
            f"no list for split {split!r}: tried " + ", ".join(str(t) for t in tried)
        )

    def image_path(self, name: str) -> Path:
        return self.image_dir / f"{name}.jpg"

    def label_path(self, name: str) -> Path:
        return self.label_dir / f"{name}.png"

    def _check_files(self) -> None:
        check_listed_files(self.names, self.image_path, self.label_path, self.list_file)

    def _load(self, index: int) -> Sample:
        name = self.names[index]
        image = image_io.load_image(self.image_path(name))
        label = image_io.load_label(self.label_path(name))
        check_same_size(image, label, self.image_path(name), self.label_path(name))
        return Sample(name=name, image=image, label=label)


def write_voc_layout(
    dataset: SegmentationDataset,
    root: str | os.PathLike[str],
    val_names: Collection[str] = (),
    palette: np.ndarray | None = None,
) -> Path:
    """Write any dataset in the VOC layout under ``root`` (the future ``VOC2012`` folder).

    Images as ``JPEGImages/<name>.jpg`` (quality 95, no chroma subsampling), labels as
    palette PNGs in ``SegmentationClass/``, and the lists
    ``ImageSets/Segmentation/{train,val,trainval}.txt``, where val holds ``val_names`` and
    train the rest. A ``classes.txt`` records the class names (VOC itself has none;
    :class:`VOCSegmentation` takes them as an argument). Returns ``root``.
    """
    out = Path(root)
    unknown = set(val_names) - set(dataset.names)
    if unknown:
        raise ValueError(f"val_names not in the dataset: {sorted(unknown)[:3]}")
    for sample in dataset:
        # 4:4:4 chroma: thin coloured stripes and borders survive better than with 4:2:0.
        image_io.save_image(out / IMAGE_DIR / f"{sample.name}.jpg", sample.image, subsampling=0)
        write_label_png(out / LABEL_DIR / f"{sample.name}.png", sample.label, palette)
    val = set(val_names)
    lists = out / LIST_DIRS[0]
    write_name_list(lists / "train.txt", [n for n in dataset.names if n not in val])
    write_name_list(lists / "val.txt", [n for n in dataset.names if n in val])
    write_name_list(lists / "trainval.txt", list(dataset.names))
    image_io.write_text(out / "classes.txt", "".join(f"{c}\n" for c in dataset.class_names))
    logger.info("wrote %d samples in the VOC layout to %s", len(dataset), out)
    return out
