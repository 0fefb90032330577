"""The explicit vector row operations against plain numpy."""

from __future__ import annotations

import numba as nb
import numpy as np
import pytest

from deeplab.crf import simd


@nb.njit(cache=False)
def _gather(out, base, values, offsets, weights):
    for k in range(out.shape[0]):
        simd.gather_point(out, k, base, values, offsets, weights, k)


@nb.njit(cache=False)
def _scatter(buf, offsets, weights, rows):
    for k in range(rows.shape[0]):
        simd.scatter_point(buf, offsets, weights, k, rows, k)


@nb.njit(cache=False)
def _blur(dst, src, nbrs):
    for v in range(dst.shape[0]):
        simd.blur_point(dst, src, v, nbrs[v, 0], nbrs[v, 1])


@nb.njit(cache=False)
def _rows(rows, out, shifts):
    maxima = np.empty(rows.shape[0], np.float32)
    for b in range(rows.shape[0]):
        maxima[b] = simd.row_max(rows, b)
        simd.subtract_row(out, rows, b, shifts[b])
    return maxima


@nb.njit(cache=False)
def _normalize(rows):
    for b in range(rows.shape[0]):
        simd.normalize_row(rows, b)


# Whole vectors of 8, a half vector of 4 alone (two labels), and both.
@pytest.mark.parametrize("width", [4, 8, 12, 24, 28, 32, 104])
def test_vector_row_operations_match_numpy(width: int) -> None:
    rng = np.random.default_rng(width)
    n, m, corners = 50, 30, 6
    values = rng.normal(size=(m, width)).astype(np.float32)
    base = rng.normal(size=(n, width)).astype(np.float32)
    offsets = rng.integers(0, m, size=(n, corners)).astype(np.int32)
    weights = rng.uniform(0, 1, size=(n, corners)).astype(np.float32)

    out = np.empty((n, width), np.float32)
    _gather(out, base, values, offsets, weights)
    want = base + np.einsum("nr,nrc->nc", weights, values[offsets])
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)

    buf = np.zeros((m, width), np.float32)
    _scatter(buf, offsets, weights, base)
    want = np.zeros((m, width), np.float64)
    np.add.at(want, offsets.ravel(), (weights[..., None] * base[:, None, :]).reshape(-1, width))
    np.testing.assert_allclose(buf, want, rtol=1e-5, atol=1e-5)

    nbrs = rng.integers(0, m, size=(m, 2)).astype(np.int32)
    dst = np.empty_like(values)
    _blur(dst, values, nbrs)
    np.testing.assert_allclose(dst, values + 0.5 * (values[nbrs[:, 0]] + values[nbrs[:, 1]]),
                               rtol=1e-6, atol=1e-6)  # fmt: skip

    shifts = rng.normal(size=n).astype(np.float32)
    shifted = np.empty_like(base)
    maxima = _rows(base, shifted, shifts)
    np.testing.assert_array_equal(maxima, base.max(1))
    np.testing.assert_allclose(shifted, base - shifts[:, None], rtol=1e-6, atol=1e-6)

    positive = np.exp(base)
    _normalize(positive)
    np.testing.assert_allclose(positive, np.exp(base) / np.exp(base).sum(1, keepdims=True),
                               rtol=1e-5)  # fmt: skip


def test_rows_of_a_slice_use_its_own_stride() -> None:
    """A block of rows taken out of a bigger buffer (what the kernels pass) addresses the
    right memory."""
    values = np.arange(40 * 16, dtype=np.float32).reshape(40, 16)
    block = values[10:20]
    out = np.empty((10, 16), np.float32)
    _gather(out, block, values, np.zeros((10, 1), np.int32), np.zeros((10, 1), np.float32))
    np.testing.assert_array_equal(out, block)


def test_whole_lanes() -> None:
    assert simd.whole_lanes(24) and simd.whole_lanes(8) and simd.whole_lanes(4)
    assert simd.whole_lanes(12)
    assert not simd.whole_lanes(21) and not simd.whole_lanes(2) and not simd.whole_lanes(0)


def test_mean_field_kernels_refuse_rows_that_are_not_whole_vectors() -> None:
    from deeplab.crf import kernels

    energy = np.zeros((10, 21), np.float32)  # 21 labels, not padded to 24
    with pytest.raises(ValueError, match="multiple of 4"):
        kernels.softmax_rows(energy, np.empty_like(energy))
    out = np.empty(10, np.float32)
    with pytest.raises(ValueError, match="multiple of 4"):
        kernels.row_maxima(energy, out)
