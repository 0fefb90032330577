"""CamVid street scenes, 11 classes, in the layout the SegNet tutorial distributes.

::

    CamVid/
      train/<name>.jpg|png    trainannot/<name>.png    train.txt
      val/...                 valannot/...             val.txt
      test/...                testannot/...            test.txt   (any split name works)

``<split>.txt`` lists one ``image label`` pair a line, paths relative to the root (absolute
paths from the tutorial's own lists are reduced to their last two parts). Labels are
single-channel PNGs: 0 Sky, 1 Building, 2 Pole, 3 Road, 4 Pavement, 5 Tree, 6 SignSymbol,
7 Fence, 8 Car, 9 Pedestrian, 10 Bicyclist, 11 void; void becomes 255 (not scored), any
other value is an error naming the file. Brostow, Fauqueur & Cipolla, "Semantic object
classes in video: a high-definition ground truth database", PRL 2009.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from deeplab.conventions import IGNORE_INDEX
from deeplab.data import image_io
from deeplab.data.sample import Sample, SegmentationDataset
from deeplab.data.voc import check_listed_files

__all__ = ["CAMVID_CLASSES", "CAMVID_PALETTE", "CAMVID_VOID", "CamVid", "camvid_palette"]

CAMVID_CLASSES: tuple[str, ...] = (
    "sky", "building", "pole", "road", "pavement", "tree",
    "sign", "fence", "car", "pedestrian", "bicyclist",
)  # fmt: skip
"""The 11 classes, in label order (the SegNet tutorial's names: Sky ... Bicyclist)."""

CAMVID_VOID = 11
"""The label value of unlabelled pixels in the files (255 once read)."""

CAMVID_PALETTE = np.array(
    [
        (128, 128, 128),  # sky
        (128, 0, 0),  # building
        (192, 192, 128),  # pole
        (128, 64, 128),  # road
        (60, 40, 222),  # pavement
        (128, 128, 0),  # tree
        (192, 128, 128),  # sign
        (64, 64, 128),  # fence
        (64, 0, 128),  # car
        (64, 64, 0),  # pedestrian
        (0, 128, 192),  # bicyclist
    ],
    dtype=np.uint8,
)
"""The usual CamVid colours of the 11 classes (as in the SegNet tutorial's figures)."""


def camvid_palette() -> np.ndarray:
    """(256, 3) uint8 palette: the 11 class colours, black for void and unused values."""
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(CAMVID_PALETTE)] = CAMVID_PALETTE
    return palette


def _relative(entry: str) -> str:
    # The tutorial's own lists carry absolute paths (/SegNet/CamVid/train/x.png): keep the
    # folder and file name, which is what the layout above puts under the root.
    path = Path(entry)
    return str(Path(*path.parts[-2:])) if path.is_absolute() else entry


def read_pair_list(path: Path) -> list[tuple[str, str]]:
    """``image label`` pairs of a CamVid list file (relative paths); errors name the line."""
    if not path.is_file():
        raise FileNotFoundError(f"CamVid list not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise ValueError(f"CamVid list {path} cannot be read as text: {exc}") from None
    pairs: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise ValueError(f"{path}, line {number}: expected 'image label', got {line.strip()!r}")
        pairs.append((_relative(fields[0]), _relative(fields[1])))
    if not pairs:
        raise ValueError(f"CamVid list {path} names no images")
    return pairs


class CamVid(SegmentationDataset):
    """CamVid ``split`` ("train", "val", "test" or any listed split) under ``root``.

    Samples are the photos (H, W, 3) uint8 RGB with (H, W) uint8 labels, void = 255.
    Listed files missing on disk fail at construction, naming them; a photo and label of
    different sizes, label values above 11 and unreadable files fail when the sample is
    read, naming the file.
    """

    class_names = CAMVID_CLASSES

    def __init__(self, root: str | os.PathLike[str], split: str = "train") -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"CamVid folder not found: {self.root}")
        self.split = split
        list_file = self.root / f"{split}.txt"
        if not list_file.is_file():
            found = sorted(p.stem for p in self.root.glob("*.txt"))
            raise FileNotFoundError(
                f"CamVid split {split!r}: no list {list_file}"
                + (f" (lists found: {', '.join(found)})" if found else "")
            )
        self.pairs = read_pair_list(list_file)
        self.names = [Path(image).stem for image, _ in self.pairs]
        by_name = dict(zip(self.names, self.pairs, strict=True))
        if len(by_name) != len(self.names):
            raise ValueError(f"{list_file} names some images twice")
        check_listed_files(
            self.names,
            lambda n: self.root / by_name[n][0],
            lambda n: self.root / by_name[n][1],
            list_file,
        )

    def _load(self, index: int) -> Sample:
        image_rel, label_rel = self.pairs[index]
        image_path, label_path = self.root / image_rel, self.root / label_rel
        image = image_io.load_image(image_path)
        raw = image_io.load_label(label_path)
        if raw.shape != image.shape[:2]:
            raise ValueError(
                f"CamVid {self.names[index]}: photo {image_path} is "
                f"{image.shape[1]}x{image.shape[0]} but label {label_path} is "
                f"{raw.shape[1]}x{raw.shape[0]} (width x height)"
            )
        top = int(raw.max(initial=0))
        if top > CAMVID_VOID:
            bad = np.unique(raw[raw > CAMVID_VOID])
            raise ValueError(
                f"CamVid label {label_path} has values {bad[:5].tolist()} outside 0..11 "
                f"(11 classes and {CAMVID_VOID} = void)"
            )
        label = np.where(raw == CAMVID_VOID, np.uint8(IGNORE_INDEX), raw).astype(np.uint8)
        return Sample(self.names[index], image, label)
