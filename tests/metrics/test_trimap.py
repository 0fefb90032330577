from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from deeplab.metrics.confusion import confusion_matrix
from deeplab.metrics.trimap import (
    DEFAULT_WIDTHS,
    TrimapEvaluator,
    band_mask,
    band_masks,
    boundary_distance,
    void_distance,
)

V = 255
LABEL_7X7 = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0],
        [0, 0, V, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 0, V],
    ]
)
# Written out by hand: the 3x3 (w=1) and 5x5 (w=2) squares around each void pixel, minus it.
BAND_1 = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0],
        [0, 1, 1, 1, 0, 0, 0],
        [0, 1, 0, 1, 0, 0, 0],
        [0, 1, 1, 1, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 1, 1],
        [0, 0, 0, 0, 0, 1, 0],
    ],
    dtype=bool,
)
BAND_2 = np.array(
    [
        [1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 0, 0],
        [1, 1, 0, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 1, 1],
        [0, 0, 0, 0, 1, 1, 1],
        [0, 0, 0, 0, 1, 1, 0],
    ],
    dtype=bool,
)

VOC_MINI = Path(__file__).resolve().parents[1] / "data" / "voc_mini" / "VOC2012"


def test_hand_checked_bands_7x7() -> None:
    np.testing.assert_array_equal(band_mask(LABEL_7X7, 1), BAND_1)
    np.testing.assert_array_equal(band_mask(LABEL_7X7, 2), BAND_2)
    masks = band_masks(LABEL_7X7, [1, 2, 3, 6, 40])
    # 8 + 3 = 11; 24 + 8 - 1 overlap = 31; 35 + 15 - 9 overlap = 41; then all 49 - 2 void.
    assert masks.sum(axis=(1, 2)).tolist() == [11, 31, 41, 47, 47]
    d = void_distance(LABEL_7X7)
    assert d[2, 2] == 0 and d[6, 6] == 0 and d[0, 0] == 2 and d[0, 6] == 4


def test_hand_checked_scores_7x7() -> None:
    pred = np.zeros((7, 7), dtype=np.int64)  # predicts background everywhere
    tri = TrimapEvaluator(2, widths=[1, 2, 40]).update(pred, LABEL_7X7)
    # w=1: 11 pixels, only (5, 6) is class 1 -> 10 correct.
    np.testing.assert_array_equal(tri.confusion(1).matrix, [[10, 0], [1, 0]])
    # w=2 adds (4, 6): 31 pixels, 29 correct; w=40: 47 pixels, 45 correct.
    np.testing.assert_array_equal(tri.confusion(2).matrix, [[29, 0], [2, 0]])
    np.testing.assert_array_equal(tri.confusion(40).matrix, [[45, 0], [2, 0]])
    np.testing.assert_allclose(tri.pixel_accuracy(), [10 / 11, 29 / 31, 45 / 47])
    # IoU bg = 10 / 11, IoU fg = 0 -> mean 5 / 11 at w=1.
    np.testing.assert_allclose(tri.mean_iou(), [5 / 11, 29 / 62, 45 / 94])
    assert tri.num_pixels().tolist() == [11, 31, 47]


def test_no_void_and_all_void() -> None:
    label = np.zeros((5, 5), dtype=np.int64)
    assert not band_mask(label, 40).any()
    tri = TrimapEvaluator(3, widths=[1, 2]).update(np.zeros((5, 5), int), label)
    assert tri.num_pixels().tolist() == [0, 0] and math.isnan(tri.mean_iou()[0])
    assert tri.results()["mean_iou"] == [None, None]
    assert not band_mask(np.full((3, 3), 255), 1).any()


def _real_labels() -> list[np.ndarray]:
    if not (VOC_MINI / "SegmentationClass").is_dir():
        pytest.fail(f"vendored VOC sample missing at {VOC_MINI} (a broken checkout)")
    return [np.array(Image.open(p)) for p in sorted((VOC_MINI / "SegmentationClass").glob("*.png"))]


@pytest.mark.parametrize("width", [1, 2, 3, 5, 10, 25, 40])
def test_fast_bands_equal_brute_force_dilation_on_real_voc(width: int) -> None:
    for label in _real_labels():
        void = label == 255
        square = np.ones((2 * width + 1, 2 * width + 1), dtype=bool)
        brute = ndimage.binary_dilation(void, structure=square) & ~void
        fast = band_mask(label, width)
        assert brute.sum() > 0
        np.testing.assert_array_equal(fast, brute)
        # The same set by repeating a 3x3 dilation w times.
        iterated = ndimage.binary_dilation(void, np.ones((3, 3), bool), iterations=width) & ~void
        np.testing.assert_array_equal(fast, iterated)


