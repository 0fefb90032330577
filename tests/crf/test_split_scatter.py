"""Scatter shares writing the lattice in place: the same sums as private copies, bit for bit."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from deeplab.crf import kernels
from deeplab.crf import lattice as lattice_module
from deeplab.crf.lattice import PermutohedralLattice, hash_vertices
from deeplab.crf.split_scatter import (
    gather_overlaps,
    layout_from_vertices,
    split_scatter,
)

LABELS = 8  # a whole number of vector rows: no padding labels


def _features(n_side: int = 40, seed: int = 0) -> list[np.ndarray]:
    """Spatial and bilateral-like features of the pixels of a smooth random image."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:n_side, 0:n_side].astype(np.float32)
    colour = np.cumsum(rng.normal(size=(n_side, n_side, 3)), axis=1).astype(np.float32)
    spatial = np.stack([xs.ravel() / 3, ys.ravel() / 3], 1)
    return [spatial, np.concatenate([spatial / 5, colour.reshape(-1, 3) / 4], 1)]


def _two_lattices(n_side: int = 40, seed: int = 0) -> list[PermutohedralLattice]:
    return [PermutohedralLattice(f) for f in _features(n_side, seed)]


def _stack(offsets_list: list[np.ndarray], sizes: list[int]):
    """Corners of several lattices stacked as a plan does: M rows and a zero row each."""
    base = np.cumsum([0, *(m + 1 for m in sizes[:-1])])
    offsets = np.concatenate([o + b for o, b in zip(offsets_list, base, strict=True)], 1)
    columns = np.repeat(np.arange(len(sizes)), [o.shape[1] for o in offsets_list])
    blocks = [(int(b), m) for b, m in zip(base, sizes, strict=True)]
    return np.ascontiguousarray(offsets, np.int32), columns, blocks, int(sum(sizes)) + len(sizes)


def _private_reference(q, offsets, weights, shares, rows):
    private = np.empty((shares, rows, q.shape[1]), np.float32)
    out = np.empty((rows, q.shape[1]), np.float32)
    kernels.splat(np.ascontiguousarray(q), offsets, weights, private)
    kernels.reduce_private(private, out)
    return out


def _run_pass(split, neg_unary, weights, src, gather):
    """One fused pass scattering into a fresh buffer; returns (q (N, L), lattice values)."""
    n = neg_unary.shape[0]
    dst = np.full_like(src, np.nan)  # whatever a previous update left
    q_out = np.empty((LABELS, n), np.float32)
    kernels.meanfield_pass(
        neg_unary, src, dst, split.offsets, weights, weights, split.zero_lo, split.zero_hi,
        split.overlap, split.shared_rows, q_out, True, True, gather, np.empty(0, np.float32),
    )  # fmt: skip
    gather_overlaps(dst, split.overlap, split.shared_rows)
    return q_out.T, dst


def _check_against_private(offsets, columns, blocks, rows, shares, seed=0):
    rng = np.random.default_rng(seed)
    n, s = offsets.shape
    neg_unary = rng.normal(size=(n, LABELS)).astype(np.float32)
    weights = rng.uniform(0.1, 1, size=(n, s)).astype(np.float32)
    split = split_scatter(offsets, columns, blocks, shares)
    assert split.offsets.shape == offsets.shape and split.rows >= rows
    src = np.zeros((split.rows, LABELS), np.float32)
    q, dst = _run_pass(split, neg_unary, weights, src, gather=False)
    expected = _private_reference(q, offsets, weights, max(shares, 1), rows)
    np.testing.assert_array_equal(dst[:rows], expected)
    # The next update reads the lattice through the same split corners.
    q2, _ = _run_pass(split, neg_unary, weights, dst, gather=True)
    q_ref = np.empty_like(neg_unary)
    kernels.slice_softmax(neg_unary, expected, offsets, weights, q_ref)
    np.testing.assert_array_equal(q2, q_ref)
    return split


@pytest.mark.parametrize("shares", [1, 2, 3, 5])
def test_split_scatter_gives_the_private_copies_sums_bit_for_bit(shares: int) -> None:
    lattices = _two_lattices()
    offsets, columns, blocks, rows = _stack(
        [lat.offsets for lat in lattices], [lat.num_vertices for lat in lattices]
    )
    split = _check_against_private(offsets, columns, blocks, rows, shares)
    if shares > 1:
        # Neighbouring shares meet on a band of vertices, not on the whole lattice.
        assert 0 < split.shared_rows.size < rows // 2


def test_split_scatter_holds_for_any_vertex_numbering() -> None:
    # Vertices not numbered in order of first appearance: correctness must not rely on it.
    rng = np.random.default_rng(3)
    lattice = _two_lattices(30)[1]
    m = lattice.num_vertices
    permuted = rng.permutation(m).astype(np.int32)[lattice.offsets]
    offsets, columns, blocks, rows = _stack([permuted], [m])
    for shares in (2, 4):
        _check_against_private(offsets, columns, blocks, rows, shares, seed=shares)


@pytest.fixture(params=["one thread", "threads"])
def hashing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Hash ranges on one thread in one table, or on threads of their own then merged."""
    if request.param == "threads":
        if numba.get_num_threads() < 2:
            pytest.skip("one numba thread")
        monkeypatch.setattr(lattice_module, "MIN_POINTS_PER_RANGE", 1)
    return str(request.param)


def test_layout_learnt_while_hashing_is_the_generic_one(hashing: str) -> None:
    lattices = _two_lattices(50, seed=1)
    sizes = [lat.num_vertices for lat in lattices]
    for shares in (2, 3, 4):
        shared_info = []
        for lat, feats in zip(lattices, _features(50, seed=1), strict=True):
            rem0, rank, _, _ = kernels.simplex_keys(feats)
            offsets, _, _, info = hash_vertices(rem0, rank, shares=shares)
            np.testing.assert_array_equal(offsets, lat.offsets)
            shared_info.append(info)
        offsets, columns, blocks, _ = _stack([lat.offsets for lat in lattices], sizes)
        generic = split_scatter(offsets, columns, blocks, shares)
        layout = layout_from_vertices(blocks, shared_info)
        for field in ("zero_lo", "zero_hi", "overlap", "shared_rows"):
            np.testing.assert_array_equal(getattr(layout, field), getattr(generic, field))
        assert layout.rows == generic.rows


def test_vertex_shares_name_the_vertices_several_shares_touch(hashing: str) -> None:
    feats = _features(30)[1]
    rem0, rank, _, _ = kernels.simplex_keys(feats)
    offsets, keys, _, info = hash_vertices(rem0, rank, shares=3)
    n = offsets.shape[0]
    touched = [set(offsets[t * n // 3 : (t + 1) * n // 3].ravel()) for t in range(3)]
    several = sorted(v for v in range(keys.shape[0]) if sum(v in s for s in touched) > 1)
    np.testing.assert_array_equal(info.shared, several)
    assert [info.lowest[t] for t in range(3)] == [min(s) for s in touched]
    assert [info.highest[t] for t in range(3)] == [max(s) for s in touched]
    assert info.index[info.shared].tolist() == list(range(len(several)))
