"""Accuracy near object boundaries: the "trimap" bands of paper section 5 and Fig. 5.

For a band width w, the scored pixels are those within the square dilation of size 2w+1 of
the void (255) pixels, minus the void pixels themselves. A pixel lies in that dilation
exactly when its chessboard (Chebyshev) distance to the nearest void pixel is <= w, so one
distance transform per image gives the bands of every width at once: band(w) = {1 <= d <= w}.

CamVid's void pixels are not a thin band along object outlines as VOC's are, so a second
rule, ``band="boundary"``, measures from the class changes of the label itself: a labelled
pixel is a boundary pixel when one of its 8 neighbours carries a different (non-void)
class, and band(w) holds the labelled pixels within chessboard distance w - 1 of a boundary
pixel (w = 1: the boundary pixels; void pixels are never scored).

The bands are nested, so each pixel is counted once at its own distance d, into a
(max_width, K, K) histogram, and a cumulative sum over d yields the confusion matrix of
every width together.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from deeplab.metrics.confusion import (
    IGNORE_INDEX,
    ConfusionMatrix,
    check_pred_label,
    mean_iou,
    pixel_accuracy,
)
from deeplab.metrics.counts import Counts, check_classes

__all__ = [
    "BANDS",
    "DEFAULT_WIDTHS",
    "TrimapEvaluator",
    "band_mask",
    "band_masks",
    "boundary_distance",
    "void_distance",
]

DEFAULT_WIDTHS: tuple[int, ...] = tuple(range(1, 41))
"""Band widths of the paper's Fig. 5: 1..40 pixels."""

BANDS: tuple[str, ...] = ("void", "boundary")
"""Band rules: around the void pixels (VOC, paper Fig. 5) or around the class changes."""

_FAR = np.iinfo(np.int32).max


