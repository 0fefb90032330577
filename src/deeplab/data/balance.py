"""Class balancing for the training loss: pixel counts and median-frequency weights.

Median-frequency balancing (Eigen & Fergus, ICCV 2015; used by SegNet on CamVid): class c's
frequency is its pixel count over the pixels of the training images that contain it, and
its weight is ``median(freq) / freq_c`` raised to ``power`` (1: the full weights, 0.5: their
square root, a milder correction). Rare thin classes (poles, signs, cyclists) then weigh in
the loss as much as road and sky. The weights are scaled so that their mean over all
labelled training pixels is 1: the loss keeps its unweighted magnitude, so learning rates
need no change.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

from deeplab.conventions import IGNORE_INDEX
from deeplab.data.sample import Sample

__all__ = ["BALANCE_MODES", "ClassCounts", "class_counts", "class_weights"]

log = logging.getLogger(__name__)

BALANCE_MODES: dict[str, float | None] = {
    "none": None,
    "median_frequency": 1.0,
    "sqrt_median_frequency": 0.5,
}
"""Balancing modes and the power each raises the median-frequency weights to."""


class ClassCounts:
    """Labelled pixels per class over a dataset, and the pixels of the images holding each.

    pixels: (K,) int64, pixels labelled c; image_pixels: (K,) int64, labelled pixels of the
    images in which c occurs (the denominator of c's median frequency).
    """

    def __init__(self, pixels: np.ndarray, image_pixels: np.ndarray) -> None:
        self.pixels = np.asarray(pixels, dtype=np.int64)
        self.image_pixels = np.asarray(image_pixels, dtype=np.int64)
        if self.pixels.shape != self.image_pixels.shape or self.pixels.ndim != 1:
            raise ValueError(
                f"pixels {self.pixels.shape} and image_pixels {self.image_pixels.shape} must "
                "be equal 1-D shapes"
            )


def class_counts(samples: Iterable[Sample], num_classes: int) -> ClassCounts:
    """Count labelled pixels per class over ``samples`` (void and 255 not counted).

    A label value in ``num_classes .. 254`` is an error naming the sample.
    """
    pixels = np.zeros(num_classes, np.int64)
    image_pixels = np.zeros(num_classes, np.int64)
    for sample in samples:
        hist = np.bincount(sample.label.ravel(), minlength=256)
        bad = np.flatnonzero(hist[num_classes:IGNORE_INDEX])
        if bad.size:
            raise ValueError(
                f"{sample.name}: label value {int(bad[0]) + num_classes} outside "
                f"0..{num_classes - 1} (and {IGNORE_INDEX} = void)"
            )
        counts = hist[:num_classes]
        pixels += counts
        image_pixels[counts > 0] += int(counts.sum())
    return ClassCounts(pixels, image_pixels)


def class_weights(counts: ClassCounts, mode: str) -> np.ndarray | None:
    """(K,) float64 loss weights for ``mode`` (see :data:`BALANCE_MODES`); None for "none".

    Classes absent from the training set get weight 0 (there is nothing to weigh).
    """
    if mode not in BALANCE_MODES:
        raise ValueError(f"class balance {mode!r}: expected one of {sorted(BALANCE_MODES)}")
    power = BALANCE_MODES[mode]
    if power is None:
        return None
    present = counts.pixels > 0
    if not present.any():
        raise ValueError("class balance: the training labels contain no labelled pixel")
    freq = np.zeros(len(counts.pixels))
    freq[present] = counts.pixels[present] / counts.image_pixels[present]
    weights = np.zeros_like(freq)
    weights[present] = (np.median(freq[present]) / freq[present]) ** power
    # The mean weight over all labelled pixels becomes 1 (the loss's usual scale).
    mean = float((weights * counts.pixels).sum() / counts.pixels.sum())
    weights /= mean
    log.info("class weights (%s): %s", mode, np.round(weights, 3).tolist())
    return weights
