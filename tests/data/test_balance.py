"""Median-frequency class weights (deeplab.data.balance)."""

from __future__ import annotations

import numpy as np
import pytest

from deeplab.data import Sample
from deeplab.data.balance import class_counts, class_weights


def _sample(name: str, label: np.ndarray) -> Sample:
    return Sample(name, np.zeros((*label.shape, 3), np.uint8), label.astype(np.uint8))


def test_counts_per_class_and_per_image() -> None:
    a = np.array([[0, 0, 1, 255]])
    b = np.array([[0, 2, 2, 2]])
    counts = class_counts([_sample("a", a), _sample("b", b)], 4)
    assert counts.pixels.tolist() == [3, 1, 3, 0]
    # Class 0 occurs in both images (3 + 4 labelled pixels); 1 only in a, 2 only in b.
    assert counts.image_pixels.tolist() == [7, 3, 4, 0]


def test_median_frequency_weights_by_hand() -> None:
    a = np.array([[0, 0, 1, 255]])
    b = np.array([[0, 2, 2, 2]])
    counts = class_counts([_sample("a", a), _sample("b", b)], 4)
    freq = np.array([3 / 7, 1 / 3, 3 / 4])
    raw = np.median(freq) / freq
    expected = raw / ((raw * [3, 1, 3]).sum() / 7)
    w = class_weights(counts, "median_frequency")
    assert w is not None
    np.testing.assert_allclose(w[:3], expected)
    assert w[3] == 0  # absent from the training labels
    # The mean weight over the labelled pixels is 1: the loss keeps its scale.
    assert (w * counts.pixels).sum() / counts.pixels.sum() == pytest.approx(1.0)
    sqrt = class_weights(counts, "sqrt_median_frequency")
    assert sqrt is not None
    np.testing.assert_allclose(sqrt[:3] / sqrt[0], np.sqrt(raw / raw[0]))
    assert class_weights(counts, "none") is None


def test_rare_class_weighs_more() -> None:
    label = np.zeros((10, 10), np.uint8)
    label[0, 0] = 1
    w = class_weights(class_counts([_sample("x", label)], 2), "median_frequency")
    assert w is not None and w[1] > 10 * w[0]


def test_bad_values_and_modes_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"bad: label value 7 outside 0\.\.2"):
        class_counts([_sample("bad", np.array([[0, 7]]))], 3)
    counts = class_counts([_sample("a", np.array([[0, 1]]))], 2)
    with pytest.raises(ValueError, match="class balance 'inverse'"):
        class_weights(counts, "inverse")
    empty = class_counts([_sample("v", np.array([[255, 255]]))], 2)
    with pytest.raises(ValueError, match="no labelled pixel"):
        class_weights(empty, "median_frequency")
