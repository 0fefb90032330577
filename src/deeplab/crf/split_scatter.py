"""Scatter shares that write the lattice directly, with small private buffers only where
two shares meet.

Each mean-field update scatters every point's marginals onto the lattice vertices of its
simplex. The points are cut into T consecutive shares, one per thread slot
(:func:`deeplab.crf.threads.thread_shares`), and no two threads may add to one row at
once. Giving every share a whole private copy of the lattice costs T zeroings and a sum
of T lattice-sized buffers per update: 5 % of a call on two idle cores, and the gap
between two shares and one thread on a busy machine.

Vertices are numbered in order of first appearance, so the rows a share touches are
mostly its own: touched by no other share. Those it writes in place. A row touched by
several shares (near the boundaries between them) goes, for each such share, to a row of
that share's overlap region past the lattice rows; after the pass the overlap rows are
added up in share order into the lattice row. Every row thus receives the same sums in
the same order as with private copies: results are bit-identical to them.

The same corner indices serve the slice of the next update: each share first copies the
blurred values of its shared rows into its overlap region (``spread``), and reads them
there.

Per share t and lattice block b (one block per kernel):
``zero_lo[t, b] : zero_hi[t, b]`` are the rows only t may write in place (it zeroes them
before scattering; the last share's include the block's all-zero row);
``overlap[t, b] = (first row, first shared index, count)`` is its overlap region;
``shared_rows[j]`` is the lattice row of shared index j.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

CHUNK = 256
# Work items per share while the split is built (so that all threads take part).
PIECES = 8


@dataclass(frozen=True)
class ScatterSplit:
    """Corner indices (N, S) int32 into ``rows`` lattice rows (the R stacked rows and the
    overlap regions), and where each of ``shares`` shares writes."""

    offsets: np.ndarray
    rows: int
    zero_lo: np.ndarray  # (T, B) int64
    zero_hi: np.ndarray  # (T, B) int64
    overlap: np.ndarray  # (T, B, 3) int64: first row, first shared index, count
    shared_rows: np.ndarray  # (S,) int64

    @property
    def shares(self) -> int:
        return int(self.zero_lo.shape[0])


@dataclass(frozen=True)
class VertexShares:
    """How the points of one lattice, cut into ``len(lowest)`` shares, touch its vertices:
    what the lattice's build learns for free (:func:`deeplab.crf.lattice.hash_vertices`).

    bounds (T+1,): share t first touches vertices bounds[t] .. bounds[t+1]-1;
    lowest / highest (T,): the lowest and highest vertex each share touches;
    shared (S,): sorted vertices touched by more than one share; index (M,) int32: a
    vertex's position in ``shared``, or -1.
    """

    bounds: np.ndarray
    lowest: np.ndarray
    highest: np.ndarray
    shared: np.ndarray
    index: np.ndarray

    @property
    def shares(self) -> int:
        return int(self.lowest.size)

    @classmethod
    def from_seen(
        cls, bounds: list[int], later: list[tuple[int, np.ndarray, bool]], num_vertices: int
    ) -> VertexShares:
        """From the vertex count before each range (bounds, T+1, the total last) and, for
        each later range in order, (the lowest vertex it touches, the earlier ranges'
        vertices it touches, whether it added any)."""
        shares = len(bounds) - 1
        lowest = np.full(shares, np.iinfo(np.int64).max, np.int64)
        highest = np.full(shares, -1, np.int64)
        if bounds[1] > 0:
            lowest[0], highest[0] = 0, bounds[1] - 1
        flag = np.zeros(num_vertices, np.bool_)
        for t, (low, old, added) in enumerate(later, start=1):
            flag[old] = True
            if added:
                lowest[t], highest[t] = low, bounds[t + 1] - 1
            elif old.size:
                lowest[t], highest[t] = low, old.max()
        shared = np.flatnonzero(flag)
        index = np.full(num_vertices, -1, np.int32)
        index[shared] = np.arange(shared.size, dtype=np.int32)
        return cls(np.array(bounds, np.int64), lowest, highest, shared, index)


def _overlap_layout(
    rows: int, lowest: np.ndarray, highest: np.ndarray, shared_rows: np.ndarray
) -> np.ndarray:
    """(T, B, 3) overlap regions past ``rows``: share t's region in block b holds every
    shared row between the lowest and highest row it touches there."""
    lo = np.searchsorted(shared_rows, lowest)
    count = np.maximum(np.searchsorted(shared_rows, highest, side="right") - lo, 0)
    overlap = np.zeros((*count.shape, 3), np.int64)
    overlap[:, :, 0] = rows + (np.cumsum(count) - count.ravel()).reshape(count.shape)
    overlap[:, :, 1] = np.where(count > 0, lo, 0)
    overlap[:, :, 2] = count
    return overlap


def layout_from_vertices(
    block_rows: list[tuple[int, int]], vertex_shares: list[VertexShares]
) -> ScatterSplit:
    """The split of stacked blocks whose lattices all know their vertex shares (same
    count), without its offsets (``fill_term_columns`` writes them): offsets is empty."""
    first = np.array([b for b, _ in block_rows], np.int64)[None]
    rows = max(b + m for b, m in block_rows) + 1
    bounds = np.stack([v.bounds for v in vertex_shares], 1) + first  # (T+1, B)
    bounds[-1] += 1  # the last share also keeps the zero row zero
    lowest = np.stack([v.lowest for v in vertex_shares], 1)
    highest = np.stack([v.highest for v in vertex_shares], 1)
    lowest = np.where(highest >= 0, lowest + first, lowest)
    shared_rows = np.concatenate(
        [v.shared + b for v, (b, _) in zip(vertex_shares, block_rows, strict=True)]
    )
    overlap = _overlap_layout(rows, lowest, highest + first, shared_rows)
    empty = np.zeros((0, 0), np.int32)
    return ScatterSplit(
        empty, rows + int(overlap[:, :, 2].sum()), bounds[:-1].copy(), bounds[1:].copy(),
        overlap, shared_rows,
    )  # fmt: skip


def split_scatter(
    offsets: np.ndarray,
    column_block: np.ndarray,
    block_rows: list[tuple[int, int]],
    shares: int,
) -> ScatterSplit:
    """The split of stacked corners ``offsets`` (N, S) int32 among ``shares`` shares.

    column_block: (S,) block of each corner column; block_rows: per block, its first
    row and its row count M (the all-zero row M, which no point touches, excluded).
    Shares are the consecutive point ranges ``t*N//T : (t+1)*N//T``.
    """
    blocks = len(block_rows)
    first = np.array([b for b, _ in block_rows], np.int64)
    end = first + np.array([m for _, m in block_rows], np.int64)
    rows = int(end.max()) + 1 if blocks else 1
    cols = np.ascontiguousarray(column_block, np.int64)
    if shares <= 1:
        trivial = np.zeros((1, blocks, 3), np.int64)
        return ScatterSplit(
            offsets, rows, first[None], end[None] + 1, trivial, np.zeros(0, np.int64)
        )
    # Share t may write in place the rows past every row an earlier share touched.
    lowest = np.full((shares * PIECES, blocks), np.iinfo(np.int64).max, np.int64)
    highest = np.full((shares * PIECES, blocks), -1, np.int64)
    _touched_extents(offsets, cols, lowest, highest)
    lowest = lowest.reshape(shares, PIECES, blocks).min(1)
    highest = highest.reshape(shares, PIECES, blocks).max(1)
    bounds = np.empty((shares + 1, blocks), np.int64)
    bounds[0] = first
    bounds[shares] = end
    for t in range(1, shares):
        bounds[t] = np.minimum(np.maximum(bounds[t - 1], highest[t - 1] + 1), end)
    bounds[shares] += 1  # the last share also keeps the zero row zero
    # A row below a share's own start is also touched by an earlier share, or (were the
    # numbering not by first appearance) at least not written in place by anyone.
    flag = np.zeros(rows, np.uint8)
    _mark_shared(offsets, cols, bounds, flag)
    shared_rows = np.flatnonzero(flag)
    index = np.full(rows, -1, np.int32)
    index[shared_rows] = np.arange(shared_rows.size, dtype=np.int32)
    overlap = _overlap_layout(rows, lowest, highest, shared_rows)
    split = np.empty_like(offsets)
    _split_offsets(offsets, cols, index, overlap, split)
    return ScatterSplit(
        split, rows + int(overlap[:, :, 2].sum()), bounds[:-1].copy(), bounds[1:].copy(),
        overlap, shared_rows,
    )  # fmt: skip


@nb.njit(cache=True, nogil=True)
def _piece(n, shares, item):
    """Points of work item ``item``: piece ``item % PIECES`` of share ``item // PIECES``."""
    t = item // PIECES
    lo = t * n // shares
    size = (t + 1) * n // shares - lo
    i = item % PIECES
    return t, lo + i * size // PIECES, lo + (i + 1) * size // PIECES


