"""The permutohedral lattice in PyTorch, built and filtered on any device.

Same lattice as :mod:`deeplab.crf.kernels` (Adams, Baek & Davis 2010, as used by
Krähenbühl & Koltun 2011): the elevation, rounding, rank and barycentric arithmetic repeat
the compiled kernel's single precision operations one by one, so every point falls in the
same simplex with the same weights, and vertices are numbered in order of first use, as
there. Only the accumulation order of the splat differs, which moves filtered values by a
few float32 ulps.

Construction uses sorts instead of a hash table: every simplex corner's key is packed into
one int64 (or, when the coordinates span too many bits, ranked one coordinate at a time),
``torch.unique`` numbers the vertices and ``torch.searchsorted`` finds the blur
neighbours. Nothing loops over points in Python.

Filtering: splat and slice are sparse (CSR) products with the barycentric weights, the
blur gathers each vertex's two neighbours per axis (a missing neighbour is the all-zero
row M). :func:`lattice_filter` is differentiable: the filter is linear and its adjoint is
the same filter with the blur axes in reverse order, so the backward pass filters the
incoming gradient instead of storing anything per iteration.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Protocol

import torch

from deeplab.crf.validation import MAX_LATTICE_COORD, check_finite, check_lattice_range

log = logging.getLogger(__name__)

__all__ = ["TorchLattice", "build_lattice", "lattice_filter", "simplex_keys"]

# Packed keys keep the sign bit clear; past this many bits keys are ranked instead.
_PACK_BITS = 62


def _elevation_scale(d: int) -> list[float]:
    # As the reference: inv_std is held in a C float, each scale computed in double and
    # stored as float32 (see kernels.simplex_keys).
    d1 = d + 1
    inv_std = float(torch.tensor(math.sqrt(2.0 / 3.0) * d1, dtype=torch.float32))
    return [1.0 / math.sqrt((i + 2.0) * (i + 1.0)) * inv_std for i in range(d)]


def simplex_keys(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Enclosing simplex of every point (Adams et al. 2010, pp. 5-10), as the CPU kernel.

    features: (N, d) float32. Returns the remainder-0 vertex (N, d+1) int64, the rank
    (N, d+1) int64 and the barycentric weights (N, d+1) float32; raises ValueError when
    lattice coordinates exceed the exactly representable range.
    """
    if features.dtype != torch.float32 or features.dim() != 2:
        raise ValueError(
            f"features: expected (N, d) float32, got {features.dtype} {features.shape}"
        )
    n, d = features.shape
    d1 = d + 1
    dev = features.device
    f32 = torch.float32
    # Every step is one float32 operation on float32 operands, in the kernel's order: a
    # fused or reordered step would move points that sit on a simplex boundary.
    scale = torch.tensor(_elevation_scale(d), dtype=f32, device=dev)
    cf = features * scale
    elevated = torch.empty((n, d1), dtype=f32, device=dev)
    sm = torch.zeros(n, dtype=f32, device=dev)
    for j in range(d, 0, -1):
        c = cf[:, j - 1]
        elevated[:, j] = sm - c * torch.tensor(float(j), dtype=f32, device=dev)
        sm = sm + c
    elevated[:, 0] = sm
    inside = elevated.abs() <= MAX_LATTICE_COORD
    if not bool(inside.all()):
        check_lattice_range(int((~inside.all(1)).sum()))
    down = torch.tensor(1.0 / d1, dtype=f32, device=dev)
    v = torch.round(elevated * down)  # round half to even, as rint
    rem0 = v.to(torch.int64) * d1
    total = v.to(torch.int64).sum(1, keepdim=True)
    diff = elevated - rem0.to(f32)
    # rank[i] counts the coordinates that beat i; ties go to the lower index, as the
    # kernel's "di < dj" loop decides them. A loop over coordinate pairs (not points) is
    # several times faster than one broadcast (N, d+1, d+1) comparison.
    rank = total.expand(n, d1).clone()
    for i in range(d):
        for j in range(i + 1, d1):
            lower = diff[:, i] < diff[:, j]
            rank[:, i] += lower
            rank[:, j] += ~lower
    low = rank < 0
    high = rank > d
    rank = rank + d1 * low - d1 * high
    rem0 = rem0 + d1 * low - d1 * high
    v = (elevated - rem0.to(f32)) * down
    # u[r] = the coordinate of rank r; bary[s] = u[d-s] - u[d-s+1], and the wrapped-around
    # corner bary[0] = u[d] + (1 - u[0]), each one float32 rounding as in the kernel.
    u = torch.empty_like(v).scatter_(1, rank, v).flip(1)
    weights = torch.empty_like(v)
    weights[:, 1:] = u[:, 1:] - u[:, :-1]
    weights[:, 0] = u[:, 0] + (torch.ones((), dtype=f32, device=dev) - u[:, d])
    return rem0, rank, weights


