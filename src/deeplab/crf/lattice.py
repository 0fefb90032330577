"""The permutohedral lattice (Adams, Baek & Davis, Eurographics 2010) over any features.

Filtering with it approximates a Gaussian over feature space,
``out_i = sum_j exp(-|f_i - f_j|^2 / 2) in_j``, in time linear in the number of points:
splat onto the lattice vertices with barycentric weights, blur along each of the d+1
lattice axes with (1/2, 1, 1/2), slice back, times ``1 / (1 + 2^-d)``. This is exactly the
filter of Kraehenbuehl & Koltun's reference code, so CRF results agree with it.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from deeplab.crf import kernels
from deeplab.crf.split_scatter import VertexShares
from deeplab.crf.threads import adapted_threads, thread_shares
from deeplab.crf.validation import as_float32_2d, check_lattice_range

log = logging.getLogger(__name__)

# Points per range below which one thread hashes all the ranges.
MIN_POINTS_PER_RANGE = 1 << 16
# Hash tables from this size on (8 MiB) miss the caches: blur neighbours are then taken
# from the simplices' edges first (kernels.build_neighbors), which is slower for a small
# table than looking every one up.
EDGE_TABLE_SLOTS = 1 << 20


def hash_vertices(
    rem0: np.ndarray, rank: np.ndarray, shares: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, VertexShares]:
    """The vertices of every point's simplex: offsets (N, d+1) int32 into keys (M, d)
    int32, numbered in order of first appearance, the hash table of the keys, and how
    ``shares`` consecutive ranges of points (default: :func:`thread_shares`) touch them.

    The ranges are hashed each on its own (in parallel for large inputs), then merged in
    order: the numbering, and so every result, is that of one serial pass whatever the
    count, and the merge shows which vertices several ranges touch.
    """
    n = rem0.shape[0]
    shares = max(1, min(thread_shares() if shares is None else shares, n))
    bounds = [i * n // shares for i in range(shares + 1)]
    offsets = np.empty(rem0.shape, np.int32)

    workers = min(shares, numba.get_num_threads(), n // MIN_POINTS_PER_RANGE)
    if workers > 1:
        return _hash_in_parallel(rem0, rank, bounds, offsets, workers)
    # One thread: each range goes on in the same table, marking the vertices it meets
    # again.
    keys = np.empty((0, rem0.shape[1] - 1), np.int32)
    table = np.empty(0, np.int64)
    before = [0]
    numbers = []
    m = 0
    for i in range(shares):
        seen = np.zeros(m, np.uint8)
        keys, table, m_next, lowest = kernels.insert_range(
            rem0, rank, bounds[i], bounds[i + 1], 0, n, offsets, keys, table, m, seen
        )
        if i > 0:
            numbers.append((int(lowest), np.flatnonzero(seen), m_next > m))
        m = m_next
        before.append(m)
    shares_of = VertexShares.from_seen(before, numbers, m)
    return offsets, keys[:m].copy(), table, shares_of


def _hash_in_parallel(
    rem0: np.ndarray, rank: np.ndarray, bounds: list[int], offsets: np.ndarray, workers: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, VertexShares]:
    """Ranges hashed each on its own thread, then merged into the first in order."""
    d = rem0.shape[1] - 1
    no_keys, no_table, no_seen = (
        np.empty((0, d), np.int32),
        np.empty(0, np.int64),
        np.empty(0, np.uint8),
    )

    def insert(i: int) -> tuple[np.ndarray, np.ndarray, int, int]:
        # The first range's table takes in all the others: sized for every point.
        first, last = (0, bounds[-1]) if i == 0 else (bounds[i], bounds[i + 1])
        return kernels.insert_range(
            rem0, rank, bounds[i], bounds[i + 1], first, last, offsets, no_keys, no_table, 0,
            no_seen,
        )  # fmt: skip

    # The kernel releases the GIL: the ranges run on threads of their own.
    with ThreadPoolExecutor(workers) as pool:
        parts = list(pool.map(insert, range(len(bounds) - 1)))
    keys, table, m, _ = parts[0]
    before = [0, m]
    numbers = []
    for i in range(1, len(parts)):
        part_keys, _, part_m, _ = parts[i]
        table, keys, m_next, got = kernels.merge_range(
            table, keys, m, part_keys, part_m, offsets, bounds[i], bounds[i + 1]
        )
        old = got[got < m]
        lowest = int(got.min()) if got.size else m
        numbers.append((lowest, old, m_next > m))
        m = m_next
        before.append(m)
    return offsets, keys[:m].copy(), table, VertexShares.from_seen(before, numbers, m)


class PermutohedralLattice:
    """A lattice built once for N points with d features; filter many signals over it.

    features: (N, d) floats, already divided by the Gaussian's standard deviations
    (e.g. ``(x/theta_alpha, y/theta_alpha, r/theta_beta, g/theta_beta, b/theta_beta)``).
    """

    def __init__(self, features: np.ndarray) -> None:
        feats = as_float32_2d(features, "features")
        n, d = feats.shape
        if n == 0:
            raise ValueError("features: need at least one point, got shape (0, d)")
        if d == 0:
            raise ValueError("features: need at least one feature dimension, got shape (N, 0)")
        if d > 100:
            raise ValueError(f"features: {d} dimensions is more than the lattice supports (100)")
        with adapted_threads():
            self._build(feats)
        log.debug("lattice: %d points, d=%d, %d vertices", n, d, self.num_vertices)

    def _build(self, feats: np.ndarray) -> None:
        n, d = feats.shape
        rem0, rank, weights, overflow = kernels.simplex_keys(feats)
        check_lattice_range(int(overflow))
        offsets, keys, table, shares = hash_vertices(rem0, rank)
        del rem0
        #: Which vertices the scatter shares of the mean-field pass touch.
        self.vertex_shares = shares
        self.num_points = n
        self.dim = d
        #: (N, d+1) vertex index and barycentric weight of each simplex corner.
        self.offsets = offsets
        self.weights = weights
        self.num_vertices = keys.shape[0]
        #: (d+1, M, 2) blur neighbours; M is the all-zero row.
        if table.size < EDGE_TABLE_SLOTS:  # look-ups in a cached table are cheap enough
            self.neighbors = kernels.build_neighbors(keys, table, offsets[:0], rank[:0])
        else:
            self.neighbors = kernels.build_neighbors(keys, table, offsets, rank)
        del keys, table, rank
        #: The reference's scale of the blurred result, 1 / (1 + 2^-d).
        self.alpha = float(1.0 / (1.0 + 2.0 ** (-d)))

    def blur(
        self, values: np.ndarray, tmp: np.ndarray | None = None, reverse: bool = False
    ) -> None:
        """Blur lattice values (M+1, C) in place along all d+1 axes (``tmp``: scratch)."""
        scratch = np.empty_like(values) if tmp is None else tmp[: values.shape[0]]
        kernels.blur(values, scratch, self.neighbors, reverse)
        if (self.dim + 1) % 2 == 1:  # an odd number of ping-pong passes ends in the scratch
            values[:] = scratch

    def splat_blur(
        self,
        values: np.ndarray,
        out: np.ndarray,
        *,
        weights: np.ndarray | None = None,
        reverse: bool = False,
    ) -> None:
        """Splat (N, C) values with ``weights`` (N, d+1) (default: barycentric) into
        ``out`` (M+1, C) and blur them there."""
        w = self.weights if weights is None else weights
        private = np.empty((thread_shares(), *out.shape), np.float32)
        kernels.splat(values, self.offsets, w, private)
        kernels.reduce_private(private, out)
        self.blur(out, reverse=reverse)

    def filter_ones(self) -> np.ndarray:
        """The filter of a signal of ones, ``K 1`` (N,) float32: what normalisation divides
        by. The same as ``filter(np.ones(N))`` without reading or multiplying the ones."""
        buf = np.empty((self.num_vertices + 1, 1), np.float32)
        out = np.empty(self.num_points, np.float32)
        with adapted_threads():
            private = np.empty((thread_shares(), buf.shape[0]), np.float32)
            kernels.splat_ones(self.offsets, self.weights, private, buf[:, 0])
            self.blur(buf)
            kernels.slice_sum(buf, self.offsets, self.weights, np.float32(self.alpha), out)
        return out

    def filter(self, values: np.ndarray, *, reverse: bool = False) -> np.ndarray:
        """Gaussian-filter a signal over the points: (N,) or (N, C) in, float32 out.

        ``reverse=True`` blurs the axes in the opposite order: the adjoint filter.
        """
        vals = np.asarray(values)
        squeeze = vals.ndim == 1
        vals2 = as_float32_2d(vals[:, None] if squeeze else vals, "values")
        if vals2.shape[0] != self.num_points:
            raise ValueError(
                f"values: expected {self.num_points} rows (one per lattice point), "
                f"got shape {vals.shape}"
            )
        buf = np.empty((self.num_vertices + 1, vals2.shape[1]), np.float32)
        out = np.empty_like(vals2)
        with adapted_threads():
            self.splat_blur(vals2, buf, reverse=reverse)
            slice_w = self.weights * np.float32(self.alpha)
            kernels.slice_into(buf, self.offsets, slice_w, out, False)
        return out[:, 0] if squeeze else out
