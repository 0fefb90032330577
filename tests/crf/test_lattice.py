"""The permutohedral lattice against brute-force Gaussian filtering (Adams et al. 2010)."""

from __future__ import annotations

from unittest.mock import patch

import numpy as np
import pytest

from deeplab.crf import PermutohedralLattice, kernels
from deeplab.crf import lattice as lattice_module


def brute_force(features: np.ndarray, values: np.ndarray) -> np.ndarray:
    diff = features[:, None, :] - features[None, :, :]
    k = np.exp(-0.5 * (diff**2).sum(-1))
    return k @ values


# Documented accuracy of normalised filtering (K v / K 1, what DeepLab uses) against the
# exact Gaussian, on 400 points uniform in [0, 4]^d with signals in [0, 1]:
# (mean abs error, max abs error) per dimension. The lattice error grows with d.
TOLERANCE = {1: (0.002, 0.01), 2: (0.003, 0.015), 3: (0.005, 0.03), 5: (0.015, 0.2)}


@pytest.mark.parametrize("dim", sorted(TOLERANCE))
def test_normalised_filter_matches_brute_force(dim: int) -> None:
    rng = np.random.default_rng(dim)
    n = 400
    feats = rng.uniform(0, 4, size=(n, dim)).astype(np.float32)
    vals = rng.uniform(0, 1, size=(n, 3)).astype(np.float32)
    lat = PermutohedralLattice(feats)
    ours = lat.filter(vals) / lat.filter(np.ones(n, np.float32))[:, None]
    ones = np.ones((n, 1))
    exact = brute_force(feats.astype(np.float64), vals) / brute_force(
        feats.astype(np.float64), ones
    )
    err = np.abs(ours - exact)
    mean_tol, max_tol = TOLERANCE[dim]
    assert err.mean() < mean_tol, err.mean()
    assert err.max() < max_tol, err.max()


def test_filter_is_a_blur_with_gaussian_falloff() -> None:
    # An impulse spreads and decays with distance; the lattice is not shift-invariant,
    # so the peak may sit one sample off.
    xs = np.arange(41, dtype=np.float32)[:, None] / 4.0
    lat = PermutohedralLattice(xs)
    impulse = np.zeros(41, np.float32)
    impulse[20] = 1
    out = lat.filter(impulse)
    assert abs(int(out.argmax()) - 20) <= 1
    assert np.all(np.diff(out[22:]) <= 1e-7) and np.all(np.diff(out[:19]) >= -1e-7)
    assert out[0] < 1e-3 * out.max() and out[-1] < 1e-3 * out.max()


def test_reverse_filter_is_the_adjoint() -> None:
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(300, 3)).astype(np.float32) * 2
    lat = PermutohedralLattice(feats)
    a = rng.normal(size=(300, 4)).astype(np.float32)
    b = rng.normal(size=(300, 4)).astype(np.float32)
    lhs = float(np.sum(a * lat.filter(b)))
    rhs = float(np.sum(lat.filter(a, reverse=True) * b))
    assert lhs == pytest.approx(rhs, rel=1e-4)