@dataclass
class _KeyCoder:
    """Turns vertex keys (a batch field and d lattice coordinates) into int64 codes whose
    equality is key equality, and finds codes of arbitrary keys among the lattice's.

    Fields are coordinates shifted to start at 0, with a margin of 2d on each side so that
    neighbours of existing vertices stay inside their field.
    """

    spans: list[int]  # per field (batch first): number of values it can take
    packed: bool
    shifts: list[int] = field(default_factory=list)
    levels: list[torch.Tensor] = field(default_factory=list)

    @classmethod
    def for_spans(cls, spans: list[int], force_rank: bool = False) -> _KeyCoder:
        bits = [max(s - 1, 0).bit_length() for s in spans]
        if sum(bits) <= _PACK_BITS and not force_rank:
            shifts = [sum(bits[i + 1 :]) for i in range(len(bits))]
            return cls(spans, True, shifts)
        return cls(spans, False)

    def encode_new(self, fields: list[torch.Tensor]) -> torch.Tensor:
        """Codes of the lattice's own keys; in ranking mode, also learns the levels."""
        if self.packed:
            return self._pack(fields)
        ident = fields[0]
        for span, f in zip(self.spans[1:], fields[1:], strict=True):
            # Rank (prefix, next coordinate) pairs: prefix ranks stay below the number of
            # keys, so the pair fits in int64 whatever the coordinate range.
            level, ident = torch.unique(ident * span + f, sorted=True, return_inverse=True)
            self.levels.append(level)
        return ident

    def _pack(self, fields: list[torch.Tensor]) -> torch.Tensor:
        code = fields[0] << self.shifts[0]
        for f, s in zip(fields[1:], self.shifts[1:], strict=True):
            code = code + (f << s)
        return code

    def find(self, fields: list[torch.Tensor], codes: torch.Tensor) -> torch.Tensor:
        """Index in the sorted unique ``codes`` of each key, or -1 where it is absent."""
        if self.packed:
            return _search(codes, self._pack(fields))
        ident = fields[0]
        found = torch.ones_like(ident, dtype=torch.bool)
        for span, f, level in zip(self.spans[1:], fields[1:], self.levels, strict=True):
            pos = _search(level, ident * span + f)
            found &= pos >= 0
            ident = pos.clamp_min(0)
        return torch.where(found, ident, -1)


