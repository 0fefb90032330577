"""Shared test fixtures: where the real data lives, a small network checkpoint."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("DEEPLAB_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DATA = SHARED / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"shared data not found at {DATA}")
    return DATA


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A deeplab-largefov-tiny checkpoint with the synthetic classes (fresh weights, seed 0):
    for tests of the machinery around a network, not of its accuracy. Read it, never
    write it."""
    import torch

    from deeplab.data.synthetic import SYNTHETIC_CLASSES
    from deeplab.models import build_model, save_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_weights") / "tiny.safetensors"
    save_model(
        build_model("deeplab-largefov-tiny", num_classes=6),
        path,
        class_names=SYNTHETIC_CLASSES,
        source="test",
    )
    return path


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One thread for torch and numba, restored afterwards: fast and reproducible on a
    shared CPU (spinning thread pools are ~10x slower there than one thread)."""
    import numba
    import torch

    before = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    yield
    torch.set_num_threads(before[0])
    numba.set_num_threads(before[1])


CAMVID = DATA / "camvid"


@pytest.fixture(scope="session")
def camvid_root() -> Path:
    """The real CamVid folder (../shared/data/camvid); missing, it fails in CI and skips
    elsewhere."""
    if not (CAMVID / "train.txt").is_file():
        message = f"CamVid not found at {CAMVID} (set DEEPLAB_SHARED to the shared folder)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CAMVID
