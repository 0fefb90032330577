from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab.metrics.confusion import ConfusionMatrix
from deeplab.metrics.plots import plot_confusion_matrix, plot_trimap_curves
from deeplab.metrics.trimap import TrimapEvaluator


def _check_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape[0] > 200 and pixels.shape[1] > 200
    assert pixels.std() > 5  # something was drawn
    assert [p for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    return pixels


def test_confusion_matrix_png(tmp_path: Path) -> None:
    m = np.array([[50, 5, 0], [10, 30, 0], [0, 0, 0]])
    cm = ConfusionMatrix.from_matrix(m, ["background", "cat", "dog"])
    out = plot_confusion_matrix(cm, tmp_path / "figs" / "cm.png", title="val")
    assert out == tmp_path / "figs" / "cm.png"
    _check_png(out)
    plot_confusion_matrix(m, tmp_path / "raw.png", annotate=False)
    _check_png(tmp_path / "raw.png")
    with pytest.raises(ValueError, match="class names"):
        plot_confusion_matrix(m, tmp_path / "bad.png", class_names=["a"])
    with pytest.raises(ValueError, match="PNG"):
        plot_confusion_matrix(m, tmp_path / "cm.svg")
    assert not (tmp_path / "bad.png").exists()


def test_trimap_curves_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    label = np.zeros((40, 40), dtype=np.int64)
    label[10:30, 10:30] = 1
    label[9, 9:31] = 255
    label[30, 9:31] = 255
    methods = {}
    for name, noise in (("DeepLab", 0.3), ("DeepLab-CRF", 0.1)):
        pred = np.where(label == 255, 0, label)
        flip = rng.random(label.shape) < noise
        pred[flip] = 1 - pred[flip]
        methods[name] = TrimapEvaluator(2, widths=range(1, 11)).update(pred, label)
    # A results dict read back from JSON works as well as an evaluator.
    methods_mixed: dict[str, object] = {
        "DeepLab": methods["DeepLab"],
        "DeepLab-CRF": json.loads(json.dumps(methods["DeepLab-CRF"].results())),
    }
    out = plot_trimap_curves(methods_mixed, tmp_path / "trimap.png", title="Fig. 5")  # type: ignore[arg-type]
    _check_png(out)
    with pytest.raises(ValueError, match="at least one"):
        plot_trimap_curves({}, tmp_path / "empty.png")
    with pytest.raises(ValueError, match="widths"):
        plot_trimap_curves({"x": {"mean_iou": [0.5]}}, tmp_path / "bad.png")
