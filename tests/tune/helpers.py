"""Helpers shared by the tune tests."""

from __future__ import annotations

import numpy as np

from deeplab.crf import CRFParams
from deeplab.metrics import ConfusionMatrix
from deeplab.tune import Entry


def entry(params: CRFParams, matrix: list[list[int]]) -> Entry:
    """A scored parameter set from a confusion matrix (rows = ground truth)."""
    return Entry(params, ConfusionMatrix.from_matrix(np.array(matrix)))
