"""Confusion matrix and the scores derived from it (paper section 5, Tables 1-3).

The matrix is (K, K) int64 with rows = ground truth and columns = prediction; pixels
labelled 255 are ignored. The paper's mean IoU is computed from one matrix accumulated over
the whole split (not averaged per image), the PASCAL VOC measure of Everingham et al.:
IOU = TP / (TP + FP + FN) per class. Matrices add, so shards can be summed.

Mean IoU and mean class accuracy average over the classes that occur: a class with no
ground-truth pixel and no predicted pixel has an undefined IoU (0/0) and is left out of the
mean (reported as NaN / null). On VOC val all 21 classes occur, so this is the paper's
protocol of averaging over all 21.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from deeplab.conventions import IGNORE_INDEX
from deeplab.metrics.counts import Counts, check_classes

__all__ = [
    "IGNORE_INDEX",
    "ConfusionMatrix",
    "check_pred_label",
    "class_accuracy",
    "confusion_matrix",
    "iou_per_class",
    "markdown_table",
    "mean_class_accuracy",
    "mean_iou",
    "pixel_accuracy",
]


def _as_int_array(values: Any, what: str) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, without importing torch here
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{what} must hold integer class indices, got dtype {arr.dtype}")
    return arr


def check_pred_label(
    pred: Any, label: Any, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a prediction/label pair; returns them as integer NumPy arrays.

    Same shapes required. A prediction outside 0..num_classes-1 raises ValueError (anywhere,
    even on ignored pixels: it is a bug upstream), as does a label outside that range other
    than ``ignore_index``.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    p = _as_int_array(pred, "pred")
    t = _as_int_array(label, "label")
    if p.shape != t.shape:
        raise ValueError(f"pred shape {p.shape} != label shape {t.shape}")
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(
            f"predictions span {p.min()}..{p.max()}, outside the classes 0..{num_classes - 1}"
        )
    bad_label = (t != ignore_index) & ((t < 0) | (t >= num_classes))
    if bad_label.any():
        bad = np.unique(t[bad_label])
        raise ValueError(
            f"labels {bad[:10].tolist()} are outside the classes 0..{num_classes - 1} "
            f"(and are not the ignore index {ignore_index})"
        )
    return p, t


def confusion_matrix(
    pred: Any, label: Any, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """(num_classes, num_classes) int64 counts: [gt, pred], ``ignore_index`` pixels skipped.

    ``pred`` and ``label`` are integer arrays of the same shape (any: (H, W), (N, H, W)...),
    validated by :func:`check_pred_label`.
    """
    p, t = check_pred_label(pred, label, num_classes, ignore_index)
    valid = t != ignore_index
    index = t[valid].astype(np.int64) * num_classes + p[valid].astype(np.int64)
    counts = np.bincount(index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def _check_matrix(cm: np.ndarray) -> np.ndarray:
    m = np.asarray(cm)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"a confusion matrix must be square (K, K), got {m.shape}")
    return m.astype(np.float64)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """(K,) float64 IoU = TP / (TP + FP + FN); NaN for a class absent from GT and prediction."""
    m = _check_matrix(cm)
    tp = np.diag(m)
    union = m.sum(axis=1) + m.sum(axis=0) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(cm: np.ndarray) -> float:
    """Mean of :func:`iou_per_class` over the classes present (NaN if none)."""
    ious = iou_per_class(cm)
    present = ~np.isnan(ious)
    return float(ious[present].mean()) if present.any() else math.nan


def pixel_accuracy(cm: np.ndarray) -> float:
    """Correct pixels / scored pixels (NaN if no pixel was scored)."""
    m = _check_matrix(cm)
    total = m.sum()
    return float(np.trace(m) / total) if total > 0 else math.nan


def class_accuracy(cm: np.ndarray) -> np.ndarray:
    """(K,) recall per class, TP / GT pixels; NaN for classes without GT pixels."""
    m = _check_matrix(cm)
    gt = m.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(gt > 0, np.diag(m) / gt, np.nan)


def mean_class_accuracy(cm: np.ndarray) -> float:
    """Mean of :func:`class_accuracy` over classes with GT pixels (NaN if none)."""
    acc = class_accuracy(cm)
    present = ~np.isnan(acc)
    return float(acc[present].mean()) if present.any() else math.nan


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


class ConfusionMatrix(Counts):
    """Accumulates a (K, K) confusion matrix over many predictions; mergeable by ``+``.

    >>> import numpy as np
    >>> cm = ConfusionMatrix(3, class_names=["background", "cat", "dog"])
    >>> label = np.array([[0, 1, 1], [2, 2, 255]])  # any matching integer shapes; 255 is void
    >>> pred = np.array([[0, 1, 2], [2, 2, 0]])
    >>> cm.update(pred, label)  # IoU background 1, cat 1/2, dog 2/3
    ConfusionMatrix(3 classes, 5 pixels, mIoU=0.7222)
    >>> cm.results()["per_class_iou"]  # results() is JSON-serialisable
    {'background': 1.0, 'cat': 0.5, 'dog': 0.6666666666666666}
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        check_classes(num_classes, class_names)
        self.num_classes = int(num_classes)
        self.class_names = (
            tuple(class_names) if class_names is not None else tuple(map(str, range(num_classes)))
        )
        self.ignore_index = int(ignore_index)
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    @classmethod
    def from_matrix(
        cls,
        matrix: np.ndarray | Sequence[Sequence[int]],
        class_names: Sequence[str] | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> ConfusionMatrix:
        """Wrap an existing (K, K) count matrix (e.g. one read back from ``results()`` JSON)."""
        m = np.asarray(matrix)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"matrix must be square (K, K), got {m.shape}")
        if not np.issubdtype(m.dtype, np.integer) or (m.size and m.min() < 0):
            raise ValueError("matrix must hold non-negative integer counts")
        out = cls(m.shape[0], class_names, ignore_index)
        out.matrix = m.astype(np.int64).copy()
        return out

    def update(self, pred: Any, label: Any) -> ConfusionMatrix:
        """Add one prediction/label pair (or a batch of them, same shapes). Returns self."""
        self.matrix += confusion_matrix(pred, label, self.num_classes, self.ignore_index)
        return self

    def _counts(self) -> np.ndarray:
        return self.matrix

    def _check_compatible(self, other: object) -> None:
        if not isinstance(other, ConfusionMatrix):
            raise TypeError(f"cannot merge a ConfusionMatrix with {type(other).__name__}")
        if other.num_classes != self.num_classes or other.class_names != self.class_names:
            raise ValueError("cannot merge confusion matrices over different classes")

    @property
    def num_pixels(self) -> int:
        return int(self.matrix.sum())

    def iou_per_class(self) -> np.ndarray:
        return iou_per_class(self.matrix)

    def mean_iou(self) -> float:
        return mean_iou(self.matrix)

    def pixel_accuracy(self) -> float:
        return pixel_accuracy(self.matrix)

    def mean_class_accuracy(self) -> float:
        return mean_class_accuracy(self.matrix)

    def results(self) -> dict[str, Any]:
        """Scores as plain Python types (fractions in 0..1, null where undefined)."""
        ious = self.iou_per_class()
        accs = class_accuracy(self.matrix)
        return {
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "num_pixels": self.num_pixels,
            "pixel_accuracy": _json_float(self.pixel_accuracy()),
            "mean_class_accuracy": _json_float(self.mean_class_accuracy()),
            "mean_iou": _json_float(self.mean_iou()),
            "per_class_iou": {
                n: _json_float(v) for n, v in zip(self.class_names, ious, strict=True)
            },
            "per_class_accuracy": {
                n: _json_float(v) for n, v in zip(self.class_names, accs, strict=True)
            },
            "confusion_matrix": self.matrix.tolist(),
        }

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix({self.num_classes} classes, {self.num_pixels} pixels, "
            f"mIoU={self.mean_iou():.4f})"
        )


