"""check_same_size: the message of every file dataset whose label does not fit its image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deeplab.data.sample import check_same_size


def test_check_same_size_names_both_files() -> None:
    image = np.zeros((4, 6, 3), np.uint8)
    check_same_size(image, np.zeros((4, 6), np.uint8), "a.jpg", "a.png")
    with pytest.raises(ValueError, match=r"masks/a\.png is 4x5 but its image .*a\.jpg is 4x6"):
        check_same_size(image, np.zeros((4, 5), np.uint8), Path("a.jpg"), Path("masks/a.png"))
