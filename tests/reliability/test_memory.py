"""Memory bounds: the CRF refuses, with the figures, inputs it could not hold, before it
allocates anything for them; ``deeplab segment`` skips such images and goes on."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

import deeplab.crf.dense as dense
from deeplab.crf import (
    dense_crf,
    dense_crf_from_labels,
    dense_crf_from_logits,
    dense_crf_from_unary,
    estimate_memory,
)

GiB = 2**30


@pytest.fixture
def one_gib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dense, "available_memory", lambda: GiB)


def _huge(shape: tuple[int, ...], dtype: type, value: float = 0) -> np.ndarray:
    """An array of any size that occupies no memory (all elements share one)."""
    return np.broadcast_to(np.asarray(value, dtype), shape)


@pytest.mark.parametrize(
    "call",
    [
        lambda img, maps: dense_crf(img, maps),
        lambda img, maps: dense_crf_from_logits(img, maps),
        lambda img, maps: dense_crf_from_unary(img, maps),
        lambda img, maps: dense_crf_from_labels(
            img, _huge(maps.shape[1:], np.int64), num_labels=21
        ),
    ],
    ids=["probs", "logits", "unary", "labels"],
)
def test_too_large_is_refused_with_the_figures_before_any_copy(one_gib: None, call) -> None:
    """Regression: the (L, H, W) maps were copied to float32 (31 GiB here) and the image
    made contiguous (1.2 GB) before the memory check ran."""
    image = _huge((20_000, 20_000, 3), np.uint8)
    maps = _huge((21, 20_000, 20_000), np.float32, 0.5)
    tracemalloc.start()
    try:
        with pytest.raises(MemoryError) as info:
            call(image, maps)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    need = estimate_memory(20_000, 20_000, 21) / GiB
    assert f"20000x20000 image with 21 labels needs about {need:.1f} GiB" in message
    assert "only 1.0 GiB is available" in message and "downscale" in message
    assert peak < 2**20


def test_a_huge_label_value_is_refused_before_its_unary_exists(one_gib: None) -> None:
    """Regression: one label 2**28 in a 4 x 4 map allocated a (2**28 + 1, 16) unary."""
    labels = np.zeros((4, 4), np.int64)
    labels[2, 2] = 2**28
    tracemalloc.start()
    try:
        with pytest.raises(MemoryError, match="4x4 image with 268435457 labels"):
            dense_crf_from_labels(np.zeros((4, 4, 3), np.uint8), labels)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_what_fits_still_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    need = estimate_memory(8, 8, 3)
    monkeypatch.setattr(dense, "available_memory", lambda: need)
    q = dense_crf(np.zeros((8, 8, 3), np.uint8), np.full((3, 8, 8), 1 / 3, np.float32))
    assert q.shape == (3, 8, 8)
    monkeypatch.setattr(dense, "available_memory", lambda: need - 1)
    with pytest.raises(MemoryError):
        dense_crf(np.zeros((8, 8, 3), np.uint8), np.full((3, 8, 8), 1 / 3, np.float32))


def test_unknown_available_memory_does_not_refuse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dense, "available_memory", lambda: None)
    dense.check_memory(100_000, 100_000, 21)  # no figure to compare with: no refusal


def test_segment_skips_what_does_not_fit_and_finishes_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One batch: a small image, one too large for the (patched) memory, a truncated PNG,
    a PNG claiming 100000 x 100000 pixels and an EPS file. The small one is written, every
    other one is reported with its reason, the exit status is 1, and no temporary file
    is left behind."""
    from deeplab.cli import main
    from deeplab.data.image_io import save_png
    from deeplab.models import build_model, save_model
    from reliability.test_images import _png_header

    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_model(
        build_model("deeplab-largefov-tiny", num_classes=3),
        weights,
        class_names=("a", "b", "c"),
        source="test",
    )
    folder = tmp_path / "in"
    rng = np.random.default_rng(0)
    save_png(folder / "small.png", rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    save_png(folder / "large.png", rng.integers(0, 256, (400, 500, 3), dtype=np.uint8))
    (folder / "cut.png").write_bytes((folder / "small.png").read_bytes()[:200])
    (folder / "bomb.png").write_bytes(_png_header(100_000, 100_000))
    (folder / "page.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 9 9\n")
    budget = (estimate_memory(40, 50, 3) + estimate_memory(400, 500, 3)) // 2
    monkeypatch.setattr(dense, "available_memory", lambda: budget)
    out = tmp_path / "out"
    argv = [
        "segment",
        str(folder),
        "--out",
        str(out),
        "--weights",
        str(weights),
        "--crf",
        "deeplab-largefov",
        "--no-progress",
        "--threads",
        "1",
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert (out / "small.png").is_file()
    assert not any((out / f"{n}.png").exists() for n in ("large", "cut", "bomb", "page"))
    assert "large.png: too large" in err and "needs about" in err
    for name, reason in [
        ("cut.png", "truncated"),
        ("bomb.png", "MAX_IMAGE_PIXELS"),
        ("page.png", "not a readable image"),
    ]:
        line = next(line for line in err.splitlines() if name in line)
        assert reason in line, line
    assert not list(out.rglob("*.tmp"))
