"""Segmentation scores (paper section 5): confusion-matrix mIoU, boundary trimaps, plots.

::

    from deeplab.metrics import ConfusionMatrix, TrimapEvaluator
    cm, tri = ConfusionMatrix(21), TrimapEvaluator(21)
    for pred, label in pairs:          # (H, W) integer arrays, label 255 = void
        cm.update(pred, label)
        tri.update(pred, label)
    cm.mean_iou(), tri.results()["mean_iou"]

``deeplab.metrics.plots`` (matplotlib) is imported on demand, not here.
"""

from deeplab.metrics.confusion import (
    IGNORE_INDEX,
    ConfusionMatrix,
    class_accuracy,
    confusion_matrix,
    iou_per_class,
    markdown_table,
    mean_class_accuracy,
    mean_iou,
    pixel_accuracy,
)
from deeplab.metrics.trimap import (
    BANDS,
    DEFAULT_WIDTHS,
    TrimapEvaluator,
    band_mask,
    band_masks,
    boundary_distance,
    void_distance,
)

__all__ = [
    "BANDS",
    "DEFAULT_WIDTHS",
    "IGNORE_INDEX",
    "ConfusionMatrix",
    "TrimapEvaluator",
    "band_mask",
    "band_masks",
    "boundary_distance",
    "class_accuracy",
    "confusion_matrix",
    "iou_per_class",
    "markdown_table",
    "mean_class_accuracy",
    "mean_iou",
    "pixel_accuracy",
    "void_distance",
]
