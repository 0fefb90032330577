"""Compiled CPU kernels of the permutohedral lattice and the mean-field update.

Values are stored point-major, (N, C) float32, so that the innermost work always runs
over contiguous channels; rows of a multiple of 4 channels go through the explicit vector
operations of :mod:`deeplab.crf.simd`, others through plain loops. Every lattice array
keeps one extra all-zero row at index M: a missing blur neighbour points there, which
removes a branch from the blur loop (Adams et al. 2010, section 4; the reference code
shifts indices by one for the same reason).

Splatting scatters each thread's share of the points into a lattice buffer of its own
(no two threads write one row), then the buffers are summed: results depend on the
thread count only through float rounding. Loops run over chunks so that scratch rows are
allocated once per chunk, not once per point.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from llvmlite import ir as llvmir
from numba.core import types
from numba.extending import intrinsic

from deeplab.crf.prefetch import prefetch, prefetch_row
from deeplab.crf.simd import (
    blur_point,
    gather_point,
    normalize_row,
    scatter_point,
    subtract_row,
    whole_lanes,
)
from deeplab.crf.simd import row_max as row_maximum
from deeplab.crf.split_scatter import clear_share, spread
from deeplab.crf.validation import MAX_LATTICE_COORD

_JIT = {"cache": True, "nogil": True}
_PAR = {"cache": True, "nogil": True, "parallel": True, "fastmath": True}
# Lattice coordinates decide which simplex a point falls in: no fast-math reassociation
# or fused multiply-adds there, so boundary cases match the reference.
_PAR_EXACT = {"cache": True, "nogil": True, "parallel": True}

CHUNK = 1024
# Lattice values (rows x labels) below which the blur runs on one thread.
SERIAL_BLUR_LIMIT = 1 << 18
# Hash look-ups prepared (and their memory asked for) before any of them is resolved.
LOOKUP_BATCH = 64
# Vertices (or points) ahead whose lattice rows are asked for while one is worked on.
PREFETCH_AHEAD = 16
# Lattice values from this size on (beyond what the caches keep) are prefetched.
PREFETCH_BYTES = 16 << 20
# Hash tables from this many slots on (8 MiB) have their slots prefetched, this many
# points ahead.
PREFETCH_SLOTS = 1 << 20
PREFETCH_POINTS = 4
# Points whose simplex vertices are hashed together (their memory asked for first).
HASH_BATCH = 8
# Points per block of the fused mean-field pass (its scratch stays in L1).
BLOCK = 64

# exp(x) for x <= 0 as 2^n * p(r): float32 constants keep the arithmetic single precision.
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_EXP_FLOOR = np.float32(-87.0)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_ZERO = np.float32(0.0)
_C2 = np.float32(1.0 / 2.0)
_C3 = np.float32(1.0 / 6.0)
_C4 = np.float32(1.0 / 24.0)
_C5 = np.float32(1.0 / 120.0)
_C6 = np.float32(1.0 / 720.0)

# Padding labels get this energy: their probability is exactly 0 (see _exp_nonpositive).
PAD_ENERGY = np.float32(-1e30)


@intrinsic
def _int32_bits_as_float32(typingctx, bits):
    """Reinterpret an int32's bits as a float32 (vectorises, unlike ldexp)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvmir.FloatType())

    return sig, codegen


@nb.njit(**_JIT)
def _exp_nonpositive(x):
    """exp(x) for x <= 0 in float32: 2^n * p(r) after range reduction, p a degree-6
    polynomial (relative error < 2e-7); exactly 0 below -87. Inlines and vectorises."""
    xc = max(x, _EXP_FLOOR)
    n = np.floor(xc * _LOG2E + _HALF)
    r = xc - n * _LN2_HI - n * _LN2_LO
    p = _ONE + r * (_ONE + r * (_C2 + r * (_C3 + r * (_C4 + r * (_C5 + r * _C6)))))
    scale = _int32_bits_as_float32((np.int32(n) + np.int32(127)) << np.int32(23))
    return p * scale if x >= _EXP_FLOOR else _ZERO


@nb.njit(**_JIT)
def _softmax_block(e, out, row_max, known_shift=False):
    """out = softmax of each row of e (B, C), C a multiple of 4 (:func:`check_width`);
    row_max: (>= B,) scratch, or with ``known_shift`` each row's shift: any value at least
    the row's maximum and less than about 80 above it gives the same softmax (the exponents
    stay in float32's range).

    The exponentials run as one loop over the whole block: rows of a few dozen labels are
    too short for the vectoriser, a block of them is not.
    """
    rows, c = e.shape
    if not known_shift:
        for b in range(rows):
            row_max[b] = row_maximum(e, b)
    for b in range(rows):
        subtract_row(out, e, b, row_max[b])
    flat = out.reshape(rows * c)
    for i in range(rows * c):
        flat[i] = _exp_nonpositive(flat[i])
    for b in range(rows):
        normalize_row(out, b)


@nb.njit(**_JIT)
def check_width(values):
    """Refuse label rows that the vector operations cannot cover whole (the mean-field
    kernels' contract: labels padded to a multiple of 4, see ``meanfield.padded_width``)."""
    if not whole_lanes(values.shape[1]):
        raise ValueError("label rows must be padded to a multiple of 4 floats")


