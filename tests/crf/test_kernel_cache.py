"""Kernels that depend on the grid alone, kept for the next image of the same size."""

from __future__ import annotations

import numpy as np
import pytest

from deeplab.crf import CRFParams, DenseCRF, dense_crf, kernel_cache, spatial_features


@pytest.fixture(autouse=True)
def _empty_cache():
    kernel_cache.clear()
    yield
    kernel_cache.clear()


def _probs(rng: np.random.Generator, labels: int, h: int, w: int) -> np.ndarray:
    p = rng.uniform(0.05, 1.0, size=(labels, h, w)).astype(np.float32)
    return p / p.sum(0, keepdims=True)


def test_images_of_one_size_share_the_spatial_kernel_with_the_same_result() -> None:
    rng = np.random.default_rng(0)
    params = CRFParams.preset("deeplab-largefov")
    images = [rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8) for _ in range(3)]
    probs = [_probs(rng, 3, 30, 40) for _ in range(3)]
    kept = [dense_crf(i, p, params) for i, p in zip(images, probs, strict=True)]
    assert len(kernel_cache._terms) == 1
    for i, p, q in zip(images, probs, kept, strict=True):
        kernel_cache.clear()
        np.testing.assert_array_equal(dense_crf(i, p, params), q)


def _add(crf: DenseCRF, key: object, built: list[object]) -> None:
    def features() -> np.ndarray:
        built.append(key)
        return spatial_features(10, 12, 3.0)

    kernel_cache.add_cached_kernel(crf, key, features, 1.0, "after")


def test_the_most_recent_kernels_are_kept_within_the_limits(monkeypatch) -> None:
    crf = DenseCRF(np.zeros((2, 120), np.float32))
    built: list[object] = []
    monkeypatch.setattr(kernel_cache, "MAX_ENTRIES", 2)
    for key in ("a", "b", "a", "c", "a", "b"):
        _add(crf, key, built)
    # "b" was the least recently used when "c" came in.
    assert built == ["a", "b", "c", "b"]
    # Another normalisation or point count is another kernel.
    kernel_cache.add_cached_kernel(crf, "a", lambda: spatial_features(10, 12, 3.0), 1.0, "none")
    assert len(kernel_cache._terms) == 2
    monkeypatch.setattr(kernel_cache, "MAX_BYTES", 100)
    kernel_cache.clear()
    _add(crf, "d", built)
    _add(crf, "d", built)
    assert built[-2:] == ["d", "d"] and not kernel_cache._terms