def test_evaluator_equals_masked_confusion_on_real_voc() -> None:
    labels = _real_labels()
    rng = np.random.default_rng(0)
    tri = TrimapEvaluator(21)
    preds = []
    for label in labels:
        # A plausible prediction: the truth, eroded objects, plus random flips.
        pred = np.where(label == 255, 0, label).astype(np.int64)
        pred = np.where(ndimage.binary_erosion(pred > 0, iterations=3), pred, 0)
        flip = rng.random(label.shape) < 0.05
        pred[flip] = rng.integers(0, 21, int(flip.sum()))
        preds.append(pred)
        tri.update(pred, label)
    for width in (1, 4, 17, 40):
        expected = sum(
            confusion_matrix(p[band_mask(t, width)], t[band_mask(t, width)], 21)
            for p, t in zip(preds, labels, strict=True)
        )
        np.testing.assert_array_equal(tri.confusion(width).matrix, expected)
    assert tri.widths == DEFAULT_WIDTHS
    miou = tri.mean_iou()
    assert miou[0] < miou[-1]  # errors concentrate at the boundary, as in Fig. 5
    json.dumps(tri.results())


def test_batches_and_merging() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, (3, 12, 12))
    labels[:, 5, :] = 255
    preds = rng.integers(0, 3, (3, 12, 12))
    batch = TrimapEvaluator(3, widths=range(1, 6)).update(preds, labels)
    merged = TrimapEvaluator(3, widths=range(1, 6))
    for p, t in zip(preds, labels, strict=True):
        merged += TrimapEvaluator(3, widths=range(1, 6)).update(p, t)
    np.testing.assert_array_equal(batch.matrices, merged.matrices)
    # The distance transform must not leak across images of a batch.
    alone = TrimapEvaluator(3, widths=[3]).update(preds[0], labels[0])
    np.testing.assert_array_equal(
        alone.matrices[0],
        TrimapEvaluator(3, widths=[3]).update(preds[:1], labels[:1]).matrices[0],
    )
    with pytest.raises(ValueError, match="different"):
        batch + TrimapEvaluator(3, widths=[1])
    with pytest.raises(ValueError, match="not accumulated"):
        batch.confusion(9)
    with pytest.raises(ValueError, match=">= 1"):
        TrimapEvaluator(3, widths=[0, 1])
    with pytest.raises(ValueError, match="predictions span"):
        batch.update(np.full((12, 12), 3), labels[0])


# ----------------------------------------------------------- the "boundary" rule (CamVid)


def test_boundary_distance_hand_checked() -> None:
    label = np.array(
        [
            [0, 0, 0, 1, 1],
            [0, 0, 0, 1, 1],
            [0, 0, 0, 1, V],
            [0, 0, 0, 0, 0],
        ]
    )
    d = boundary_distance(label)
    # Columns 2 and 3 touch a different class (8-neighbourhood), and so does (3, 4)
    # diagonally; (1, 4) touches only class 1 and the void pixel, which is no class change.
    expected = np.array(
        [
            [3, 2, 1, 1, 2],
            [3, 2, 1, 1, 2],
            [3, 2, 1, 1, 0],
            [3, 2, 1, 1, 1],
        ]
    )
    np.testing.assert_array_equal(d, expected)
    np.testing.assert_array_equal(band_mask(label, 1, band="boundary"), (expected == 1))
    masks = band_masks(label, [1, 2, 40], band="boundary")
    np.testing.assert_array_equal(masks[1], (expected >= 1) & (expected <= 2))
    assert not masks[2][2, 4]  # void is never scored


def test_boundary_distance_without_a_class_change() -> None:
    label = np.zeros((3, 4), np.uint8)
    label[0, 0] = V
    d = boundary_distance(label)
    assert d[0, 0] == 0 and (d[label != V] == np.iinfo(np.int32).max).all()


def test_boundary_evaluator_equals_masked_confusion_on_camvid_like_label() -> None:
    rng = np.random.default_rng(0)
    label = np.zeros((40, 50), np.uint8)
    label[10:30, 15:35] = 3
    label[:, 40:] = 5
    label[0:5, 0:5] = V
    pred = rng.integers(0, 6, label.shape)
    tri = TrimapEvaluator(6, [1, 3, 10], band="boundary").update(pred, label)
    for w in (1, 3, 10):
        mask = band_mask(label, w, band="boundary")
        expected = confusion_matrix(pred[mask], label[mask], 6)
        np.testing.assert_array_equal(tri.confusion(w).matrix, expected)
    assert tri.results()["band"] == "boundary"
    with pytest.raises(ValueError, match="different classes, widths or bands"):
        tri + TrimapEvaluator(6, [1, 3, 10])
    with pytest.raises(ValueError, match="trimap band 'edges'"):
        TrimapEvaluator(6, band="edges")
