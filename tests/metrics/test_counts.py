"""The adding that ConfusionMatrix and TrimapEvaluator share (deeplab.metrics.counts)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from deeplab.metrics import ConfusionMatrix, TrimapEvaluator
from deeplab.metrics.counts import Counts, check_classes


def _pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 3, (12, 12))
    label = rng.integers(0, 3, (12, 12))
    label[4:6] = 255
    return pred, label


@pytest.mark.parametrize(
    "make", [lambda: ConfusionMatrix(3), lambda: TrimapEvaluator(3, widths=(1, 2))]
)
def test_add_leaves_both_operands_alone(make: Callable[[], Counts]) -> None:
    pred, label = _pair()
    a, b = make(), make()
    a.update(pred, label)  # type: ignore[attr-defined]
    b.update(label % 3, label)  # type: ignore[attr-defined]
    before = a._counts().copy(), b._counts().copy()
    total = a + b
    np.testing.assert_array_equal(total._counts(), before[0] + before[1])
    np.testing.assert_array_equal(a._counts(), before[0])
    np.testing.assert_array_equal(b._counts(), before[1])
    total.reset()
    assert total._counts().sum() == 0 and a._counts().sum() > 0


def test_accumulators_of_two_kinds_do_not_merge() -> None:
    with pytest.raises(TypeError, match="ConfusionMatrix with TrimapEvaluator"):
        ConfusionMatrix(3) + TrimapEvaluator(3)  # type: ignore[operator]


def test_check_classes() -> None:
    check_classes(2, ("a", "b"))
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        check_classes(0, None)
    with pytest.raises(ValueError, match="1 class names for 2 classes"):
        check_classes(2, ("a",))
