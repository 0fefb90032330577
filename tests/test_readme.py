"""The README's first Python example runs and does what its comments say."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_first_example_snaps_labels_to_the_edge() -> None:
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert block is not None
    scope: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), scope)
    labels = scope["labels"]
    assert labels.shape == (240, 320)
    assert np.all(labels[:, :160] == 0) and np.all(labels[:, 160:] == 1)
