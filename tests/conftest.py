"""Shared test fixtures: where the real data lives, a small network checkpoint."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

# The real photos the tests read (two VOC 2012 pairs, the classic dense-CRF photos) are
# vendored in tests/data (see its README.md), so a clone from anywhere runs every test.
# CamVid (43 MB) stays outside: tests/data/test_camvid.py reads it from $DEEPLAB_SHARED.
TEST_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """tests/data: voc_mini/VOC2012 (VOC's layout) and crf_examples (im*.png, anno*.png)."""
    for part in ("voc_mini/VOC2012/JPEGImages", "crf_examples"):
        if not (TEST_DATA / part).is_dir():
            # Part of the repository: missing means a broken checkout, never a skip.
            pytest.fail(f"vendored test data missing: {TEST_DATA / part}")
    return TEST_DATA


@pytest.fixture(scope="session", autouse=True)
def only_loopback_connections(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests never reach past this machine: a connection to anything but a loopback
    address is refused (the download tests serve their files from 127.0.0.1), and
    registered weights are looked up in an empty temporary cache, never ~/.cache/deeplab."""
    connect = socket.socket.connect

    def loopback_only(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = str(address[0])  # type: ignore[index]
            try:
                allowed = host == "localhost" or ipaddress.ip_address(host).is_loopback
            except ValueError:
                allowed = False
            if not allowed:
                raise ConnectionRefusedError(f"tests do not use the network ({host})")
        connect(self, address)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", loopback_only)
        mp.setenv("DEEPLAB_WEIGHTS_DIR", str(tmp_path_factory.mktemp("weights_cache")))
        yield


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

    try:
        import torch
    except ImportError:  # the CRF-only install: numba's threads alone
        torch = None
    before = numba.get_num_threads(), torch.get_num_threads() if torch else 0
    numba.set_num_threads(1)
    if torch:
        torch.set_num_threads(1)
    yield
    numba.set_num_threads(before[0])
    if torch:
        torch.set_num_threads(before[1])


SHARED = Path(os.environ.get("DEEPLAB_SHARED", Path(__file__).resolve().parents[2] / "shared"))
CAMVID = SHARED / "data" / "camvid"


@pytest.fixture(scope="session")
def camvid_root() -> Path:
    """The real CamVid folder ($DEEPLAB_SHARED/data/camvid, ../shared by default); missing,
    it fails in CI and skips elsewhere."""
    if not (CAMVID / "train.txt").is_file():
        message = f"CamVid not found at {CAMVID} (set DEEPLAB_SHARED to the shared folder)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CAMVID
