"""A fully connected CRF over N points with any Gaussian kernels; mean-field inference.

``Q_i(l) ∝ exp(-U_i(l) - sum_m sum_l' mu_m(l, l') [K_m Q]_i(l'))`` (paper eq. 2-3;
Kraehenbuehl & Koltun 2011, eq. 4). With Potts compatibility of weight w the message is
``+w [K Q]_i(l)`` (the per-point constant of ``mu = w [l != l']`` cancels in the softmax),
which is what the reference code computes. As there, inference starts from softmax(-U),
keeps the j = i term of the filter and applies no damping.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from deeplab.crf import heap, kernels
from deeplab.crf.lattice import PermutohedralLattice
from deeplab.crf.simd import ROW_STEP
from deeplab.crf.split_scatter import (
    ScatterSplit,
    gather_overlaps,
    layout_from_vertices,
    split_scatter,
)
from deeplab.crf.threads import adapted_threads, rebalance, thread_shares
from deeplab.crf.validation import (
    as_float32_2d,
    check_finite,
    check_iterations,
    check_no_negatives,
    check_normalization,
)

log = logging.getLogger(__name__)

Compat = float | np.ndarray

# Largest label-compatibility weight accepted; useful weights are below 100.
MAX_COMPAT = 1e6

# A softmax shift this far above a row's maximum still leaves its largest exponential well
# inside float32 (exp(-60) ~ 1e-26); beyond it the maximum is taken.
MAX_SHIFT_SLACK = 60.0


@dataclass
class PairwiseTerm:
    """One Gaussian kernel with its lattice, label compatibility and normalisation.

    compat: a Potts weight w (float) or an (L, L) label-compatibility matrix mu, where
    mu(l, l') is the cost of labels l and l' at two similar points (Potts: w [l != l']).
    in_scale / out_scale: per-point factors (N,) applied before / after filtering.
    """

    lattice: PermutohedralLattice
    compat: Compat
    normalization: str
    in_scale: np.ndarray | None
    out_scale: np.ndarray | None

    @property
    def is_potts(self) -> bool:
        return not isinstance(self.compat, np.ndarray)

    def splat_weights(self) -> np.ndarray:
        """(N, d+1) barycentric weights times the input scale."""
        if self.in_scale is None:
            return self.lattice.weights
        return np.ascontiguousarray(self.lattice.weights * self.in_scale[:, None])

    def slice_weights(self) -> np.ndarray:
        """(N, d+1) barycentric weights times alpha, the output scale and a Potts weight."""
        coef = self.lattice.alpha * (float(self.compat) if self.is_potts else 1.0)
        w = self.lattice.weights * np.float32(coef)
        if self.out_scale is not None:
            w = w * self.out_scale[:, None]
        return np.ascontiguousarray(w, dtype=np.float32)


def _normalisation_scales(
    lattice: PermutohedralLattice, normalization: str
) -> tuple[np.ndarray | None, np.ndarray | None]:
    if check_normalization(normalization) == "none":
        return None, None
    # K·1 >= alpha * (weight of the point itself) > 0, but keep the reference's epsilon.
    k1 = lattice.filter_ones().astype(np.float64)
    if normalization == "symmetric":
        s = (1.0 / np.sqrt(k1 + 1e-20)).astype(np.float32)
        return s, s
    s = (1.0 / (k1 + 1e-20)).astype(np.float32)
    return (s, None) if normalization == "before" else (None, s)


def padded_width(num_labels: int) -> int:
    """Labels are stored padded to a multiple of :data:`~deeplab.crf.simd.ROW_STEP` (4):
    rows then run as whole vector operations (21 labels -> 24, 2 labels -> 4)."""
    return max(ROW_STEP, -(-num_labels // ROW_STEP) * ROW_STEP)


@dataclass
class _Plan:
    """Stacked lattice buffers and folded weights, built once per set of kernels.

    All kernels' lattice values live in one (R, W) array; term i owns rows
    ``row_base[i] : row_base[i] + M_i + 1`` and its offsets are shifted accordingly, so one
    pass over the points can slice and splat every kernel.
    """

    terms: list[PairwiseTerm]
    row_base: list[int]
    rows: int
    stacked: np.ndarray | None  # (N, S) int32 every term's corners side by side, or None
    splat_w: np.ndarray  # (N, S) float32
    slice_w: np.ndarray  # (N, S) float32; matrix terms' columns hold 0 here
    matrix_terms: list[tuple[int, PairwiseTerm, np.ndarray]]  # (column, term, padded mu)
    # Per share count, the fused pass's split of the corners (same lattices: same split).
    splits: dict[int, ScatterSplit] = field(default_factory=dict)

    @property
    def offsets(self) -> np.ndarray:
        """(N, S) int32 every term's corners side by side, shifted to its rows. Only
        built on demand where the plan wrote the fused pass's split corners instead."""
        if self.stacked is None:
            cols = sum(t.lattice.dim + 1 for t in self.terms)
            self.stacked = np.empty((self.terms[0].lattice.num_points, cols), np.int32)
            col = 0
            for term, base in zip(self.terms, self.row_base, strict=True):
                kernels.shift_columns(term.lattice.offsets, np.int32(base), col, self.stacked)
                col += term.lattice.dim + 1
        return self.stacked

    def split(self, shares: int) -> ScatterSplit:
        """The corners split among ``shares`` scatter shares (built once per count)."""
        if shares not in self.splits:
            columns = np.repeat(np.arange(len(self.terms)), [t.lattice.dim + 1 for t in self.terms])
            blocks = [
                (base, t.lattice.num_vertices)
                for t, base in zip(self.terms, self.row_base, strict=True)
            ]
            self.splits[shares] = split_scatter(self.offsets, columns, blocks, shares)
        return self.splits[shares]

    def blur(self, values: np.ndarray, tmp: np.ndarray) -> None:
        for term, base in zip(self.terms, self.row_base, strict=True):
            block = values[base : base + term.lattice.num_vertices + 1]
            term.lattice.blur(block, tmp)


def _same_kernels(a: list[PairwiseTerm], b: list[PairwiseTerm]) -> bool:
    """Whether two lists of kernels splat the same way: the same lattices and input scales
    (objects, not values), in the same order; their weights may differ."""
    return len(a) == len(b) and all(
        s.lattice is t.lattice and s.in_scale is t.in_scale for s, t in zip(a, b, strict=True)
    )


@dataclass
class _FirstSplat:
    """The blurred splat of softmax(-U), (R, W): what the second update reads. It depends
    on the kernels' lattices, input scales and the number of scatter shares, not on their
    weights, so parameter sets that differ only in weights share it."""

    terms: list[PairwiseTerm]
    shares: int
    values: np.ndarray

    def fits(self, plan: _Plan, shares: int) -> bool:
        return shares == self.shares and _same_kernels(self.terms, plan.terms)


class DenseCRF:
    """Fully connected CRF over N points and L labels.

    unary: (L, N) energies ``U = -log P`` (any per-point constant is irrelevant); or use
    :meth:`from_probabilities`. Add kernels with :meth:`add_kernel`, then call
    :meth:`inference`.
    """

    def __init__(self, unary: np.ndarray | None = None, *, _neg_unary=None) -> None:
        if _neg_unary is not None:
            neg_unary, num_labels = _neg_unary
        else:
            u = as_float32_2d(unary, "unary")
            num_labels, n = u.shape
            if num_labels < 1 or n < 1:
                raise ValueError(f"unary: expected shape (L, N) with L, N >= 1, got {u.shape}")
            # Point-major inside: every kernel loop runs over a contiguous row of labels.
            neg_unary = np.empty((n, padded_width(num_labels)), np.float32)
            kernels.pad_transpose(u, np.float32(-1.0), neg_unary)
        self.num_labels = num_labels
        self.num_points = neg_unary.shape[0]
        self._neg_unary = neg_unary
        self.terms: list[PairwiseTerm] = []
        self._plan: _Plan | None = None
        self._last_plan: _Plan | None = None
        # Kept only once the CRF serves several parameter sets (see clear_kernels).
        self._first_splat: _FirstSplat | None = None
        self._keep_first_splat = False

    @classmethod
    def from_probabilities(cls, probs: np.ndarray, floor: float = 1e-8) -> DenseCRF:
        """A CRF with unary ``-log(max(P, floor))`` for probabilities (L, N)."""
        p = as_float32_2d(probs, "probs", finite=False)
        num_labels, n = p.shape
        if num_labels < 1 or n < 1:
            raise ValueError(f"probs: expected shape (L, N) with L, N >= 1, got {p.shape}")
        # numpy's vectorised minimum and maximum (NaN propagates) clear the usual input in
        # a tenth of the time of counting; the counts are taken only for the message.
        lo, hi = p.min(), p.max()
        if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0):
            check_finite(p, "probs")
            check_no_negatives(p, "probs")
        # NumPy's log is vectorised; the compiled transpose then pads and interleaves.
        log_p = np.maximum(p, np.float32(floor))
        np.log(log_p, out=log_p)
        neg_unary = np.empty((n, padded_width(num_labels)), np.float32)
        kernels.pad_transpose(log_p, np.float32(1.0), neg_unary)
        return cls(_neg_unary=(neg_unary, num_labels))

    @property
    def width(self) -> int:
        return self._neg_unary.shape[1]

    def add_kernel(
        self,
        features: np.ndarray | PermutohedralLattice,
        compat: Compat = 1.0,
        normalization: str = "after",
    ) -> PairwiseTerm:
        """Add ``compat`` x the Gaussian kernel over ``features`` (N, d) (or a built lattice).

        compat: Potts weight (float; > 0 pulls similar points to the same label) or an
        (L, L) matrix mu of label-pair costs.
        normalization: "after" (divide K Q by K 1; DeepLab), "symmetric"
        (D^-1/2 K D^-1/2; pydensecrf's default), "before" (K D^-1) or "none".
        """
        if isinstance(features, PermutohedralLattice):
            lattice = features
        else:
            lattice = PermutohedralLattice(features)
        if lattice.num_points != self.num_points:
            raise ValueError(
                f"features: expected {self.num_points} points (one per unary column), got "
                f"{lattice.num_points}"
            )
        c = self._check_compat(compat)
        in_scale, out_scale = _normalisation_scales(lattice, normalization)
        term = PairwiseTerm(lattice, c, normalization, in_scale, out_scale)
        self.terms.append(term)
        self._plan = None
        return term

    def add_term(self, term: PairwiseTerm, compat: Compat | None = None) -> PairwiseTerm:
        """Add a kernel built by :meth:`add_kernel` of a CRF over the same points, with
        ``compat`` in place of its own (None: the same).

        Its lattice and normalisation are shared, not rebuilt: a parameter search runs many
        weights over one lattice this way (``deeplab tune-crf``); the result is the same as
        ``add_kernel(term.lattice, compat, term.normalization)``.
        """
        if not isinstance(term, PairwiseTerm):
            raise TypeError(f"term: expected a PairwiseTerm, got {type(term).__name__}")
        if term.lattice.num_points != self.num_points:
            raise ValueError(
                f"term: its lattice has {term.lattice.num_points} points, this CRF "
                f"{self.num_points}"
            )
        c = self._check_compat(term.compat if compat is None else compat)
        shared = PairwiseTerm(term.lattice, c, term.normalization, term.in_scale, term.out_scale)
        self.terms.append(shared)
        self._plan = None
        return shared

    def clear_kernels(self) -> None:
        """Remove every kernel; the unary stays (one CRF then serves many parameter sets)."""
        self.terms.clear()
        self._plan = None
        # Parameter sets that differ only in weights start from the same first splat.
        self._keep_first_splat = True

    def _check_compat(self, compat: Compat) -> Compat:
        if isinstance(compat, np.ndarray) or np.ndim(compat) > 0:
            mat = as_float32_2d(compat, "compat")
            if mat.shape != (self.num_labels, self.num_labels):
                raise ValueError(
                    f"compat: expected a scalar or an ({self.num_labels}, {self.num_labels}) "
                    f"matrix, got shape {mat.shape}"
                )
            c: Compat = mat
        else:
            c = float(compat)
            if not np.isfinite(c):
                raise ValueError(f"compat: must be finite, got {compat!r}")
        if np.abs(c).max() > MAX_COMPAT:
            # Messages scale with the weight; past this they overflow float32 energies.
            raise ValueError(f"compat: weights must be within +-{MAX_COMPAT:g}")
        return c

    def _build_plan(self) -> _Plan:
        # Potts terms of weight 0 contribute nothing: skip their filtering altogether.
        terms = [t for t in self.terms if not (t.is_potts and float(t.compat) == 0.0)]
        n = self.num_points
        cols = sum(t.lattice.dim + 1 for t in terms)
        # Another parameter set over the same lattices and scales: only the weights differ.
        prev = self._last_plan
        slice_only = prev is not None and _same_kernels(prev.terms, terms)
        sizes = [t.lattice.num_vertices + 1 for t in terms]
        row_base = [sum(sizes[:i]) for i in range(len(terms))]
        splits: dict[int, ScatterSplit] = {}
        layout = None
        no_offsets = split_offsets = np.empty((0, 0), np.int32)
        offsets: np.ndarray | None = no_offsets
        if prev is not None and slice_only:
            offsets, splat_w, splits = prev.stacked, prev.splat_w, prev.splits
        else:
            splat_w = np.empty((n, cols), np.float32)
            layout = self._scatter_layout(terms, row_base)
            if layout is None:
                offsets = np.empty((n, cols), np.int32)
            else:  # the stacked corners are built only if something asks for them
                split_offsets = np.empty((n, cols), np.int32)
        slice_w = np.empty((n, cols), np.float32)
        empty = np.empty(0, np.float32)
        no_index = np.empty(0, np.int32)
        no_share = np.empty(0, np.int64)
        matrix_terms = []
        col = j0 = 0
        for b, (term, base) in enumerate(zip(terms, row_base, strict=True)):
            lat = term.lattice
            # Matrix terms are sliced separately; their columns add nothing to the fused slice.
            coef = lat.alpha * float(term.compat) if term.is_potts else 0.0
            index, first, lo = no_index, no_share, no_share
            if layout is not None:
                index = lat.vertex_shares.index
                first = np.ascontiguousarray(layout.overlap[:, b, 0])
                lo = layout.overlap[:, b, 1] - j0  # positions within this lattice's list
                j0 += lat.vertex_shares.shared.size
            kernels.fill_term_columns(
                lat.offsets,
                lat.weights,
                np.int32(base),
                empty if term.in_scale is None else term.in_scale,
                empty if term.out_scale is None else term.out_scale,
                np.float32(coef),
                col,
                no_offsets if offsets is None else offsets,
                splat_w,
                slice_w,
                slice_only,
                index,
                first,
                lo,
                split_offsets,
            )
            if not term.is_potts:
                mu = np.zeros((self.width, self.width), np.float32)
                mu[: self.num_labels, : self.num_labels] = term.compat
                matrix_terms.append((col, term, mu))
            col += lat.dim + 1
        stacked = None if offsets is no_offsets else offsets
        plan = _Plan(terms, row_base, max(sum(sizes), 1), stacked, splat_w, slice_w, matrix_terms)
        if layout is not None:
            splits[layout.shares] = dataclasses.replace(layout, offsets=split_offsets)
        plan.splits = splits
        return plan

    @staticmethod
    def _scatter_layout(terms: list[PairwiseTerm], row_base: list[int]) -> ScatterSplit | None:
        """The fused pass's split as the lattices' builds saw it, when they all used the
        current share count (more than one); its offsets are filled with the plan's."""
        shares = thread_shares()
        if shares < 2 or not terms or any(not t.is_potts for t in terms):
            return None
        if any(t.lattice.vertex_shares.shares != shares for t in terms):
            return None
        blocks = [(b, t.lattice.num_vertices) for t, b in zip(terms, row_base, strict=True)]
        return layout_from_vertices(blocks, [t.lattice.vertex_shares for t in terms])

    def _plan_or_build(self) -> _Plan:
        if self._plan is None:
            self._plan = self._last_plan = self._build_plan()
        return self._plan

    def _lattice_buffers(self, plan: _Plan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stacked lattice values (R, W), blur scratch and thread-private scatter buffers."""
        values = np.zeros((plan.rows, self.width), np.float32)
        most = max((t.lattice.num_vertices + 1 for t in plan.terms), default=1)
        tmp = np.empty((most, self.width), np.float32)
        private = np.empty((thread_shares(), plan.rows, self.width), np.float32)
        return values, tmp, private

    def _pad(self, q: np.ndarray) -> np.ndarray:
        q = as_float32_2d(q, "q")
        if q.shape != (self.num_points, self.num_labels):
            raise ValueError(
                f"q: expected shape ({self.num_points}, {self.num_labels}), got {q.shape}"
            )
        out = np.zeros((self.num_points, self.width), np.float32)
        out[:, : self.num_labels] = q
        return out

    def _update(self, q: np.ndarray, q_out: np.ndarray) -> None:
        """q_out (N, W) = one mean-field update of padded q (N, W), any compatibility."""
        plan = self._plan_or_build()
        values, tmp, private = self._lattice_buffers(plan)
        kernels.splat(q, plan.offsets, plan.splat_w, private)
        kernels.reduce_private(private, values)
        plan.blur(values, tmp)
        energy = self._neg_unary
        if plan.matrix_terms:
            energy = self._neg_unary.copy()
            filtered = np.empty_like(energy)
            for col, term, mu in plan.matrix_terms:
                lat = term.lattice
                k = lat.dim + 1
                kernels.slice_into(
                    values,
                    np.ascontiguousarray(plan.offsets[:, col : col + k]),
                    term.slice_weights(),
                    filtered,
                    False,
                )
                kernels.add_compat_message(filtered, mu, energy)
        kernels.slice_softmax(energy, values, plan.offsets, plan.slice_w, q_out)

    # -- inference -----------------------------------------------------------------------
    def initial_marginals(self) -> np.ndarray:
        """softmax(-U) as (N, L) float32."""
        q = np.empty_like(self._neg_unary)
        kernels.softmax_rows(self._neg_unary, q)
        return np.ascontiguousarray(q[:, : self.num_labels])

    def step(self, q: np.ndarray) -> np.ndarray:
        """One mean-field update of point-major marginals q (N, L); returns the new q."""
        out = np.empty((self.num_points, self.width), np.float32)
        with adapted_threads():
            self._update(self._pad(q), out)
        return np.ascontiguousarray(out[:, : self.num_labels])

    def inference(
        self, iterations: int, *, callback: Callable[[int, np.ndarray], None] | None = None
    ) -> np.ndarray:
        """Marginals after ``iterations`` mean-field updates, (L, N) float32.

        callback(it, q) is called after every update with the (L, N) marginals (a buffer
        that is overwritten on the next update: copy what you keep).
        """
        iterations = check_iterations(iterations)
        out = np.empty((self.num_labels, self.num_points), np.float32)
        with adapted_threads():
            plan = self._plan_or_build()
            # About what a call allocates afresh (unary, lattices, plan, lattice values):
            # kept by the allocator for the next call rather than faulted in again.
            heap.keep_free(
                2 * (self._neg_unary.nbytes + out.nbytes)
                + 6 * plan.splat_w.nbytes
                + 12 * plan.rows * self.width
            )
            if plan.matrix_terms:
                self._matrix_inference(iterations, out, callback)
            else:
                self._fused_inference(plan, iterations, out, callback)
        check_finite(out, "CRF marginals")
        return out

    def _matrix_inference(
        self,
        iterations: int,
        out: np.ndarray,
        callback: Callable[[int, np.ndarray], None] | None,
    ) -> None:
        q = np.empty_like(self._neg_unary)
        kernels.softmax_rows(self._neg_unary, q)
        q_next = np.empty_like(q)
        for it in range(iterations):
            rebalance()
            self._update(q, q_next)
            q, q_next = q_next, q
            if callback is not None:
                kernels.transpose(q, out)
                callback(it, out)
        kernels.transpose(q, out)

    def _fused_inference(
        self,
        plan: _Plan,
        iterations: int,
        out: np.ndarray,
        callback: Callable[[int, np.ndarray], None] | None,
    ) -> None:
        # Pass p computes Q_p from the blurred splat of Q_{p-1} (nothing for p = 0, which
        # gives softmax(-U)) and splats Q_p for the next pass: Q never has to be stored
        # between updates unless the caller wants to see it.
        split = plan.split(thread_shares())
        # The pass reads one buffer and scatters into the other; they swap every update.
        src = np.zeros((split.rows, self.width), np.float32)
        dst = np.zeros_like(src)
        most = max((t.lattice.num_vertices + 1 for t in plan.terms), default=1)
        tmp = np.empty((most, self.width), np.float32)
        shift = self._softmax_shift(plan)
        # The first pass, softmax(-U), subtracts each row's own maximum: the bound depends
        # on the weights, and the first splat must not (see _FirstSplat).
        row_max = np.empty(0, np.float32)
        first = 0
        saved = self._first_splat
        if saved is not None and iterations > 0 and saved.fits(plan, split.shares):
            src[:] = saved.values
            first = 1
        for p in range(first, iterations + 1):
            if p > 0:  # the load may have changed since the last update
                rebalance()
            last = p == iterations
            show = last or (callback is not None and p > 0)
            kernels.meanfield_pass(
                self._neg_unary,
                src,
                dst,
                split.offsets,
                plan.slice_w,
                plan.splat_w,
                split.zero_lo,
                split.zero_hi,
                split.overlap,
                split.shared_rows,
                out,
                show,
                not last,
                p > 0,
                shift if p > 0 else row_max,
            )
            if p > 0 and callback is not None:
                callback(p - 1, out)
            if not last:
                if split.shared_rows.size:
                    gather_overlaps(dst, split.overlap, split.shared_rows)
                plan.blur(dst, tmp)
                if p == 0 and self._keep_first_splat:
                    self._first_splat = _FirstSplat(plan.terms, split.shares, dst.copy())
                src, dst = dst, src

    def _softmax_shift(self, plan: _Plan) -> np.ndarray:
        """Per point, an upper bound of the energies every update can reach, (N,) float32,
        or an empty array where none is known.

        With Potts terms normalised "after", the message of term m is w_m K Q / K 1, in
        [0, w_m] since 0 <= Q <= 1: the energies stay below max(-U) + sum of positive w_m.
        Subtracting that bound instead of each row's maximum gives the same softmax and
        spares the maximum's pass over the labels in every update.
        """
        if any(not t.is_potts or t.normalization != "after" for t in plan.terms):
            return np.empty(0, np.float32)
        slack = sum(max(float(t.compat), 0.0) for t in plan.terms)
        if slack > MAX_SHIFT_SLACK:
            return np.empty(0, np.float32)
        shift = np.empty(self.num_points, np.float32)
        kernels.row_maxima(self._neg_unary, shift)
        shift += np.float32(slack)
        return shift

    def pairwise_message(self, term: PairwiseTerm, q: np.ndarray) -> np.ndarray:
        """Minus the pairwise cost of one kernel under (N, L) marginals q, (N, L)."""
        qp = self._pad(q)
        lat = term.lattice
        values = np.empty((lat.num_vertices + 1, self.width), np.float32)
        lat.splat_blur(qp, values, weights=term.splat_weights())
        filtered = np.empty_like(qp)
        kernels.slice_into(values, lat.offsets, term.slice_weights(), filtered, False)
        if term.is_potts:
            return np.ascontiguousarray(filtered[:, : self.num_labels])
        msg = np.zeros_like(qp)
        mu = np.zeros((self.width, self.width), np.float32)
        mu[: self.num_labels, : self.num_labels] = term.compat
        kernels.add_compat_message(filtered, mu, msg)
        return np.ascontiguousarray(msg[:, : self.num_labels])

    def kl_divergence(self, q_point_major: np.ndarray) -> float:
        """The reference code's KL(Q || P) up to a constant, for (N, L) marginals."""
        q = as_float32_2d(q_point_major, "q")
        kl = float(np.sum(q * np.log(np.maximum(q, 1e-20)), dtype=np.float64))
        kl -= float(np.sum(self._neg_unary[:, : self.num_labels] * q, dtype=np.float64))
        for term in self.terms:
            # The message is minus the cost; the reference sums Q * cost.
            kl -= float(np.sum(q * self.pairwise_message(term, q), dtype=np.float64))
        return kl
