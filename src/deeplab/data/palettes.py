"""Label colours by class list: CamVid's usual colours for CamVid networks, else VOC's."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deeplab.data.camvid import CAMVID_CLASSES, camvid_palette
from deeplab.data.classes import voc_palette

__all__ = ["background_label", "palette_for"]


def palette_for(class_names: Sequence[str]) -> np.ndarray:
    """(256, 3) uint8 palette for a network or dataset with these class names."""
    return camvid_palette() if tuple(class_names) == CAMVID_CLASSES else voc_palette()


def background_label(class_names: Sequence[str]) -> int | None:
    """The label an overlay leaves uncoloured: VOC-style lists start with a background
    class (0); CamVid has none (its label 0 is sky), so every class is coloured."""
    return None if tuple(class_names) == CAMVID_CLASSES else 0
