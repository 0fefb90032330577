"""PASCAL VOC class names, the VOC colour palette, and label PNG read/write helpers.

VOC stores label maps as palette ('P') PNGs: the pixel values are class indices and the
palette only decides how they look. Index 255 is "void" (object borders, ambiguous regions),
never scored (paper section 5; the mean IOU of Everingham et al., PASCAL VOC). The class
names and the void value are defined in :mod:`deeplab.conventions` and re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from deeplab.conventions import IGNORE_INDEX, VOC_CLASSES
from deeplab.data import image_io

__all__ = [
    "IGNORE_INDEX",
    "VOC_CLASSES",
    "VOC_PALETTE",
    "VOC_SHORT_NAMES",
    "colorize",
    "read_label_png",
    "rgb_to_label",
    "voc_palette",
    "write_label_png",
]

VOC_SHORT_NAMES: tuple[str, ...] = (
    "bkg",
    "aero",
    "bike",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "table",
    "dog",
    "horse",
    "mbike",
    "person",
    "plant",
    "sheep",
    "sofa",
    "train",
    "tv",
)
"""Column headers of the paper's Table 3, in class order."""


def voc_palette(num_entries: int = 256) -> np.ndarray:
    """The VOC colour map: (num_entries, 3) uint8.

    Entry i spreads the bits of i over the three channels, most significant bit first:
    bit 0 of i -> red bit 7, bit 1 -> green bit 7, bit 2 -> blue bit 7, bit 3 -> red bit 6, ...
    So 1 = (128, 0, 0), 2 = (0, 128, 0), 15 = (192, 128, 128), 255 = (224, 224, 192).
    """
    if not 1 <= num_entries <= 256:
        raise ValueError(f"num_entries must be in 1..256, got {num_entries}")
    index = np.arange(num_entries, dtype=np.int64)
    palette = np.zeros((num_entries, 3), dtype=np.int64)
    for j in range(8):
        for channel in range(3):
            bit = (index >> (3 * j + channel)) & 1
            palette[:, channel] |= bit << (7 - j)
    return palette.astype(np.uint8)


VOC_PALETTE: np.ndarray = voc_palette()
VOC_PALETTE.flags.writeable = False


def colorize(label: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """Colour a label map for display: (H, W) integer -> (H, W, 3) uint8 via the palette."""
    pal = VOC_PALETTE if palette is None else np.asarray(palette, dtype=np.uint8)
    lab = np.asarray(label)
    if lab.ndim != 2 or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"label must be a 2-D integer array, got {lab.shape} {lab.dtype}")
    if lab.size and (lab.min() < 0 or lab.max() >= len(pal)):
        raise ValueError(
            f"label values span {lab.min()}..{lab.max()}, outside the palette's 0..{len(pal) - 1}"
        )
    return pal[lab]


def rgb_to_label(
    rgb: np.ndarray, palette: np.ndarray | None = None, num_entries: int = 256
) -> np.ndarray:
    """Invert :func:`colorize`: (H, W, 3) uint8 colour mask -> (H, W) uint8 indices.

    Only the first ``num_entries`` palette colours are looked up; a colour not in them raises
    ValueError (guessing the nearest colour would silently corrupt labels).
    """
    pal = VOC_PALETTE if palette is None else np.asarray(palette, dtype=np.uint8)
    pal = pal[:num_entries]
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {arr.shape} {arr.dtype}")
    codes = (
        (arr[..., 0].astype(np.int32) << 16)
        | (arr[..., 1].astype(np.int32) << 8)
        | arr[..., 2].astype(np.int32)
    )
    pal_codes = (
        (pal[:, 0].astype(np.int32) << 16)
        | (pal[:, 1].astype(np.int32) << 8)
        | pal[:, 2].astype(np.int32)
    )
    # The first occurrence wins should a palette repeat a colour.
    uniq_codes, first = np.unique(pal_codes, return_index=True)
    pos = np.searchsorted(uniq_codes, codes)
    pos_clipped = np.minimum(pos, len(uniq_codes) - 1)
    found = uniq_codes[pos_clipped] == codes
    if not found.all():
        bad = arr[~found][0]
        raise ValueError(
            f"colour mask has {int((~found).sum())} pixels whose colour is not in the palette, "
            f"e.g. RGB {tuple(int(v) for v in bad)}"
        )
    return first[pos_clipped].astype(np.uint8)


def write_label_png(
    path: str | os.PathLike[str],
    label: np.ndarray,
    palette: np.ndarray | Sequence[int] | None = None,
) -> None:
    """Save a (H, W) uint8 label map as a palette PNG (atomic write), VOC palette by default."""
    lab = np.asarray(label)
    if lab.ndim != 2:
        raise ValueError(f"label must be 2-D (H, W), got shape {lab.shape}")
    if lab.dtype != np.uint8:
        if not np.issubdtype(lab.dtype, np.integer) or (
            lab.size and (lab.min() < 0 or lab.max() > 255)
        ):
            raise ValueError(f"label values must fit in uint8, got dtype {lab.dtype}")
        lab = lab.astype(np.uint8)
    pal = VOC_PALETTE if palette is None else np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    img = Image.fromarray(np.ascontiguousarray(lab))  # uint8 (H, W) -> mode 'L'
    # putpalette turns the 'L' image into a 'P' image with the same indices.
    img.putpalette(pal.reshape(-1).tolist())
    image_io.save_png(path, img)


def read_label_png(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a label PNG ('P' indices or 'L' values) as (H, W) uint8; see image_io.load_label."""
    return image_io.load_label(path)
