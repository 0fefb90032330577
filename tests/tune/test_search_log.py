"""Scored parameter sets and their ranking."""

from __future__ import annotations

import math

from deeplab.crf import CRFParams
from deeplab.tune import (
    rank_entries,
)

from .helpers import entry as _entry


def test_ranking_order_and_ties() -> None:
    a = _entry(CRFParams(w1=5), [[8, 2], [2, 8]])  # mIoU 2/3, accuracy 0.8
    b = _entry(CRFParams(w1=6), [[9, 1], [1, 9]])  # best
    c = _entry(CRFParams(w1=4), [[8, 2], [2, 8]])  # ties a; smaller w1 first
    d = _entry(CRFParams(w1=3), [[10, 0], [10, 0]])  # mIoU 1/4
    empty = _entry(CRFParams(w1=1), [[0, 0], [0, 0]])  # nothing scored: NaN, last
    assert math.isnan(empty.mean_iou)
    ranked = rank_entries([a, empty, d, b, c])
    assert [e.params.w1 for e in ranked] == [6, 4, 5, 3, 1]
