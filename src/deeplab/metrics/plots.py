"""PNG figures: a row-normalised confusion matrix and the trimap curves of paper Fig. 5.

Figures are drawn with matplotlib's object API on an Agg canvas (no pyplot global state, no
display needed) and written atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deeplab.io_utils import atomic_write_bytes
from deeplab.metrics.confusion import ConfusionMatrix
from deeplab.metrics.trimap import TrimapEvaluator

__all__ = ["plot_confusion_matrix", "plot_trimap_curves", "save_figure"]


def save_figure(figure: Figure, path: str | os.PathLike[str], dpi: int = 120) -> Path:
    """Render ``figure`` to PNG and write it atomically (missing folders are created)."""
    p = Path(path)
    if p.suffix.lower() != ".png":
        raise ValueError(f"figures are written as PNG; {p} does not end in .png")
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(p, buffer.getvalue())
    return p


def plot_confusion_matrix(
    cm: ConfusionMatrix | np.ndarray,
    path: str | os.PathLike[str],
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    annotate: bool | None = None,
) -> Path:
    """Write the confusion matrix as a PNG, each row normalised to sum 1 (recall per class).

    Rows = ground truth, columns = prediction, class names on both axes. Rows without
    ground-truth pixels stay 0. ``annotate`` prints percentages in the cells (default: when
    there are at most 25 classes).
    """
    if isinstance(cm, ConfusionMatrix):
        matrix = cm.matrix
        names = class_names if class_names is not None else cm.class_names
    else:
        matrix = np.asarray(cm)
        names = class_names if class_names is not None else [str(i) for i in range(len(matrix))]
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"confusion matrix must be (K, K), got {matrix.shape}")
    k = matrix.shape[0]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for a {k}x{k} matrix")
    rows = matrix.sum(axis=1, keepdims=True).astype(np.float64)
    normalised = np.divide(matrix, rows, out=np.zeros((k, k)), where=rows > 0)
    if annotate is None:
        annotate = k <= 25

    side = max(4.0, 0.42 * k + 2.0)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")
    ax.set_xticks(range(k), labels=list(names), rotation=90)
    ax.set_yticks(range(k), labels=list(names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    if title:
        ax.set_title(title)
    if annotate:
        for i in range(k):
            for j in range(k):
                v = normalised[i, j]
                if v >= 0.005:
                    ax.text(
                        j,
                        i,
                        f"{100 * v:.0f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if v > 0.5 else "black",
                    )
    return save_figure(fig, path)


def _curves(
    source: TrimapEvaluator | Mapping[str, Any],
) -> tuple[list[int], list[float], list[float]]:
    data = source.results() if isinstance(source, TrimapEvaluator) else source
    try:
        widths = [int(w) for w in data["widths"]]
        miou = [np.nan if v is None else float(v) for v in data["mean_iou"]]
        acc = [np.nan if v is None else float(v) for v in data["pixel_accuracy"]]
    except KeyError as exc:
        raise ValueError(
            f"trimap results need 'widths', 'mean_iou', 'pixel_accuracy': {exc}"
        ) from exc
    if not len(widths) == len(miou) == len(acc):
        raise ValueError("trimap results have curves of different lengths")
    return widths, miou, acc


def plot_trimap_curves(
    methods: Mapping[str, TrimapEvaluator | Mapping[str, Any]],
    path: str | os.PathLike[str],
    title: str | None = None,
) -> Path:
    """Write paper Fig. 5 (b, c) as one PNG: pixel accuracy and mean IoU (%) against the band
    width, one line per method.

    Each method is a :class:`TrimapEvaluator` or its ``results()`` dict (e.g. read from JSON).
    """
    if not methods:
        raise ValueError("plot_trimap_curves needs at least one method")
    fig = Figure(figsize=(10.0, 4.2), layout="constrained")
    ax_acc, ax_iou = fig.subplots(1, 2)
    for name, source in methods.items():
        widths, miou, acc = _curves(source)
        ax_acc.plot(widths, 100 * np.asarray(acc), marker=".", label=name)
        ax_iou.plot(widths, 100 * np.asarray(miou), marker=".", label=name)
    for ax, ylabel in ((ax_acc, "Pixelwise Accuracy (%)"), (ax_iou, "mean IOU (%)")):
        ax.set_xlabel("Trimap Width (pixels)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