@nb.njit(cache=True, nogil=True, parallel=True)
def _touched_extents(offsets, column_block, lowest, highest):
    """lowest/highest[item, b]: the lowest and highest row of block b touched by the
    points of a work item (:func:`_piece`)."""
    n, s = offsets.shape
    items = lowest.shape[0]
    shares = items // PIECES
    for item in nb.prange(items):
        _, k0, k1 = _piece(n, shares, item)
        for k in range(k0, k1):
            for r in range(s):
                v = offsets[k, r]
                b = column_block[r]
                lowest[item, b] = min(lowest[item, b], v)
                highest[item, b] = max(highest[item, b], v)


@nb.njit(cache=True, nogil=True, parallel=True)
def _mark_shared(offsets, column_block, bounds, flag):
    """flag[v] = 1 for every row a share t touches below its own start bounds[t]."""
    n, s = offsets.shape
    shares = bounds.shape[0] - 1
    for item in nb.prange(PIECES, shares * PIECES):  # share 0 starts at the first row
        t, k0, k1 = _piece(n, shares, item)
        for k in range(k0, k1):
            for r in range(s):
                v = offsets[k, r]
                if v < bounds[t, column_block[r]]:
                    flag[v] = 1  # threads may race here, all writing the same value


@nb.njit(cache=True, nogil=True, parallel=True)
def _split_offsets(offsets, column_block, index, overlap, out):
    """out[k, r]: offsets[k, r], or its row in the overlap region of k's share."""
    n, s = offsets.shape
    shares = overlap.shape[0]
    for item in nb.prange(shares * PIECES):
        t, k0, k1 = _piece(n, shares, item)
        for k in range(k0, k1):
            for r in range(s):
                v = offsets[k, r]
                j = index[v]
                if j >= 0:
                    b = column_block[r]
                    v = overlap[t, b, 0] + j - overlap[t, b, 1]
                out[k, r] = v


