"""A fully connected CRF over N points with any Gaussian kernels; mean-field inference.

``Q_i(l) ∝ exp(-U_i(l) - sum_m sum_l' mu_m(l, l') [K_m Q]_i(l'))`` (paper eq. 2-3;
Kraehenbuehl & Koltun 2011, eq. 4). With Potts compatibility of weight w the message is
``+w [K Q]_i(l)`` (the per-point constant of ``mu = w [l != l']`` cancels in the softmax),
which is what the reference code computes. As there, inference starts from softmax(-U),
keeps the j = i term of the filter and applies no damping.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from deeplab.crf import kernels
from deeplab.crf.lattice import PermutohedralLattice
from deeplab.crf.params import NORMALIZATIONS
from deeplab.crf.validation import as_float32_2d, check_finite

log = logging.getLogger(__name__)

Compat = float | np.ndarray


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
        lat = self.lattice
        if self.in_scale is None:
            return lat.splat_weights
        return lat.splat_weights * self.in_scale[lat.splat_points]

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
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if normalization == "none":
        return None, None
    # K·1 >= alpha * (weight of the point itself) > 0, but keep the reference's epsilon.
    k1 = lattice.filter(np.ones(lattice.num_points, np.float32)).astype(np.float64)
    if normalization == "symmetric":
        s = (1.0 / np.sqrt(k1 + 1e-20)).astype(np.float32)
        return s, s
    s = (1.0 / (k1 + 1e-20)).astype(np.float32)
    return (s, None) if normalization == "before" else (None, s)


@dataclass
class _Plan:
    """Buffers and folded weights for the mean-field loop, built once per set of kernels."""

    terms: list[PairwiseTerm]
    splat_weights: list[np.ndarray]
    row_base: list[int]
    buf: np.ndarray
    tmp: np.ndarray
    potts_offsets: np.ndarray
    potts_weights: np.ndarray
    matrix_slices: list[tuple[np.ndarray, np.ndarray, np.ndarray]]


class DenseCRF:
    """Fully connected CRF over N points and L labels.

    unary: (L, N) energies ``U = -log P`` (any per-point constant is irrelevant).
    Add kernels with :meth:`add_kernel`, then call :meth:`inference`.
    """

    def __init__(self, unary: np.ndarray) -> None:
        u = as_float32_2d(unary, "unary")
        num_labels, n = u.shape
        if num_labels < 1 or n < 1:
            raise ValueError(f"unary: expected shape (L, N) with L, N >= 1, got {u.shape}")
        self.num_labels = num_labels
        self.num_points = n
        # Point-major inside: every kernel loop runs over contiguous labels.
        self._neg_unary = np.empty((n, num_labels), np.float32)
        kernels.neg_transpose(u, self._neg_unary)
        self.terms: list[PairwiseTerm] = []
        self._plan: _Plan | None = None

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
        in_scale, out_scale = _normalisation_scales(lattice, normalization)
        term = PairwiseTerm(lattice, c, normalization, in_scale, out_scale)
        self.terms.append(term)
        self._plan = None
        return term

    def _build_plan(self) -> _Plan:
        # Potts terms of weight 0 contribute nothing: skip their filtering altogether.
        terms = [t for t in self.terms if not (t.is_potts and float(t.compat) == 0.0)]
        rows = [t.lattice.num_vertices + 1 for t in terms]
        row_base = [int(b) for b in np.cumsum([0, *rows])[:-1]]
        width = self.num_labels
        buf = np.empty((sum(rows), width), np.float32)
        tmp = np.empty((max(rows, default=0), width), np.float32)
        potts_off, potts_w, matrix_slices = [], [], []
        for term, base in zip(terms, row_base, strict=True):
            off = term.lattice.offsets + np.int32(base)
            w = term.slice_weights()
            if term.is_potts:
                potts_off.append(off)
                potts_w.append(w)
            else:
                matrix_slices.append((off, w, term.compat))
        n = self.num_points
        return _Plan(
            terms=terms,
            splat_weights=[t.splat_weights() for t in terms],
            row_base=row_base,
            buf=buf,
            tmp=tmp,
            potts_offsets=np.ascontiguousarray(
                np.concatenate(potts_off, 1) if potts_off else np.empty((n, 0), np.int32)
            ),
            potts_weights=np.ascontiguousarray(
                np.concatenate(potts_w, 1) if potts_w else np.empty((n, 0), np.float32)
            ),
            matrix_slices=matrix_slices,
        )

    def _plan_or_build(self) -> _Plan:
        if self._plan is None:
            self._plan = self._build_plan()
        return self._plan

    def _update(self, q: np.ndarray, q_out: np.ndarray) -> None:
        """q_out (N, L) = one mean-field update of q (N, L)."""
        plan = self._plan_or_build()
        for term, wts, base in zip(plan.terms, plan.splat_weights, plan.row_base, strict=True):
            rows = term.lattice.num_vertices + 1
            term.lattice.splat_blur(
                q, plan.buf[base : base + rows], plan.tmp[:rows], splat_weights=wts
            )
        energy = self._neg_unary
        if plan.matrix_slices:
            energy = self._neg_unary.copy()
            filtered = np.empty_like(energy)
            for off, w, mat in plan.matrix_slices:
                kernels.slice_into(plan.buf, off, w, filtered, False)
                kernels.add_compat_message(filtered, mat, energy)
        kernels.slice_softmax(energy, plan.buf, plan.potts_offsets, plan.potts_weights, q_out)

    # -- inference -----------------------------------------------------------------------
    def initial_marginals(self) -> np.ndarray:
        """softmax(-U) as (N, L) float32."""
        q = np.empty_like(self._neg_unary)
        kernels.softmax_rows(self._neg_unary, q)
        return q

    def step(self, q: np.ndarray) -> np.ndarray:
        """One mean-field update of point-major marginals q (N, L); returns the new q."""
        q = np.ascontiguousarray(q, dtype=np.float32)
        if q.shape != self._neg_unary.shape:
            raise ValueError(f"q: expected shape {self._neg_unary.shape}, got {q.shape}")
        out = np.empty_like(q)
        self._update(q, out)
        return out

    def inference(
        self, iterations: int, *, callback: Callable[[int, np.ndarray], None] | None = None
    ) -> np.ndarray:
        """Marginals after ``iterations`` mean-field updates, (L, N) float32.

        callback(it, q) is called after every update with the (N, L) marginals (a buffer
        that is overwritten on the next update: copy what you keep).
        """
        if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 0:
            raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
        q = self.initial_marginals()
        q_next = np.empty_like(q)
        for it in range(int(iterations)):
            self._update(q, q_next)
            q, q_next = q_next, q
            if callback is not None:
                callback(it, q)
        del q_next
        check_finite(q, "CRF marginals")
        out = np.empty((self.num_labels, self.num_points), np.float32)
        kernels.transpose(q, out)
        return out

    def pairwise_message(self, term: PairwiseTerm, q: np.ndarray) -> np.ndarray:
        """Minus the pairwise cost of one kernel under (N, L) marginals q, (N, L)."""
        lat = term.lattice
        rows = lat.num_vertices + 1
        buf = np.empty((rows, self.num_labels), np.float32)
        tmp = np.empty_like(buf)
        lat.splat_blur(q, buf, tmp, splat_weights=term.splat_weights())
        out = np.empty_like(q)
        kernels.slice_into(buf, lat.offsets, term.slice_weights(), out, False)
        if term.is_potts:
            return out
        msg = np.zeros_like(q)
        kernels.add_compat_message(out, term.compat, msg)
        return msg

    def kl_divergence(self, q_point_major: np.ndarray) -> float:
        """The reference code's KL(Q || P) up to a constant, for (N, L) marginals."""
        q = np.ascontiguousarray(q_point_major, dtype=np.float32)
        kl = float(np.sum(q * np.log(np.maximum(q, 1e-20)), dtype=np.float64))
        kl -= float(np.sum(self._neg_unary * q, dtype=np.float64))
        for term in self.terms:
            # The message is minus the cost; the reference sums Q * cost.
            kl -= float(np.sum(q * self.pairwise_message(term, q), dtype=np.float64))
        return kl
