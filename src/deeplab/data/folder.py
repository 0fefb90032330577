"""A generic folder dataset: an images folder, a masks folder and a class-names file.

::

    images/<stem>.{jpg,jpeg,png,bmp}
    masks/<stem>.png          'P' or 'L' PNGs of class indices, 255 = void
    classes.txt               one class name per line, line i = label value i

Images and masks are paired by file stem; any file without its partner is an error, as is a
mask value >= the number of classes other than 255. Any number of classes up to 255 works.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deeplab.conventions import IGNORE_INDEX
from deeplab.data import image_io
from deeplab.data.classes import write_label_png
from deeplab.data.sample import Sample, SegmentationDataset, check_same_size

__all__ = [
    "IMAGE_SUFFIXES",
    "FolderDataset",
    "read_class_names",
    "write_class_names",
    "write_folder_dataset",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def read_class_names(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Read class names, one per line (surrounding spaces stripped, blank lines skipped)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"class-names file not found: {p}")
    names = tuple(line.strip() for line in p.read_text(encoding="utf-8").splitlines())
    names = tuple(n for n in names if n)
    if not names:
        raise ValueError(f"class-names file {p} lists no classes")
    if len(names) > IGNORE_INDEX:
        raise ValueError(
            f"class-names file {p} lists {len(names)} classes; at most {IGNORE_INDEX} fit in "
            f"uint8 labels with {IGNORE_INDEX} reserved for void"
        )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"class-names file {p} repeats {duplicates}")
    return names


def write_class_names(path: str | os.PathLike[str], names: Sequence[str]) -> None:
    """Write class names one per line (atomic)."""
    image_io.write_text(path, "".join(f"{n}\n" for n in names))


def _index_by_stem(folder: Path, suffixes: Sequence[str], what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {folder}")
    found: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.suffix.lower() not in suffixes:
            continue
        if entry.stem in found:
            raise ValueError(
                f"two {what} files share the stem {entry.stem!r}: {found[entry.stem].name} and "
                f"{entry.name} in {folder}"
            )
        found[entry.stem] = entry
    return found


class FolderDataset(SegmentationDataset):
    """Images and PNG masks paired by stem, sorted by stem.

    Args:
        images_dir: folder of images (``IMAGE_SUFFIXES``).
        masks_dir: folder of ``.png`` masks.
        class_names: a class-names file (one per line) or the names themselves.
        validate_values: check each mask's values against the class count when loaded.
    """

    def __init__(
        self,
        images_dir: str | os.PathLike[str],
        masks_dir: str | os.PathLike[str],
        class_names: str | os.PathLike[str] | Sequence[str],
        validate_values: bool = True,
    ) -> None:
        self.images_dir = Path(images_dir)
        self.masks_dir = Path(masks_dir)
        if isinstance(class_names, str | os.PathLike):
            self.class_names = read_class_names(class_names)
        else:
            self.class_names = tuple(class_names)
            if not self.class_names or len(self.class_names) > IGNORE_INDEX:
                raise ValueError(f"need 1..{IGNORE_INDEX} class names, got {len(self.class_names)}")
        self.validate_values = validate_values
        images = _index_by_stem(self.images_dir, IMAGE_SUFFIXES, "image")
        masks = _index_by_stem(self.masks_dir, (".png",), "mask")
        no_mask = sorted(set(images) - set(masks))
        no_image = sorted(set(masks) - set(images))
        if no_mask or no_image:
            parts = []
            if no_mask:
                parts.append(
                    f"{len(no_mask)} image(s) in {self.images_dir} have no mask in "
                    f"{self.masks_dir}, e.g. {[images[s].name for s in no_mask[:3]]}"
                )
            if no_image:
                parts.append(
                    f"{len(no_image)} mask(s) in {self.masks_dir} have no image in "
                    f"{self.images_dir}, e.g. {[masks[s].name for s in no_image[:3]]}"
                )
            raise ValueError("unmatched files: " + "; ".join(parts))
        if not images:
            raise ValueError(f"no images found in {self.images_dir} (suffixes {IMAGE_SUFFIXES})")
        self.names = sorted(images)
        self._images = images
        self._masks = masks
        logger.debug("folder dataset: %d pairs, %d classes", len(self.names), self.num_classes)

    def image_path(self, name: str) -> Path:
        return self._images[name]

    def label_path(self, name: str) -> Path:
        return self._masks[name]

    def _load(self, index: int) -> Sample:
        name = self.names[index]
        image = image_io.load_image(self._images[name])
        label = image_io.load_label(self._masks[name])
        check_same_size(image, label, self._images[name], self._masks[name])
        if self.validate_values:
            values = np.unique(label)
            bad = values[(values >= self.num_classes) & (values != IGNORE_INDEX)]
            if bad.size:
                raise ValueError(
                    f"mask {self._masks[name]} has values {bad.tolist()} but there are only "
                    f"{self.num_classes} classes (0..{self.num_classes - 1}, 255 = void)"
                )
        return Sample(name=name, image=image, label=label)


def write_folder_dataset(
    dataset: SegmentationDataset,
    out_dir: str | os.PathLike[str],
    image_suffix: str = ".png",
    palette: np.ndarray | None = None,
) -> Path:
    """Write any dataset in the folder layout (``images/``, ``masks/``, ``classes.txt``).

    Images go as ``image_suffix`` (PNG by default: lossless), masks as palette PNGs. Every
    file is written atomically. Returns ``out_dir``; :class:`FolderDataset` reads it back.
    """
    if image_suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"image_suffix must be one of {IMAGE_SUFFIXES}, got {image_suffix!r}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    write_class_names(out / "classes.txt", dataset.class_names)
    for sample in dataset:
        image_io.save_image(out / "images" / f"{sample.name}{image_suffix}", sample.image)
        write_label_png(out / "masks" / f"{sample.name}.png", sample.label, palette)
    logger.info("wrote %d samples to %s", len(dataset), out)
    return out