def test_filter_shapes_and_dtypes() -> None:
    rng = np.random.default_rng(1)
    lat = PermutohedralLattice(rng.normal(size=(50, 2)))
    assert lat.filter(np.ones(50)).shape == (50,)
    out = lat.filter(np.ones((50, 7), np.float64))
    assert out.shape == (50, 7) and out.dtype == np.float32
    with pytest.raises(ValueError, match="50 rows"):
        lat.filter(np.ones((49, 2)))


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (np.zeros((0, 2)), "at least one point"),
        (np.zeros((5, 0)), "at least one feature"),
        (np.zeros(5), "2-D"),
        (np.array([[0.0, np.nan]]), "NaN"),
        (np.array([[0.0, 1e30]]), "too small"),
    ],
)
def test_bad_features(features: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PermutohedralLattice(features)


def test_features_of_any_dimension_and_dtype() -> None:
    rng = np.random.default_rng(2)
    f64 = rng.normal(size=(100, 7))
    a = PermutohedralLattice(f64).filter(np.ones(100))
    b = PermutohedralLattice(np.asfortranarray(f64.astype(np.float16).astype(np.float32))).filter(
        np.ones(100)
    )
    assert a.shape == b.shape == (100,)
    assert np.all(a > 0)


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_vertex_numbering_and_neighbours_do_not_depend_on_how_they_are_found(d: int) -> None:
    # Ranges of points hashed in parallel then merged number the vertices as one serial
    # pass does; neighbours taken from the simplices' edges are those the table gives.
    from deeplab.crf.lattice import hash_vertices

    rng = np.random.default_rng(d)
    smooth = np.cumsum(rng.normal(size=(6000, d)), axis=0) * 0.3  # runs of equal simplices
    noisy = rng.normal(size=(6000, d)) * 4  # about one vertex per point, as in a volume
    for feats in (smooth.astype(np.float32), noisy.astype(np.float32)):
        rem0, rank, _, overflow = kernels.simplex_keys(feats)
        assert overflow == 0
        offsets, keys, table, _ = hash_vertices(rem0, rank, shares=1)
        for shares in (2, 3, 8):
            o, k, _, _ = hash_vertices(rem0, rank, shares=shares)
            np.testing.assert_array_equal(o, offsets)
            np.testing.assert_array_equal(k, keys)
            with patch.object(lattice_module, "MIN_POINTS_PER_RANGE", 1):  # threads, merged
                o, k, _, _ = hash_vertices(rem0, rank, shares=shares)
            np.testing.assert_array_equal(o, offsets)
            np.testing.assert_array_equal(k, keys)
        looked_up = kernels.build_neighbors(keys, table, offsets[:0], rank[:0])
        np.testing.assert_array_equal(
            kernels.build_neighbors(keys, table, offsets, rank), looked_up
        )
        # Every neighbour really is the vertex one step along its axis (d+1 coordinates).
        full = np.concatenate([keys, -keys.sum(1, keepdims=True)], 1)
        m = keys.shape[0]
        for axis in range(d + 1):
            step = np.ones(d + 1, np.int64)
            step[axis] = -d
            for side, sign in ((0, -1), (1, 1)):
                nb_idx = looked_up[axis, :, side]
                has = nb_idx < m
                np.testing.assert_array_equal(full[nb_idx[has]], full[has] + sign * step)


def test_a_growing_table_is_sized_from_the_points_still_to_come() -> None:
    # Half full after a third of the points with ~1 vertex per point: room for all of
    # them at once, not one doubling after another; never less than a doubling, never
    # more than eight times the table.
    cap = 1 << 10
    grown = kernels._grown_capacity(cap, 512, 600, 1800)
    assert grown >= 2 * (513 * 1800 // 600) and grown == 4 * cap
    assert kernels._grown_capacity(cap, 512, 2400, 2400) == 2 * cap  # the last point
    assert kernels._grown_capacity(cap, 512, 10, 10**6) == 8 * cap  # a wild projection


def test_vertices_of_a_lattice_past_the_cached_table_size_are_numbered_in_order() -> None:
    # A table that outgrows the caches is probed in prefetched batches: the numbering must
    # still be the order of first appearance, serially and merged from two ranges.
    from deeplab.crf.lattice import hash_vertices

    rng = np.random.default_rng(7)
    feats = rng.uniform(0, 150, size=(300_000, 3)).astype(np.float32)  # ~2 new vertices each
    rem0, rank, _, overflow = kernels.simplex_keys(feats)
    assert overflow == 0
    d1 = rem0.shape[1]
    canonical = kernels._canonical(d1)
    corners = np.stack([rem0[:, :-1] + canonical[r][rank[:, :-1]] for r in range(d1)], 1)
    flat = corners.reshape(-1, d1 - 1).astype(np.int64) + 4096
    assert flat.min() >= 0 and flat.max() < 1 << 14
    packed = (flat[:, 0] << 28) | (flat[:, 1] << 14) | flat[:, 2]
    _, first, inverse = np.unique(packed, return_index=True, return_inverse=True)
    number = np.empty(first.size, np.int64)
    number[np.argsort(first)] = np.arange(first.size)
    expected = number[inverse.ravel()].reshape(-1, d1)
    assert first.size > kernels.PREFETCH_SLOTS // 2  # the table grows past the threshold

    offsets, keys, table, _ = hash_vertices(rem0, rank, shares=1)
    assert table.size >= kernels.PREFETCH_SLOTS
    np.testing.assert_array_equal(offsets, expected)
    np.testing.assert_array_equal(keys, flat[first[np.argsort(first)]] - 4096)
    with patch.object(lattice_module, "MIN_POINTS_PER_RANGE", 1):
        merged, merged_keys, _, _ = hash_vertices(rem0, rank, shares=2)
    np.testing.assert_array_equal(merged, expected)
    np.testing.assert_array_equal(merged_keys, keys)
