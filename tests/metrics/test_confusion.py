from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from deeplab.metrics.confusion import (
    ConfusionMatrix,
    class_accuracy,
    confusion_matrix,
    iou_per_class,
    markdown_table,
    mean_class_accuracy,
    mean_iou,
    pixel_accuracy,
)

# Hand example: rows = ground truth, columns = prediction.
LABEL = np.array([[0, 0, 1], [1, 2, 255]])
PRED = np.array([[0, 1, 1], [1, 0, 2]])
# gt 0: pred 0 once, pred 1 once; gt 1: pred 1 twice; gt 2: pred 0 once; the 255 pixel skipped.
EXPECTED = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 0]])


def test_hand_example() -> None:
    cm = confusion_matrix(PRED, LABEL, 3)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, EXPECTED)
    # IoU: 0 -> 1 / (2 + 2 - 1) = 1/3; 1 -> 2 / (2 + 3 - 2) = 2/3; 2 -> 0 / (1 + 0 - 0) = 0
    np.testing.assert_allclose(iou_per_class(cm), [1 / 3, 2 / 3, 0.0])
    assert mean_iou(cm) == pytest.approx(1 / 3)
    assert pixel_accuracy(cm) == pytest.approx(3 / 5)
    np.testing.assert_allclose(class_accuracy(cm), [1 / 2, 1.0, 0.0])
    assert mean_class_accuracy(cm) == pytest.approx(1 / 2)


def test_absent_classes_leave_the_mean() -> None:
    # Class 3 appears in neither GT nor prediction: IoU undefined, not counted as 0.
    cm = ConfusionMatrix(4, ["a", "b", "c", "d"]).update(PRED, LABEL)
    ious = cm.iou_per_class()
    assert math.isnan(ious[3])
    assert cm.mean_iou() == pytest.approx(1 / 3)
    assert cm.mean_class_accuracy() == pytest.approx(1 / 2)
    # A class only predicted (never in GT) counts, with IoU 0.
    cm2 = ConfusionMatrix(4).update(np.array([[3, 0]]), np.array([[0, 0]]))
    np.testing.assert_allclose(cm2.iou_per_class(), [0.5, np.nan, np.nan, 0.0])
    assert cm2.mean_iou() == pytest.approx(0.25)


def test_validation_errors() -> None:
    with pytest.raises(ValueError, match="predictions span"):
        confusion_matrix(np.array([[3]]), np.array([[0]]), 3)
    with pytest.raises(ValueError, match="predictions span"):
        confusion_matrix(np.array([[-1]]), np.array([[0]]), 3)
    with pytest.raises(ValueError, match="predictions span"):  # even where the label is void
        confusion_matrix(np.array([[0, 255]]), np.array([[0, 255]]), 3)
    with pytest.raises(ValueError, match=r"labels \[7\]"):
        confusion_matrix(np.array([[0]]), np.array([[7]]), 3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int), 3)
    with pytest.raises(TypeError, match="integer"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 2), int), 3)
    with pytest.raises(TypeError, match="integer"):
        confusion_matrix(np.zeros((2, 2), bool), np.zeros((2, 2), int), 3)


def test_empty_and_all_void() -> None:
    cm = ConfusionMatrix(3).update(np.zeros((2, 2), int), np.full((2, 2), 255))
    assert cm.num_pixels == 0
    assert math.isnan(cm.mean_iou()) and math.isnan(cm.pixel_accuracy())
    r = cm.results()
    assert r["mean_iou"] is None and r["per_class_iou"] == {"0": None, "1": None, "2": None}


def test_merge_equals_joint_accumulation() -> None:
    rng = np.random.default_rng(0)
    preds = rng.integers(0, 5, (4, 9, 11))
    labels = rng.integers(0, 5, (4, 9, 11))
    labels[labels == 4] = 255
    joint = ConfusionMatrix(5).update(preds, labels)  # a batch in one call
    a = ConfusionMatrix(5).update(preds[:2], labels[:2])
    b = ConfusionMatrix(5)
    for p, t in zip(preds[2:], labels[2:], strict=True):
        b.update(p, t)
    np.testing.assert_array_equal((a + b).matrix, joint.matrix)
    a += b
    np.testing.assert_array_equal(a.matrix, joint.matrix)
    with pytest.raises(ValueError, match="different classes"):
        a + ConfusionMatrix(6)
    with pytest.raises(TypeError):
        a + joint.matrix  # type: ignore[operator]
    a.reset()
    assert a.num_pixels == 0


def test_torch_inputs() -> None:
    cm = confusion_matrix(torch.from_numpy(PRED), torch.from_numpy(LABEL), 3)
    np.testing.assert_array_equal(cm, EXPECTED)


def test_results_are_json_and_round_trip() -> None:
    cm = ConfusionMatrix(3, ["bg", "cat", "dog"]).update(PRED, LABEL)
    text = json.dumps(cm.results())
    back = json.loads(text)
    assert back["mean_iou"] == pytest.approx(1 / 3)
    assert back["per_class_iou"]["cat"] == pytest.approx(2 / 3)
    assert back["pixel_accuracy"] == pytest.approx(0.6) and back["num_pixels"] == 5
    again = ConfusionMatrix.from_matrix(back["confusion_matrix"], back["class_names"])
    np.testing.assert_array_equal(again.matrix, EXPECTED)
    with pytest.raises(ValueError, match="non-negative integer"):
        ConfusionMatrix.from_matrix(np.full((2, 2), -1))


@settings(max_examples=50, deadline=None)
@given(
    data=st.data(),
    k=st.integers(1, 6),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=7),
)
def test_matches_a_pixel_loop(data: st.DataObject, k: int, shape: tuple[int, ...]) -> None:
    pred = data.draw(hnp.arrays(np.int64, shape, elements=st.integers(0, k - 1)))
    label = data.draw(hnp.arrays(np.int64, shape, elements=st.sampled_from([*range(k), 255])))
    expected = np.zeros((k, k), dtype=np.int64)
    for p, t in zip(pred.ravel(), label.ravel(), strict=True):
        if t != 255:
            expected[t, p] += 1
    np.testing.assert_array_equal(confusion_matrix(pred, label, k), expected)


def test_markdown_table_layout() -> None:
    cm = ConfusionMatrix(3).update(PRED, LABEL)
    table = markdown_table(
        {"DeepLab": cm, "Oracle": np.array([1.0, 0.5, np.nan])}, ["bkg", "aero", "bike"]
    )
    assert table == (
        "| Method | bkg | aero | bike | mean |\n"
        "|:---|---:|---:|---:|---:|\n"
        "| DeepLab | 33.3 | 66.7 | 0.0 | 33.3 |\n"
        "| Oracle | 100.0 | 50.0 | - | 75.0 |\n"
    )
    raw = markdown_table({"a|b": EXPECTED}, ["x", "y", "z"], digits=3, percent=False)
    assert raw.splitlines()[2] == "| a\\|b | 0.333 | 0.667 | 0.000 | 0.333 |"
    with pytest.raises(ValueError, match="classes"):
        markdown_table({"bad": np.ones(4)}, ["x", "y", "z"])