@nb.njit(cache=True, nogil=True)
def spread(values, overlap, shared_rows, t):
    """Share t's overlap rows of ``values`` (rows, C) = the lattice rows they stand for."""
    c = values.shape[1]
    for b in range(overlap.shape[1]):
        first = overlap[t, b, 0]
        j0 = overlap[t, b, 1]
        for i in range(overlap[t, b, 2]):
            row = shared_rows[j0 + i]
            for ch in range(c):
                values[first + i, ch] = values[row, ch]


@nb.njit(cache=True, nogil=True)
def clear_share(values, zero_lo, zero_hi, overlap, t):
    """Zero the rows share t writes: its in-place rows and its overlap region."""
    c = values.shape[1]
    for b in range(zero_lo.shape[1]):
        for v in range(zero_lo[t, b], zero_hi[t, b]):
            for ch in range(c):
                values[v, ch] = 0.0
        first = overlap[t, b, 0]
        for v in range(first, first + overlap[t, b, 2]):
            for ch in range(c):
                values[v, ch] = 0.0


# No fast-math: the sums must run in share order, as the private copies' did.
@nb.njit(cache=True, nogil=True, parallel=True)
def gather_overlaps(values, overlap, shared_rows):
    """values[shared_rows[j]] = the sum, in share order, of the overlap rows standing for
    shared index j: the scatter's result for the rows several shares touch."""
    c = values.shape[1]
    shares, blocks = overlap.shape[0], overlap.shape[1]
    total = shared_rows.size
    for ch in nb.prange((total + CHUNK - 1) // CHUNK):
        acc = np.empty(c, np.float32)
        for j in range(ch * CHUNK, min(total, (ch + 1) * CHUNK)):
            acc[:] = 0.0
            for t in range(shares):
                for b in range(blocks):
                    i = j - overlap[t, b, 1]
                    if 0 <= i < overlap[t, b, 2]:
                        row = overlap[t, b, 0] + i
                        for x in range(c):
                            acc[x] += values[row, x]
            row = shared_rows[j]
            for x in range(c):
                values[row, x] = acc[x]