def markdown_table(
    rows: Mapping[str, ConfusionMatrix | np.ndarray | Sequence[float]],
    class_names: Sequence[str],
    digits: int = 1,
    percent: bool = True,
    method_header: str = "Method",
) -> str:
    """A Markdown table laid out like the paper's Table 3: one row per method, one column
    per class, then ``mean``.

    Each row is a :class:`ConfusionMatrix`, a (K, K) count matrix or a (K,) per-class IoU
    (fractions). The mean is over the classes with a defined IoU; undefined cells show "-".
    Pass ``deeplab.data.VOC_SHORT_NAMES`` as ``class_names`` for the paper's headers.
    """
    k = len(class_names)
    header = [method_header, *class_names, "mean"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":---"] + ["---:"] * (k + 1)) + "|",
    ]
    scale = 100.0 if percent else 1.0
    for method, row in rows.items():
        if isinstance(row, ConfusionMatrix):
            ious = row.iou_per_class()
        else:
            arr = np.asarray(row, dtype=np.float64)
            ious = iou_per_class(arr) if arr.ndim == 2 else arr
        if ious.shape != (k,):
            raise ValueError(f"row {method!r} has {ious.shape[0]} classes, the header {k}")
        present = ~np.isnan(ious)
        mean = float(ious[present].mean()) if present.any() else math.nan

        def cell(v: float) -> str:
            return "-" if math.isnan(v) else f"{v * scale:.{digits}f}"

        cells = [method.replace("|", "\\|"), *(cell(float(v)) for v in ious), cell(mean)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