def void_distance(label: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(H, W) int32 chessboard distance from each pixel to the nearest void pixel.

    0 on void pixels; ``int32 max`` everywhere when the label has no void pixel. Pixels past
    the image border are not void, as with ``binary_dilation``'s default border.
    """
    lab = np.asarray(label)
    if lab.ndim != 2:
        raise ValueError(f"label must be (H, W), got {lab.shape}")
    not_void = lab != ignore_index
    if not_void.all():
        return np.full(lab.shape, _FAR, dtype=np.int32)
    if not not_void.any():
        return np.zeros(lab.shape, dtype=np.int32)
    # distance_transform_cdt measures, for every non-zero input pixel, the distance to the
    # nearest zero pixel: here from each non-void pixel to the nearest void one.
    return ndimage.distance_transform_cdt(not_void, metric="chessboard").astype(np.int32)


def boundary_distance(label: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(H, W) int32: 1 + chessboard distance to the nearest boundary pixel (module docstring).

    1 on boundary pixels, 0 on void pixels, ``int32 max`` everywhere when no two labelled
    neighbours differ.
    """
    lab = np.asarray(label)
    if lab.ndim != 2:
        raise ValueError(f"label must be (H, W), got {lab.shape}")
    labelled = lab != ignore_index
    boundary = np.zeros(lab.shape, dtype=bool)
    h, w = lab.shape
    # Each of the 4 neighbour directions (right, down, both diagonals) marks both ends of
    # every labelled pair that differs: together the 8-neighbourhood.
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        y0, y1 = slice(0, h - dy), slice(dy, h)
        x0, x1 = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        a, b = lab[y0, x0], lab[y1, x1]
        differ = (a != b) & labelled[y0, x0] & labelled[y1, x1]
        boundary[y0, x0] |= differ
        boundary[y1, x1] |= differ
    if not boundary.any():
        out = np.full(lab.shape, _FAR, dtype=np.int32)
    else:
        out = ndimage.distance_transform_cdt(~boundary, metric="chessboard").astype(np.int32) + 1
    out[~labelled] = 0
    return out


def band_distance(
    label: np.ndarray, band: str = "void", ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """(H, W) int32 distance d with band(w) = {1 <= d <= w}, for either rule of ``BANDS``."""
    if band == "void":
        return void_distance(label, ignore_index)
    if band == "boundary":
        return boundary_distance(label, ignore_index)
    raise ValueError(f"trimap band {band!r}: expected one of {BANDS}")


def band_mask(
    label: np.ndarray, width: int, ignore_index: int = IGNORE_INDEX, band: str = "void"
) -> np.ndarray:
    """(H, W) bool: the pixels scored at band ``width`` (void rule: dilated void minus void)."""
    if width < 1:
        raise ValueError(f"band width must be >= 1, got {width}")
    d = band_distance(label, band, ignore_index)
    return (d >= 1) & (d <= width)


def band_masks(
    label: np.ndarray,
    widths: Iterable[int] = DEFAULT_WIDTHS,
    ignore_index: int = IGNORE_INDEX,
    band: str = "void",
) -> np.ndarray:
    """(len(widths), H, W) bool: :func:`band_mask` for several widths from one transform."""
    ws = np.asarray(list(widths), dtype=np.int64)
    if ws.size == 0 or ws.min() < 1:
        raise ValueError(f"band widths must be >= 1, got {ws.tolist()}")
    d = band_distance(label, band, ignore_index)
    return (d[None] >= 1) & (d[None] <= ws[:, None, None])


class TrimapEvaluator(Counts):
    """One confusion matrix per band width, accumulated over many images; mergeable by ``+``.

    Args:
        num_classes: K.
        widths: band widths in pixels (default 1..40, the paper's).
        class_names: optional, carried into the per-width :class:`ConfusionMatrix`.
        band: "void" (paper Fig. 5, VOC) or "boundary" (around class changes; CamVid).
    """

    def __init__(
        self,
        num_classes: int,
        widths: Iterable[int] = DEFAULT_WIDTHS,
        class_names: Sequence[str] | None = None,
        ignore_index: int = IGNORE_INDEX,
        band: str = "void",
    ) -> None:
        if band not in BANDS:
            raise ValueError(f"trimap band {band!r}: expected one of {BANDS}")
        ws = sorted({int(w) for w in widths})
        if not ws or ws[0] < 1:
            raise ValueError(f"band widths must be a non-empty set of integers >= 1, got {ws}")
        check_classes(num_classes, class_names)
        self.num_classes = int(num_classes)
        self.widths = tuple(ws)
        self.class_names = tuple(class_names) if class_names is not None else None
        self.ignore_index = int(ignore_index)
        self.band = band
        self.matrices = np.zeros((len(ws), num_classes, num_classes), dtype=np.int64)

    def update(self, pred: Any, label: Any) -> TrimapEvaluator:
        """Add a (H, W) prediction/label pair, or a (N, H, W) batch. Returns self."""
        p, t = check_pred_label(pred, label, self.num_classes, self.ignore_index)
        if p.ndim == 2:
            self._update_one(p, t)
        elif p.ndim == 3:
            for p_i, t_i in zip(p, t, strict=True):
                self._update_one(p_i, t_i)
        else:
            raise ValueError(f"expected (H, W) or (N, H, W) arrays, got {p.shape}")
        return self

    def _update_one(self, pred: np.ndarray, label: np.ndarray) -> None:
        k = self.num_classes
        max_w = self.widths[-1]
        d = band_distance(label, self.band, self.ignore_index)
        near = (d >= 1) & (d <= max_w)
        index = (d[near].astype(np.int64) - 1) * (k * k)
        index += label[near].astype(np.int64) * k + pred[near].astype(np.int64)
        per_distance = np.bincount(index, minlength=max_w * k * k).reshape(max_w, k, k)
        cumulative = np.cumsum(per_distance, axis=0)
        self.matrices += cumulative[np.asarray(self.widths) - 1]

    def _counts(self) -> np.ndarray:
        return self.matrices

    def _check_compatible(self, other: object) -> None:
        if not isinstance(other, TrimapEvaluator):
            raise TypeError(f"cannot merge a TrimapEvaluator with {type(other).__name__}")
        if (other.num_classes, other.widths, other.band) != (
            self.num_classes,
            self.widths,
            self.band,
        ):
            raise ValueError(
                "cannot merge trimap evaluators with different classes, widths or bands"
            )

    def confusion(self, width: int) -> ConfusionMatrix:
        """The accumulated confusion matrix of band ``width`` (one of ``self.widths``)."""
        if width not in self.widths:
            raise ValueError(f"width {width} was not accumulated; widths are {self.widths}")
        return ConfusionMatrix.from_matrix(
            self.matrices[self.widths.index(width)], self.class_names, self.ignore_index
        )

    def mean_iou(self) -> np.ndarray:
        """(len(widths),) mean IoU per width (classes absent from a band are left out)."""
        return np.array([mean_iou(m) for m in self.matrices])

    def pixel_accuracy(self) -> np.ndarray:
        """(len(widths),) pixel accuracy per width."""
        return np.array([pixel_accuracy(m) for m in self.matrices])

    def num_pixels(self) -> np.ndarray:
        """(len(widths),) scored pixels per width."""
        return self.matrices.sum(axis=(1, 2))

    def results(self) -> dict[str, Any]:
        """JSON-serialisable curves: band, widths, mean_iou, pixel_accuracy (0..1; null: empty)."""

        def clean(values: np.ndarray) -> list[float | None]:
            return [None if math.isnan(v) else float(v) for v in values]

        return {
            "band": self.band,
            "widths": list(self.widths),
            "mean_iou": clean(self.mean_iou()),
            "pixel_accuracy": clean(self.pixel_accuracy()),
            "num_pixels": [int(n) for n in self.num_pixels()],
        }
