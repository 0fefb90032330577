"""Kernels on lattices too large for the caches take their prefetching paths: same results."""

from __future__ import annotations

import numpy as np

from deeplab.crf import kernels

ROWS = (kernels.PREFETCH_BYTES // (24 * 4)) + 5000  # just past the prefetching threshold


def test_slice_of_a_large_lattice_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    n, corners, width = 20000, 6, 24
    values = rng.normal(size=(ROWS, width)).astype(np.float32)
    assert values.nbytes > kernels.PREFETCH_BYTES
    offsets = rng.integers(0, ROWS, size=(n, corners)).astype(np.int32)
    weights = rng.uniform(0, 1, size=(n, corners)).astype(np.float32)
    neg_unary = rng.normal(size=(n, width)).astype(np.float32)
    q = np.empty_like(neg_unary)
    kernels.slice_softmax(neg_unary, values, offsets, weights, q)
    e = neg_unary + np.einsum("nc,ncw->nw", weights, values[offsets])
    e = np.exp(e - e.max(1, keepdims=True))
    np.testing.assert_allclose(q, e / e.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_blur_of_a_large_lattice_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    width, axes = 24, 3
    m = ROWS
    values = rng.normal(size=(m + 1, width)).astype(np.float32)
    values[m] = 0
    nbrs = rng.integers(0, m + 1, size=(axes, m, 2)).astype(np.int32)
    expected = values.copy()
    for axis in range(axes):
        nxt = expected.copy()
        nxt[:m] = expected[:m] + 0.5 * (expected[nbrs[axis, :, 0]] + expected[nbrs[axis, :, 1]])
        nxt[m] = 0
        expected = nxt
    first, second = values.copy(), np.empty_like(values)
    kernels.blur(first, second, nbrs, False)
    out = second if axes % 2 else first
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)
