"""Shared fixtures for the data tests: the two real VOC 2012 pairs and small file helpers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# Vendored in the repository (tests/data/README.md).
VOC_MINI = Path(__file__).resolve().parent / "voc_mini" / "VOC2012"


@pytest.fixture(scope="session")
def voc_mini() -> Path:
    """The read-only VOC 2012 sample: 2007_000032 (train) and 2007_000033 (val)."""
    if not (VOC_MINI / "JPEGImages").is_dir():
        pytest.fail(f"vendored VOC sample missing at {VOC_MINI} (a broken checkout)")
    return VOC_MINI


@pytest.fixture
def voc_copy(voc_mini: Path, tmp_path: Path) -> Path:
    """A writable copy of the VOC sample, for tests that add or break files."""
    target = tmp_path / "VOC2012"
    shutil.copytree(voc_mini, target)
    return target