def _search(sorted_codes: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    pos = torch.searchsorted(sorted_codes, query).clamp_max(sorted_codes.numel() - 1)
    return torch.where(sorted_codes[pos] == query, pos, -1)


class TorchLattice:
    """A permutohedral lattice over N points (several images' points in disjoint blocks).

    Attributes: ``offsets`` (N, d+1) int64 vertex of each simplex corner, ``weights``
    (N, d+1) float32 barycentric weights, ``neighbors`` (d+1, 2, M+1) int64 blur
    neighbours (minus, plus) of each vertex along each axis, M meaning none; row M of
    lattice values is all zero and stays so. ``alpha`` = 1 / (1 + 2^-d).
    """

    def __init__(
        self, offsets: torch.Tensor, weights: torch.Tensor, neighbors: torch.Tensor, dim: int
    ) -> None:
        self.offsets = offsets
        self.weights = weights
        self.neighbors = neighbors
        self.dim = dim
        self.num_points = offsets.shape[0]
        self.num_vertices = neighbors.shape[2] - 1
        self.alpha = float(1.0 / (1.0 + 2.0 ** (-dim)))
        self._mats: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def device(self) -> torch.device:
        return self.offsets.device

    def repeat(self, copies: int) -> TorchLattice:
        """``copies`` disjoint copies of this lattice, for a batch of equal features (the
        spatial kernel of same-sized images): block b is this lattice shifted by b (M+1)
        rows. Each block keeps its own zero row, which no point touches, so the blur still
        reads it as zero."""
        rows = self.num_vertices + 1
        shift = torch.arange(copies, device=self.device) * rows
        offsets = (self.offsets[None] + shift[:, None, None]).reshape(-1, self.dim + 1)
        nbrs = self.neighbors[:, :, None, :] + shift[None, None, :, None]
        nbrs = nbrs.reshape(self.dim + 1, 2, copies * rows)
        return TorchLattice(offsets, self.weights.repeat(copies, 1), nbrs, self.dim)

    def _matrices(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse CSR splat (M+1, N) and slice (N, M+1) matrices; slice includes alpha."""
        if dtype not in self._mats:
            self._mats[dtype] = self._build_matrices(dtype)
        return self._mats[dtype]

    def _build_matrices(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        n, d1 = self.offsets.shape
        rows = self.num_vertices + 1
        dev = self.device
        # Slice: one CSR row per point, its corners' columns sorted.
        cols, order = self.offsets.sort(1)
        w = self.weights.gather(1, order)
        # Scaled in the values' precision: in float64 the reverse filter is then the exact
        # transpose (float32 rounds alpha * w as the CPU kernels do).
        slice_w = w.to(dtype) * torch.tensor(self.alpha, dtype=dtype, device=dev)
        slice_crow = torch.arange(0, n * d1 + 1, d1, device=dev)
        # Splat: the transpose, points of a vertex in increasing order.
        flat = self.offsets.reshape(-1)
        perm = torch.argsort(flat, stable=True)
        splat_cols = perm // d1
        splat_w = self.weights.reshape(-1)[perm].to(dtype)
        counts = torch.bincount(flat, minlength=rows)
        splat_crow = torch.zeros(rows + 1, dtype=torch.int64, device=dev)
        splat_crow[1:] = counts.cumsum(0)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support.*")
            splat = torch.sparse_csr_tensor(
                splat_crow, splat_cols, splat_w, (rows, n), check_invariants=False
            )
            slice_ = torch.sparse_csr_tensor(
                slice_crow, cols.reshape(-1), slice_w.reshape(-1), (n, rows), check_invariants=False
            )
        return splat, slice_

    def splat(self, values: torch.Tensor) -> torch.Tensor:
        """(N, C) point values -> (M+1, C) lattice values, barycentric weights."""
        return self._matrices(values.dtype)[0] @ values

    def slice(self, lattice_values: torch.Tensor) -> torch.Tensor:
        """(M+1, C) lattice values -> (N, C), barycentric weights times alpha."""
        return self._matrices(lattice_values.dtype)[1] @ lattice_values

    def blur(self, lattice_values: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        """Blur (M+1, C) along each of the d+1 axes with (1/2, 1, 1/2); ``reverse`` runs
        the axes backwards (the adjoint). Returns a new tensor."""
        x = lattice_values
        rows, c = x.shape
        # Two gathered neighbours and two ping-pong outputs, allocated once per call.
        pair = torch.empty((2 * rows, c), dtype=x.dtype, device=x.device)
        bufs = [torch.empty_like(x), torch.empty_like(x)]
        axes = range(self.dim, -1, -1) if reverse else range(self.dim + 1)
        for step, axis in enumerate(axes):
            torch.index_select(x, 0, self.neighbors[axis].reshape(-1), out=pair)
            out = bufs[step % 2]
            torch.add(pair[:rows], pair[rows:], out=out)
            # x + (a + b) / 2, the CPU kernel's order of operations
            x = out.mul_(0.5).add_(x)
        return x

    def filter(self, values: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        """Gaussian-filter (N, C) point values (not tracked by autograd; see
        :func:`lattice_filter`). ``reverse=True`` gives the adjoint filter."""
        if values.dim() != 2 or values.shape[0] != self.num_points:
            raise ValueError(
                f"values: expected ({self.num_points}, C), got shape {tuple(values.shape)}"
            )
        with torch.no_grad():
            return self.slice(self.blur(self.splat(values.contiguous()), reverse))


class LinearFilter(Protocol):
    """What :func:`lattice_filter` differentiates: a linear filter of (N, C) values and
    its adjoint (``reverse=True``), e.g. :class:`TorchLattice` or the compiled lattice
    of :mod:`deeplab.crf.torch_cpu`."""

    def filter(self, values: torch.Tensor, reverse: bool = False) -> torch.Tensor: ...


class _LatticeFilter(torch.autograd.Function):
    """The linear filter K (or its adjoint); its gradient is the other one applied to the
    incoming gradient, so only the lattice is kept for the backward pass."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, lattice: LinearFilter, reverse: bool) -> torch.Tensor:
        ctx.lattice = lattice
        ctx.reverse = reverse
        return lattice.filter(values, reverse)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None
        return _LatticeFilter.apply(grad, ctx.lattice, not ctx.reverse), None, None


def lattice_filter(
    values: torch.Tensor, lattice: LinearFilter, reverse: bool = False
) -> torch.Tensor:
    """Differentiable Gaussian filtering of (N, C) values over the lattice's points."""
    return _LatticeFilter.apply(values, lattice, reverse)


def build_lattice(features: torch.Tensor, *, _force_rank: bool = False) -> TorchLattice:
    """Build the lattice of (N, d) features, or of (B, N, d): B images' lattices in one,
    their vertices disjoint (the batch index is part of every key), numbered image by
    image. Features are float32 (others are converted), already divided by the Gaussian's
    standard deviations, and stay on their device.
    """
    if features.dim() == 2:
        features = features[None]
    if features.dim() != 3:
        raise ValueError(f"features: expected (N, d) or (B, N, d), got {tuple(features.shape)}")
    b, n, d = features.shape
    if b * n == 0 or d == 0:
        raise ValueError(
            f"features: need points and feature dimensions, got {tuple(features.shape)}"
        )
    if not features.is_floating_point():
        raise TypeError(f"features: expected a floating point tensor, got {features.dtype}")
    feats = features.to(torch.float32).reshape(b * n, d)
    check_finite(feats, "features", verb="contain")
    dev = feats.device
    d1 = d + 1
    rem0, rank, weights = simplex_keys(feats)

    lo = rem0[:, :d].amin(0).tolist()
    hi = rem0[:, :d].amax(0).tolist()
    margin = 2 * d
    coder = _KeyCoder.for_spans(
        [b] + [h - l + 2 * margin + 1 for l, h in zip(lo, hi, strict=True)], _force_rank
    )
    batch = torch.arange(b, device=dev).repeat_interleave(n)
    corner = torch.arange(d1, device=dev)

    def fields_of(points: torch.Tensor | None, corners: torch.Tensor) -> list[torch.Tensor]:
        # Vertex r of a point's simplex: rem0[i] + r, minus d+1 where rank[i] >= d+1-r.
        # points=None: every point with every corner, (N, d+1) without gathering.
        sel = slice(None) if points is None else points
        out = [batch[sel, None] if points is None else batch[points]]
        for i in range(d):
            r0 = rem0[sel, i]
            rk = rank[sel, i]
            if points is None:
                r0, rk = r0[:, None], rk[:, None]
            coord = (r0 - (lo[i] - margin)) + corners - d1 * (rk >= d1 - corners)
            out.append(coord)
        return out

    codes = coder.encode_new(fields_of(None, corner[None, :])).reshape(-1)
    uniq, inverse = torch.unique(codes, sorted=True, return_inverse=True)
    del codes
    m = uniq.numel()
    # Number vertices by first use (point-major, corner-minor), as the CPU hash table does.
    first = torch.full((m,), b * n * d1, dtype=torch.int64, device=dev)
    first.scatter_reduce_(0, inverse, torch.arange(b * n * d1, device=dev), "amin")
    order = torch.argsort(first)
    new_index = torch.empty(m + 1, dtype=torch.int64, device=dev)
    new_index[order] = torch.arange(m, device=dev)
    new_index[m] = m  # an absent neighbour (found = m below) is the zero row
    offsets = new_index[inverse].reshape(b * n, d1)

    rep = first[order]
    vfields = fields_of(rep // d1, rep % d1)
    nbrs = torch.empty((d1, 2, m + 1), dtype=torch.int64, device=dev)
    nbrs[:, :, m] = m
    for axis in range(d1):
        for side, sign in ((0, -1), (1, 1)):
            # Along axis a every coordinate moves by sign except coordinate a, which moves
            # by -sign * d (for a = d only the implicit last coordinate moves that way).
            moved = [vfields[0]]
            for i in range(d):
                moved.append(vfields[i + 1] + (-sign * d if i == axis else sign))
            found = coder.find(moved, uniq)
            nbrs[axis, side, :m] = new_index[torch.where(found >= 0, found, m)]
    log.debug("torch lattice: %d images x %d points, d=%d, %d vertices", b, n, d, m)
    return TorchLattice(offsets, weights, nbrs, d)
