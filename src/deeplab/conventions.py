"""The conventions the data, the networks and the scores share, defined once.

A leaf module: it imports numpy and the standard library only, so ``deeplab.data``,
``deeplab.models`` and ``deeplab.metrics`` can all depend on it without depending on each
other.

- Classes: the 21 PASCAL VOC 2012 classes (paper section 5), index = label value.
- Void: label value 255 (``IGNORE_INDEX``) marks object borders and ambiguous pixels; the
  loss and every score skip it (the mean IOU of Everingham et al., PASCAL VOC).
- Input: Caffe's. An image enters a network as (3, H, W) float in **BGR** order on the
  **0..255** scale minus the per-channel mean (B, G, R) = (104.008, 116.669, 122.675) the
  authors' released VGG-16 and DeepLab Caffe models were trained with.
  :func:`to_caffe` / :func:`from_caffe` are its numpy form;
  :func:`deeplab.models.to_model_input` applies the same constants to torch tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "CAFFE_MEAN_BGR",
    "IGNORE_INDEX",
    "INPUT_CONVENTION",
    "VOC_CLASSES",
    "from_caffe",
    "to_caffe",
]

IGNORE_INDEX = 255
"""Label value for void pixels: ignored by the loss and by every metric."""

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
"""The 21 VOC 2012 segmentation classes, index = label value."""

INPUT_CONVENTION = "caffe-bgr-255-meansub"
"""Identifier of the input convention, stored in checkpoints and weight records."""

CAFFE_MEAN_BGR: tuple[float, float, float] = (104.008, 116.669, 122.675)
"""Per-channel mean in B, G, R order, subtracted after the RGB -> BGR swap."""


def to_caffe(image: np.ndarray, mean_bgr: Sequence[float] = CAFFE_MEAN_BGR) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 BGR minus the mean."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (0..255), got {image.dtype}")
    bgr = image[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)
    bgr -= np.asarray(mean_bgr, dtype=np.float32)[:, None, None]
    return bgr


def from_caffe(
    array: np.ndarray | torch.Tensor, mean_bgr: Sequence[float] = CAFFE_MEAN_BGR
) -> np.ndarray:
    """Inverse of :func:`to_caffe`, for display: (3, H, W) -> (H, W, 3) uint8 RGB, clipped.

    Accepts a torch tensor too (detached and copied to the CPU).
    """
    if isinstance(array, np.ndarray):
        arr = array
    elif hasattr(array, "detach"):  # a tensor, recognised without importing torch here
        arr = array.detach().cpu().numpy()
    else:
        arr = np.asarray(array)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) array, got {arr.shape}")
    bgr = arr.astype(np.float32) + np.asarray(mean_bgr, dtype=np.float32)[:, None, None]
    rgb = bgr[::-1].transpose(1, 2, 0)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