@nb.njit(**_PAR)
def softmax_rows(energy, out):
    """out[k] = softmax(energy[k]) for (N, C) float32 arrays, C a multiple of 4."""
    check_width(energy)
    n = energy.shape[0]
    for ch in nb.prange((n + BLOCK - 1) // BLOCK):
        lo = ch * BLOCK
        hi = min(n, lo + BLOCK)
        row_max = np.empty(BLOCK, np.float32)
        _softmax_block(energy[lo:hi], out[lo:hi], row_max)


@nb.njit(**_PAR)
def pad_transpose(src, sign, dst):
    """dst (N, W) = sign * src.T for src (L, N), padding labels L..W-1 with PAD_ENERGY."""
    labels, n = src.shape
    width = dst.shape[1]
    # Blocks of BLOCK points: the L source rows of a block stay in L1 while each
    # destination row is written whole; writing label by label (a store every W floats)
    # ran 7x slower.
    for ch in nb.prange((n + BLOCK - 1) // BLOCK):
        lo = ch * BLOCK
        hi = min(n, lo + BLOCK)
        for k in range(lo, hi):
            row = dst[k]
            for j in range(labels):
                row[j] = sign * src[j, k]
            for j in range(labels, width):
                row[j] = PAD_ENERGY


@nb.njit(**_PAR)
def row_maxima(values, out):
    """out[k] = max_j values[k, j] for (N, C) float32 values, C a multiple of 4."""
    check_width(values)
    n = values.shape[0]
    for ch in nb.prange((n + CHUNK - 1) // CHUNK):
        for k in range(ch * CHUNK, min(n, (ch + 1) * CHUNK)):
            out[k] = row_maximum(values, k)


@nb.njit(**_PAR)
def transpose(src, dst):
    """dst (L, N) = src[:, :L].T for src (N, W)."""
    labels, n = dst.shape
    for ch in nb.prange((n + BLOCK - 1) // BLOCK):
        lo = ch * BLOCK
        hi = min(n, lo + BLOCK)
        for j in range(labels):
            for k in range(lo, hi):
                dst[j, k] = src[k, j]


@nb.njit(**_PAR)
def fill_term_columns(
    offsets, weights, base, in_scale, out_scale, coef, col, all_offsets, splat_w, slice_w,
    slice_only, shared_index, overlap_first, overlap_lo, split,
):  # fmt: skip
    """Write one kernel's corners into columns col..col+d of the stacked (N, S) arrays:
    offsets shifted by ``base`` rows, splat weights times in_scale (if any), slice weights
    times coef and out_scale (if any); with ``slice_only`` the slice weights alone.

    With a non-empty ``shared_index`` (M,) (the vertex's shared index or -1, see
    :mod:`deeplab.crf.split_scatter`), ``split`` gets the corners the scatter shares
    write in place of ``all_offsets``: a shared vertex of a point of share t goes to row
    ``overlap_first[t] + shared_index[v] - overlap_lo[t]``.
    """
    n, d1 = offsets.shape
    has_in = in_scale.size > 0
    has_out = out_scale.size > 0
    shares = overlap_first.size
    for ch in nb.prange((n + CHUNK - 1) // CHUNK):
        t = 0
        share_end = n // shares if shares > 0 else n
        for k in range(ch * CHUNK, min(n, (ch + 1) * CHUNK)):
            b = coef * out_scale[k] if has_out else coef
            for r in range(d1):
                slice_w[k, col + r] = weights[k, r] * b
            if slice_only:
                continue
            a = in_scale[k] if has_in else _ONE
            for r in range(d1):
                splat_w[k, col + r] = weights[k, r] * a
            if shared_index.size == 0:
                for r in range(d1):
                    all_offsets[k, col + r] = offsets[k, r] + base
                continue
            while share_end <= k:  # the share point k belongs to
                t += 1
                share_end = (t + 1) * n // shares
            first = overlap_first[t] - overlap_lo[t]
            for r in range(d1):
                v = offsets[k, r]
                j = shared_index[v]
                split[k, col + r] = v + base if j < 0 else first + j


@nb.njit(**_PAR)
def shift_columns(offsets, base, col, all_offsets):
    """all_offsets[:, col:col+d+1] = offsets (N, d+1) + base: one kernel's stacked corners."""
    n, d1 = offsets.shape
    for ch in nb.prange((n + CHUNK - 1) // CHUNK):
        for k in range(ch * CHUNK, min(n, (ch + 1) * CHUNK)):
            for r in range(d1):
                all_offsets[k, col + r] = offsets[k, r] + base


@nb.njit(**_PAR_EXACT)
def image_features(image, width, theta_pos, theta_col, out):
    """out (H*W, 2 or 5) = (x, y) / theta_pos, then, with 5 columns, (r, g, b) of the
    (H, W, 3) image / theta_col: each a float32 division as numpy does it (no fast-math:
    lattices are built from these values and must see the reference's)."""
    height = out.shape[0] // width
    colour = out.shape[1] == 5
    for y in nb.prange(height):
        fy = np.float32(y) / theta_pos
        for x in range(width):
            k = y * width + x
            out[k, 0] = np.float32(x) / theta_pos
            out[k, 1] = fy
            if colour:
                for c in range(3):
                    out[k, 2 + c] = np.float32(image[y, x, c]) / theta_col


# -- lattice construction ---------------------------------------------------------------


@nb.njit(**_JIT)
def _hash(key) -> np.uint64:
    h = np.uint64(0)
    for v in key:
        h = (h + np.uint64(v & 0xFFFFFFFF)) * np.uint64(0x9E3779B97F4A7C15)
    return h ^ (h >> np.uint64(31))


# Hash table entries pack a 31-bit fingerprint of the key's hash above the vertex index,
# so most probes that miss are rejected without reading the key; -1 marks an empty slot.
_IDX_MASK = np.int64(0xFFFFFFFF)


@nb.njit(**_JIT)
def _fingerprint(h) -> np.int64:
    return np.int64((h >> np.uint64(33)) & np.uint64(0x7FFFFFFF))


@nb.njit(**_JIT)
def _probe(table, keys, key, hv, mask):
    """Open-addressing search for ``key`` (hash ``hv``): (its index or -1, the slot where
    the search stopped, which is where an absent key goes)."""
    fp = _fingerprint(hv)
    h = hv & mask
    d = key.size
    while True:
        entry = table[h]
        if entry < 0:
            return np.int64(-1), h
        if (entry >> np.int64(32)) == fp:
            e = entry & _IDX_MASK
            same = True
            for i in range(d):
                if keys[e, i] != key[i]:
                    same = False
                    break
            if same:
                return e, h
        h = (h + np.uint64(1)) & mask


@nb.njit(**_JIT)
def _lookup(table, keys, key) -> int:
    """Index of ``key`` in the open-addressing table, or -1."""
    return _probe(table, keys, key, _hash(key), np.uint64(table.size - 1))[0]


@nb.njit(**_JIT)
def _rehash(keys, m, cap):
    table = np.full(cap, -1, np.int64)
    mask = np.uint64(cap - 1)
    far = cap >= PREFETCH_SLOTS
    for e in range(m):
        if far and e + 4 * PREFETCH_POINTS < m:
            prefetch(table, _hash(keys[e + 4 * PREFETCH_POINTS]) & mask)
        hv = _hash(keys[e])
        h = hv & mask
        while table[h] >= 0:
            h = (h + np.uint64(1)) & mask
        table[h] = (_fingerprint(hv) << np.int64(32)) | np.int64(e)
    return table


@nb.njit(**_PAR_EXACT)
def simplex_keys(features):
    """Enclosing simplex of every point (Adams et al. 2010, pp. 5-10).

    features: (N, d) float32. Returns the remainder-0 vertex rem0 (N, d+1) int32 and the
    rank (N, d+1) int8 that together name the simplex (vertex r has the coordinates
    rem0 + canonical[r, rank]), barycentric weights (N, d+1) float32, and the number of
    points whose coordinates overflow.
    """
    n, d = features.shape
    d1 = d + 1
    # Single precision throughout, in the reference's order of operations: points near a
    # simplex boundary then fall on the same side as in pydensecrf.
    scale = np.empty(d, np.float32)
    # The reference keeps inv_std in a C float and multiplies in double: a scale 1 ulp off
    # moves points across simplex boundaries and changes the set of lattice vertices.
    inv_std = float(np.float32(math.sqrt(2.0 / 3.0) * d1))
    for i in range(d):
        scale[i] = 1.0 / math.sqrt((i + 2.0) * (i + 1.0)) * inv_std
    down = np.float32(1.0 / d1)
    simplex_rem0 = np.empty((n, d1), np.int32)
    simplex_rank = np.empty((n, d1), np.int8)
    weights = np.empty((n, d1), np.float32)
    overflow = np.zeros(n, np.uint8)
    for ch in nb.prange((n + CHUNK - 1) // CHUNK):
        elevated = np.empty(d1, np.float32)
        rem0 = np.empty(d1, np.int64)
        rank = np.empty(d1, np.int64)
        bary = np.empty(d + 2, np.float32)
        resid = np.empty(d1, np.float32)
        for k in range(ch * CHUNK, min(n, (ch + 1) * CHUNK)):
            # Elevate onto the hyperplane sum(x) = 0.
            sm = np.float32(0.0)
            for j in range(d, 0, -1):
                cf = features[k, j - 1] * scale[j - 1]
                elevated[j] = sm - np.float32(j) * cf
                sm += cf
            elevated[0] = sm
            big = False
            for j in range(d1):
                if not abs(elevated[j]) <= MAX_LATTICE_COORD:
                    big = True
            if big:
                overflow[k] = 1
                for r in range(d1):
                    weights[k, r] = 0.0
                    simplex_rem0[k, r] = 0
                    simplex_rank[k, r] = r
                continue
            # Nearest remainder-0 point, then the simplex that contains the point.
            total = 0
            for i in range(d1):
                v = np.rint(elevated[i] * down)
                rem0[i] = np.int64(v) * d1
                total += np.int64(v)
            for i in range(d1):
                rank[i] = 0
            # Ranks of the residuals, counted without branches (the comparisons are
            # unpredictable: a third of the time went to mispredicted jumps).
            for i in range(d1):
                resid[i] = elevated[i] - np.float32(rem0[i])
            for i in range(d):
                for j in range(i + 1, d1):
                    below = np.int64(resid[i] < resid[j])
                    rank[i] += below
                    rank[j] += 1 - below
            for i in range(d1):
                rank[i] += total
                if rank[i] < 0:
                    rank[i] += d1
                    rem0[i] += d1
                elif rank[i] > d:
                    rank[i] -= d1
                    rem0[i] -= d1
            for i in range(d + 2):
                bary[i] = 0.0
            for i in range(d1):
                v = (elevated[i] - np.float32(rem0[i])) * down
                bary[d - rank[i]] += v
                bary[d - rank[i] + 1] -= v
            bary[0] += np.float32(1.0) + bary[d + 1]
            for r in range(d1):
                weights[k, r] = bary[r]
                simplex_rem0[k, r] = rem0[r]
                simplex_rank[k, r] = rank[r]
    return simplex_rem0, simplex_rank, weights, int(overflow.sum())


@nb.njit(**_JIT)
def _canonical(d1):
    """Row r: the offsets from rem0 of a simplex's vertex r, indexed by rank."""
    canonical = np.empty((d1, d1), np.int32)
    for i in range(d1):
        for j in range(d1 - i):
            canonical[i, j] = i
        for j in range(d1 - i, d1):
            canonical[i, j] = i - d1
    return canonical


@nb.njit(**_JIT)
def _grown_capacity(cap, m, done, total):
    """Table slots for growth past half full: the vertices projected from the ``done`` of
    ``total`` points served so far (at least twice, at most eight times ``cap``), so a
    growing lattice is rehashed about once, not at every doubling."""
    projected = (m + 1) * total // max(done, 1)
    new_cap = 2 * cap
    while new_cap < 2 * (projected + 1) and new_cap < 8 * cap:
        new_cap *= 2
    return new_cap


@nb.njit(**_JIT)
def _grow(keys, m, cap):
    grown = np.empty((cap // 2 + 1, keys.shape[1]), np.int32)
    grown[:m] = keys[:m]
    return grown, _rehash(grown, m, cap)


@nb.njit(**_JIT, inline="always")
def _same_simplex(simplex_rem0, simplex_rank, k):
    """Whether point k lies in the same simplex as point k-1 (it then has its offsets)."""
    for i in range(simplex_rem0.shape[1]):
        if (
            simplex_rem0[k, i] != simplex_rem0[k - 1, i]
            or simplex_rank[k, i] != simplex_rank[k - 1, i]
        ):
            return False
    return True


@nb.njit(**_JIT)
def insert_range(simplex_rem0, simplex_rank, k0, k1, first, last, offsets, keys, table, m, seen):
    """Hash the simplex vertices of points k0..k1-1: their offsets (rows k0..k1-1 of the
    (N, d+1) int32 ``offsets``) into the keys found, numbered in order of first
    appearance. Returns the keys buffer (its first m rows are the keys), the table, m and
    the lowest vertex the range touches.

    Starts from the first m keys of ``keys`` and their ``table`` (a new table where the
    table is empty) and marks in ``seen`` (m,) the vertices among those the range touches.
    The table serves points ``first..last-1`` in all (it is sized from them).
    """
    d = simplex_rem0.shape[1] - 1
    if table.size == 0:
        # Start small and grow: lattices have far fewer vertices than points x corners,
        # and a table that fits in cache makes every probe cheaper.
        cap = 1024
        while cap < (last - first) // 4:
            cap *= 2
        table = np.full(cap, -1, np.int64)
        keys = np.empty((cap // 2 + 1, d), np.int32)
        m = 0
    lowest = np.int64(m)
    k, keys, table, m_next, lowest = _insert_cached(
        simplex_rem0, simplex_rank, k0, k1, first, last, offsets, keys, table, m, m, seen, lowest
    )
    if k < k1:
        keys, table, m_next, lowest = _insert_batched(
            simplex_rem0, simplex_rank, k, k1, k0, first, last, offsets, keys, table, m_next, m,
            seen, lowest,
        )  # fmt: skip
    return keys, table, m_next, lowest


@nb.njit(**_JIT)
def _insert_cached(
    simplex_rem0, simplex_rank, k0, k1, first, last, offsets, keys, table, m, m0, seen, lowest
):
    """:func:`insert_range` point by point while the table fits in the caches; returns
    the point it stopped at (k1, or the first after the table outgrew them), keys, table,
    m and the lowest vertex touched. Neighbouring points usually lie in the same simplex;
    such a point reuses the previous point's offsets without touching the table."""
    d1 = simplex_rem0.shape[1]
    d = d1 - 1
    canonical = _canonical(d1)
    cap = table.size
    key = np.empty(d, np.int32)
    for k in range(k0, k1):
        if cap >= PREFETCH_SLOTS:
            return k, keys, table, m, lowest
        if k > k0 and _same_simplex(simplex_rem0, simplex_rank, k):
            for r in range(d1):
                offsets[k, r] = offsets[k - 1, r]
            continue
        for r in range(d1):
            for i in range(d):
                key[i] = simplex_rem0[k, i] + canonical[r, simplex_rank[k, i]]
            # The probe and insert written out, not a helper: even inlined, a helper taking
            # the key row made image hashing a third slower (12 -> 16 ms at 500x375).
            if 2 * (m + 1) > cap:
                cap = _grown_capacity(cap, m, k - first + 1, last - first)
                keys, table = _grow(keys, m, cap)
            hv = _hash(key)
            found, h = _probe(table, keys, key, hv, np.uint64(cap - 1))
            if found < 0:
                keys[m, :] = key
                table[h] = (_fingerprint(hv) << np.int64(32)) | np.int64(m)
                found = m
                m += 1
            elif found < m0:
                seen[found] = 1
                lowest = min(lowest, found)
            offsets[k, r] = found
    return k1, keys, table, m, lowest


@nb.njit(**_JIT)
def _insert_batched(
    simplex_rem0,
    simplex_rank,
    k_from,
    k1,
    k0,
    first,
    last,
    offsets,
    keys,
    table,
    m,
    m0,
    seen,
    lowest,
):
    """:func:`insert_range` from point k_from on (of a range from k0) with a table past
    the caches: points in batches, their keys and hashes first and every slot asked for,
    then the key rows the slots point at, then the probes, mostly on cached lines."""
    d1 = simplex_rem0.shape[1]
    d = d1 - 1
    canonical = _canonical(d1)
    cap = table.size
    batch_keys = np.empty((HASH_BATCH, d1, d), np.int32)
    batch_hashes = np.empty((HASH_BATCH, d1), np.uint64)
    repeats = np.zeros(HASH_BATCH, np.bool_)
    for b0 in range(k_from, k1, HASH_BATCH):
        b1 = min(k1, b0 + HASH_BATCH)
        mask = np.uint64(cap - 1)
        for k in range(b0, b1):
            j = k - b0
            same = k > k0 and _same_simplex(simplex_rem0, simplex_rank, k)
            repeats[j] = same
            if same:
                continue
            for r in range(d1):
                for i in range(d):
                    batch_keys[j, r, i] = simplex_rem0[k, i] + canonical[r, simplex_rank[k, i]]
                hv = _hash(batch_keys[j, r])
                batch_hashes[j, r] = hv
                prefetch(table, hv & mask)
        for j in range(b1 - b0):
            if not repeats[j]:
                for r in range(d1):
                    entry = table[batch_hashes[j, r] & mask]
                    if entry >= 0:
                        prefetch_row(keys, entry & _IDX_MASK)
        for k in range(b0, b1):
            j = k - b0
            if repeats[j]:
                for r in range(d1):
                    offsets[k, r] = offsets[k - 1, r]
                continue
            for r in range(d1):
                if 2 * (m + 1) > cap:
                    cap = _grown_capacity(cap, m, k - first + 1, last - first)
                    keys, table = _grow(keys, m, cap)
                hv = batch_hashes[j, r]
                found, h = _probe(table, keys, batch_keys[j, r], hv, np.uint64(cap - 1))
                if found < 0:
                    keys[m, :] = batch_keys[j, r]
                    table[h] = (_fingerprint(hv) << np.int64(32)) | np.int64(m)
                    found = m
                    m += 1
                elif found < m0:
                    seen[found] = 1
                    lowest = min(lowest, found)
                offsets[k, r] = found
    return keys, table, m, lowest


@nb.njit(**_JIT)
def merge_range(table, keys, m, part_keys, part_m, offsets, k0, k1):
    """Add the keys of a later range of points (numbered on their own by
    :func:`insert_range`) to the table, in their order: the numbering is then that of one
    pass over all points. Renumbers the range's offsets; returns table, keys, m and the
    range's keys' numbers (part_m,), those below the m passed in being earlier ranges'."""
    renumber = np.empty(part_m, np.int32)
    cap = table.size
    if 2 * (m + part_m + 1) > cap:  # one rehash for the most the range can add
        while 2 * (m + part_m + 1) > cap:
            cap *= 2
        keys, table = _grow(keys, m, cap)
    mask = np.uint64(cap - 1)
    far = cap >= PREFETCH_SLOTS
    hashes = np.empty(LOOKUP_BATCH, np.uint64)
    for b0 in range(0, part_m, LOOKUP_BATCH):
        b1 = min(part_m, b0 + LOOKUP_BATCH)
        for j in range(b0, b1):
            hv = _hash(part_keys[j])
            hashes[j - b0] = hv
            if far:
                prefetch(table, hv & mask)
        if far:
            for j in range(b0, b1):
                entry = table[hashes[j - b0] & mask]
                if entry >= 0:
                    prefetch_row(keys, entry & _IDX_MASK)
        for j in range(b0, b1):
            hv = hashes[j - b0]
            found, h = _probe(table, keys, part_keys[j], hv, mask)
            if found < 0:
                keys[m, :] = part_keys[j]
                table[h] = (_fingerprint(hv) << np.int64(32)) | np.int64(m)
                found = m
                m += 1
            renumber[j] = found
    for k in range(k0, k1):
        for r in range(offsets.shape[1]):
            offsets[k, r] = renumber[offsets[k, r]]
    return table, keys, m, renumber


@nb.njit(**_PAR)
def build_neighbors(keys, table, offsets, simplex_rank):
    """Blur neighbours of every vertex along each of the d+1 lattice axes.

    Returns (d+1, M, 2) int32; a missing neighbour is M (the zero row). The corners of a
    simplex form a cycle of neighbours, one step along each axis (corner r+1 is corner r
    moved along the axis whose coordinate has rank d-r, corner 0 is corner d moved along
    the axis of rank 0): those pairs come from the points' offsets (N, d+1) and ranks
    without a look-up, and only the rest are searched in the table.
    """
    m, d = keys.shape
    d1 = d + 1
    n = offsets.shape[0]
    nbrs = np.full((d1, m, 2), -1, np.int32)
    for ch in nb.prange((n + CHUNK - 1) // CHUNK):
        axis_of_rank = np.empty(d1, np.int64)
        lo = ch * CHUNK
        for k in range(lo, min(n, lo + CHUNK)):
            if k > lo:
                same = True
                for r in range(d1):
                    if offsets[k, r] != offsets[k - 1, r]:
                        same = False
                        break
                if same:
                    continue
            for j in range(d1):
                axis_of_rank[simplex_rank[k, j]] = j
            for r in range(d1):
                a = axis_of_rank[d - r]
                v = offsets[k, r]
                u = offsets[k, (r + 1) % d1]
                # Points of one simplex write the same values: the races are harmless.
                nbrs[a, v, 1] = u
                nbrs[a, u, 0] = v
    mask = np.uint64(table.size - 1)
    for ch in nb.prange((m + CHUNK - 1) // CHUNK):
        # Look-ups go in batches: every probe's table slot is asked for first, then the
        # key rows the slots point at, then the probes run, mostly on cached lines.
        probes = np.empty((LOOKUP_BATCH, d), np.int32)
        hashes = np.empty(LOOKUP_BATCH, np.uint64)
        where = np.empty((LOOKUP_BATCH, 3), np.int64)
        count = 0
        end = min(m, (ch + 1) * CHUNK)
        for v in range(ch * CHUNK, end):
            for axis in range(d1):
                for side in range(2):
                    if nbrs[axis, v, side] >= 0:
                        continue
                    step = -1 if side == 0 else 1
                    for i in range(d):
                        probes[count, i] = keys[v, i] + step
                    if axis < d:
                        probes[count, axis] = keys[v, axis] - step * d
                    h = _hash(probes[count])
                    hashes[count] = h
                    prefetch(table, h & mask)
                    where[count, 0] = axis
                    where[count, 1] = v
                    where[count, 2] = side
                    count += 1
            if count > LOOKUP_BATCH - 2 * d1 or (v == end - 1 and count > 0):
                for b in range(count):
                    entry = table[hashes[b] & mask]
                    if entry >= 0:
                        prefetch_row(keys, entry & _IDX_MASK)
                for b in range(count):
                    found = _probe(table, keys, probes[b], hashes[b], mask)[0]
                    a, u, side = where[b, 0], where[b, 1], where[b, 2]
                    if found >= 0:
                        nbrs[a, u, side] = found
                        # u is found's neighbour the other way: a later look-up spared
                        # (threads may race here, writing the same value).
                        nbrs[a, found, 1 - side] = u
                    else:
                        nbrs[a, u, side] = m
                count = 0
    return nbrs


# -- filtering ------------------------------------------------------------------------


@nb.njit(**_JIT)
def _zero(buf):
    rows, c = buf.shape
    for v in range(rows):
        for j in range(c):
            buf[v, j] = 0.0


@nb.njit(**_JIT)
def _scatter_row(buf, offsets, weights, k, row):
    """buf[offsets[k, s]] += weights[k, s] * row for every corner s of point k."""
    for r in range(offsets.shape[1]):
        o = offsets[k, r]
        w = weights[k, r]
        for j in range(row.size):
            buf[o, j] += w * row[j]


@nb.njit(**_JIT)
def _gather_block(e, neg_unary, lattice_values, offsets, weights, lo, hi, scatter_to):
    """e[b] = neg_unary[lo+b] + sum_s weights[k, s] * lattice_values[offsets[k, s]].

    The rows of a point further on are asked for meanwhile; ``scatter_to`` (the buffer
    the same corners are scattered into next, or an empty array) gets them too."""
    n, corners = offsets.shape
    if lattice_values.nbytes <= PREFETCH_BYTES:  # the caches keep it: hints only cost
        for b in range(hi - lo):
            gather_point(e, b, neg_unary, lattice_values, offsets, weights, lo + b)
        return
    for b in range(hi - lo):
        ahead = lo + b + PREFETCH_AHEAD
        if ahead < n:
            for r in range(corners):
                prefetch_row(lattice_values, offsets[ahead, r])
                if scatter_to.shape[0] > 0:
                    prefetch_row(scatter_to, offsets[ahead, r])
        gather_point(e, b, neg_unary, lattice_values, offsets, weights, lo + b)


@nb.njit(**_PAR)
def splat(values, offsets, weights, private):
    """Scatter (N, C) values onto the lattice: private[t, v] = the sum, over the points of
    thread t's share, of weights[k, s] * values[k] where offsets[k, s] = v.

    private: (T, R, C) float32, one buffer per share so no two threads write the same row;
    :func:`reduce_private` adds them up. Rows no point touches (the zero rows) stay zero.
    """
    n = values.shape[0]
    shares = private.shape[0]
    vector = whole_lanes(values.shape[1])
    for t in nb.prange(shares):
        buf = private[t]
        _zero(buf)
        for k in range(t * n // shares, (t + 1) * n // shares):
            if vector:
                scatter_point(buf, offsets, weights, k, values, k)
            else:
                _scatter_row(buf, offsets, weights, k, values[k])


@nb.njit(**_PAR)
def splat_ones(offsets, weights, private, out):
    """out[v] (R,) = the sum of weights[k, s] over the corners with offsets[k, s] = v: the
    splat of a signal of ones (the normaliser K 1), in private (T, R) buffers as
    :func:`splat`, then summed in share order."""
    n, d1 = offsets.shape
    shares, rows = private.shape
    for t in nb.prange(shares):
        buf = private[t]
        for v in range(rows):
            buf[v] = 0.0
        for k in range(t * n // shares, (t + 1) * n // shares):
            for r in range(d1):
                buf[offsets[k, r]] += weights[k, r]
    for ch in nb.prange((rows + CHUNK - 1) // CHUNK):
        for v in range(ch * CHUNK, min(rows, (ch + 1) * CHUNK)):
            acc = private[0, v]
            for t in range(1, shares):
                acc += private[t, v]
            out[v] = acc


@nb.njit(**_PAR)
def slice_sum(lattice_values, offsets, weights, scale, out):
    """out[k] (N,) = sum_s (weights[k, s] * scale) * lattice_values[offsets[k, s], 0]."""
    n, d1 = offsets.shape
    for ch in nb.prange((n + CHUNK - 1) // CHUNK):
        for k in range(ch * CHUNK, min(n, (ch + 1) * CHUNK)):
            acc = _ZERO
            for r in range(d1):
                acc += (weights[k, r] * scale) * lattice_values[offsets[k, r], 0]
            out[k] = acc


@nb.njit(**_PAR)
def reduce_private(private, out):
    """out (R, C) = private.sum(0) for private (T, R, C)."""
    shares, rows, c = private.shape
    for ch in nb.prange((rows + CHUNK - 1) // CHUNK):
        for v in range(ch * CHUNK, min(rows, (ch + 1) * CHUNK)):
            for j in range(c):
                out[v, j] = private[0, v, j]
            for t in range(1, shares):
                for j in range(c):
                    out[v, j] += private[t, v, j]


@nb.njit(**_PAR)
def meanfield_pass(
    neg_unary,
    src,
    dst,
    offsets,
    slice_w,
    splat_w,
    zero_lo,
    zero_hi,
    overlap,
    shared_rows,
    q_out,
    write_q,
    scatter,
    gather,
    shift,
):
    """One mean-field update fused with the splat of its result (Potts kernels).

    Per point k: e = neg_unary[k] + sum_s slice_w[k, s] * src[offsets[k, s]],
    q = softmax(e); if ``scatter``, q is scattered with splat_w into ``dst`` for the next
    update, share by share as :mod:`deeplab.crf.split_scatter` lays out (zero_lo, zero_hi,
    overlap, shared_rows; :func:`~deeplab.crf.split_scatter.gather_overlaps` completes
    it); if ``write_q``, its first L labels are stored in q_out (L, N), label-major as the
    caller wants them. Slice weights hold w_m * alpha * output normalisation * barycentric
    weight, splat weights the barycentric weight times the input normalisation. Q itself
    never needs to round-trip through memory between updates: only the lattice values do.
    Without ``gather`` the lattice is not read (e = neg_unary): the first pass,
    softmax(-U). ``shift`` (N,): an upper bound of each point's energies to subtract
    before the exponential (see :func:`_softmax_block`), or empty to use the maximum.
    """
    check_width(neg_unary)
    n, c = neg_unary.shape
    shares = zero_lo.shape[0]
    known_shift = shift.size > 0
    for t in nb.prange(shares):
        if gather:
            spread(src, overlap, shared_rows, t)
        if scatter:
            clear_share(dst, zero_lo, zero_hi, overlap, t)
        e = np.empty((BLOCK, c), np.float32)
        q = np.empty((BLOCK, c), np.float32)
        row_max = np.empty(BLOCK, np.float32)
        end = (t + 1) * n // shares
        for lo in range(t * n // shares, end, BLOCK):
            hi = min(end, lo + BLOCK)
            if gather:
                _gather_block(
                    e, neg_unary, src, offsets, slice_w, lo, hi, dst if scatter else src[:0]
                )
            else:
                e[: hi - lo] = neg_unary[lo:hi]
            qb = q[: hi - lo]
            if known_shift:
                for b in range(hi - lo):
                    row_max[b] = shift[lo + b]
            _softmax_block(e[: hi - lo], qb, row_max, known_shift)
            if write_q:
                for j in range(q_out.shape[0]):
                    for b in range(hi - lo):
                        q_out[j, lo + b] = qb[b, j]
            if scatter:
                for b in range(hi - lo):
                    scatter_point(dst, offsets, splat_w, lo + b, q, b)


@nb.njit(**{**_JIT, "fastmath": True})
def _blur_axis(src, dst, nbrs, axis, lo, hi):
    c = src.shape[1]
    if whole_lanes(c) and src.nbytes <= PREFETCH_BYTES:  # the caches keep it
        for v in range(lo, hi):
            blur_point(dst, src, v, nbrs[axis, v, 0], nbrs[axis, v, 1])
        return
    if whole_lanes(c):
        ahead = min(hi, lo + PREFETCH_AHEAD)
        for v in range(lo, hi):
            if ahead < hi:  # the neighbours' rows of a vertex further on
                prefetch_row(src, nbrs[axis, ahead, 0])
                prefetch_row(src, nbrs[axis, ahead, 1])
                ahead += 1
            blur_point(dst, src, v, nbrs[axis, v, 0], nbrs[axis, v, 1])
        return
    for v in range(lo, hi):
        a = nbrs[axis, v, 0]
        b = nbrs[axis, v, 1]
        for j in range(c):
            dst[v, j] = src[v, j] + _HALF * (src[a, j] + src[b, j])


@nb.njit(**_PAR)
def blur(first, second, nbrs, reverse):
    """Blur along every lattice axis with weights (1/2, 1, 1/2), ping-ponging buffers.

    The data starts in ``first`` (M+1, C); the result ends in ``first`` when the number of
    axes d+1 is even and in ``second`` when it is odd. ``reverse`` runs the axes
    backwards: the adjoint of the forward blur.
    """
    d1 = nbrs.shape[0]
    m = nbrs.shape[1]
    c = first.shape[1]
    src = first
    dst = second
    # Each axis is a parallel region ending in a barrier: for small lattices the barrier
    # costs more than the work, and far more when another process holds a core.
    parallel = m * c >= SERIAL_BLUR_LIMIT
    for step in range(d1):
        axis = d1 - 1 - step if reverse else step
        if parallel:
            for ch in nb.prange((m + CHUNK - 1) // CHUNK):
                _blur_axis(src, dst, nbrs, axis, ch * CHUNK, min(m, (ch + 1) * CHUNK))
        else:
            _blur_axis(src, dst, nbrs, axis, 0, m)
        for j in range(c):
            dst[m, j] = 0.0
        src, dst = dst, src


@nb.njit(**_PAR)
def slice_into(lattice_values, offsets, weights, out, accumulate):
    """out[k] (+)= sum_s weights[k, s] * lattice_values[offsets[k, s]].

    offsets/weights (N, S): S corners, possibly of several lattices stacked in one buffer.
    """
    n, s = offsets.shape
    c = lattice_values.shape[1]
    for ch in nb.prange((n + CHUNK - 1) // CHUNK):
        for k in range(ch * CHUNK, min(n, (ch + 1) * CHUNK)):
            if not accumulate:
                for j in range(c):
                    out[k, j] = 0.0
            for r in range(s):
                o = offsets[k, r]
                w = weights[k, r]
                for j in range(c):
                    out[k, j] += w * lattice_values[o, j]


@nb.njit(**_PAR)
def slice_softmax(neg_unary, lattice_values, offsets, weights, q_out):
    """One fused mean-field update for Potts kernels:
    q_out[k] = softmax(neg_unary[k] + sum_s weights[k, s] * lattice_values[offsets[k, s]]).

    The weights already hold w_m * alpha * normalisation * barycentric weight, so all
    kernels are sliced, summed and normalised in one pass over the points.
    """
    check_width(neg_unary)
    n, c = neg_unary.shape
    for ch in nb.prange((n + BLOCK - 1) // BLOCK):
        lo = ch * BLOCK
        hi = min(n, lo + BLOCK)
        e = np.empty((hi - lo, c), np.float32)
        row_max = np.empty(BLOCK, np.float32)
        _gather_block(e, neg_unary, lattice_values, offsets, weights, lo, hi, lattice_values[:0])
        _softmax_block(e, q_out[lo:hi], row_max)


@nb.njit(**_PAR)
def add_compat_message(filtered, compat, out):
    """out[k, l] -= sum_j compat[l, j] * filtered[k, j]: a label-compatibility matrix."""
    n, c = filtered.shape
    for ch in nb.prange((n + CHUNK - 1) // CHUNK):
        for k in range(ch * CHUNK, min(n, (ch + 1) * CHUNK)):
            for lab in range(c):
                s = np.float32(0.0)
                for j in range(c):
                    s += compat[lab, j] * filtered[k, j]
                out[k, lab] -= s
