"""A drop-in replacement for ``pydensecrf.densecrf``, powered by deeplab's CRF kernels.

Change ``import pydensecrf.densecrf as dcrf`` to ``import deeplab.crf.pydensecrf as dcrf``
and existing code runs unchanged: same classes, methods, argument order, defaults,
constants and return layouts, and the same results (pydensecrf's sign conventions for
Potts, diagonal and matrix compatibilities, its four normalisations and its 2-D feature
order). Beyond pydensecrf it accepts any real array (float64, float16, non-contiguous,
read-only) where pydensecrf demands C-contiguous float32, and it raises a ValueError or
TypeError naming the problem where pydensecrf would crash or silently misbehave.
"""

# ruff: noqa: N802 -- the camelCase method names are pydensecrf's API.

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from deeplab.crf.dense import check_memory
from deeplab.crf.lattice import PermutohedralLattice
from deeplab.crf.meanfield import DenseCRF as _CoreCRF
from deeplab.crf.pydensecrf._checks import check_scales, integer, real_numbers
from deeplab.crf.validation import as_float32_2d, check_finite

__all__ = [
    "CONST_KERNEL",
    "DIAG_KERNEL",
    "FULL_KERNEL",
    "NORMALIZE_AFTER",
    "NORMALIZE_BEFORE",
    "NORMALIZE_SYMMETRIC",
    "NO_NORMALIZATION",
    "ConstUnary",
    "DenseCRF",
    "DenseCRF2D",
    "KernelType",
    "LogisticUnary",
    "NormalizationType",
    "Unary",
]


class KernelType(IntEnum):
    """pydensecrf's ``KernelType``: which kernel parameters learning may change.

    Inference is the same for all three (the features are used as given); the value is
    validated and kept so code that passes it runs unchanged.
    """

    CONST_KERNEL = 0
    DIAG_KERNEL = 1
    FULL_KERNEL = 2


class NormalizationType(IntEnum):
    """pydensecrf's ``NormalizationType``: how the filtered messages K Q are normalised."""

    NO_NORMALIZATION = 0
    NORMALIZE_BEFORE = 1
    NORMALIZE_AFTER = 2
    NORMALIZE_SYMMETRIC = 3


CONST_KERNEL = KernelType.CONST_KERNEL
DIAG_KERNEL = KernelType.DIAG_KERNEL
FULL_KERNEL = KernelType.FULL_KERNEL
NO_NORMALIZATION = NormalizationType.NO_NORMALIZATION
NORMALIZE_BEFORE = NormalizationType.NORMALIZE_BEFORE
NORMALIZE_AFTER = NormalizationType.NORMALIZE_AFTER
NORMALIZE_SYMMETRIC = NormalizationType.NORMALIZE_SYMMETRIC

# Our core's names for pydensecrf's normalisations; the semantics are identical
# (NO_NORMALIZATION is the raw K Q in pydensecrf too).
_NORMALIZATION_NAMES = {
    NO_NORMALIZATION: "none",
    NORMALIZE_BEFORE: "before",
    NORMALIZE_AFTER: "after",
    NORMALIZE_SYMMETRIC: "symmetric",
}

# pydensecrf turns a probability of exactly 0 (unary +inf) into a marginal of 0. Our kernels
# are compiled for finite values, so +inf becomes an energy whose exp(-U) underflows as well;
# it dominates any message yet keeps Q * U negligible in klDivergence.
_INF_ENERGY = np.float32(1e20)


# -- argument checks ------------------------------------------------------------------------
def _count(value: object, name: str, minimum: int = 1) -> int:
    """An integer >= minimum; integral floats are accepted as pydensecrf's int casts do."""
    n = integer(value, name, whole_floats=True)
    if n < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {n}")
    return n


def _sigmas(value: object, count: int, name: str) -> tuple[np.float32, ...]:
    """A number or a sequence of ``count`` numbers, each finite and > 0, as float32 (the
    reference passes them to C++ as ``float``)."""
    if isinstance(value, str):
        raise TypeError(f"{name}: expected a number or {count} numbers, got {value!r}")
    arr = real_numbers(value, name).astype(np.float64)
    if arr.ndim == 0:
        arr = np.repeat(arr, count)
    if arr.shape != (count,):
        raise ValueError(f"{name}: expected a number or {count} numbers, got {value!r}")
    check_scales(arr, name, value)
    return tuple(np.float32(v) for v in arr)


def _kernel_type(kernel: object) -> KernelType:
    try:
        return KernelType(_count(kernel, "kernel", 0))
    except ValueError:
        raise ValueError(
            f"kernel: expected CONST_KERNEL, DIAG_KERNEL or FULL_KERNEL (0, 1, 2), got {kernel!r}"
        ) from None


def _normalization(normalization: object) -> str:
    try:
        return _NORMALIZATION_NAMES[NormalizationType(_count(normalization, "normalization", 0))]
    except ValueError:
        raise ValueError(
            "normalization: expected NO_NORMALIZATION, NORMALIZE_BEFORE, NORMALIZE_AFTER or "
            f"NORMALIZE_SYMMETRIC (0..3), got {normalization!r}"
        ) from None


def _compatibility(compat: object, num_labels: int) -> float | np.ndarray:
    """pydensecrf's label compatibility as our core's ``compat`` (see ``add_kernel``).

    Potts weight w: pydensecrf's message is +w K Q, our scalar w. Vector v
    (DiagonalCompatibility): message -v * K Q, our mu = diag(v). Matrix M
    (MatrixCompatibility): pydensecrf symmetrises it, message -(M + M^T)/2 K Q, our mu.
    """
    if isinstance(compat, str):
        raise TypeError(f"compat: expected a number, a vector or a matrix, got {compat!r}")
    arr = real_numbers(compat, "compat")
    check_finite(arr, "compat")
    if arr.ndim == 0:
        return float(arr)
    if arr.ndim == 1:
        if arr.shape != (num_labels,):
            raise ValueError(
                f"compat: a vector (diagonal compatibility) needs one weight per label, "
                f"expected shape ({num_labels},), got {arr.shape}"
            )
        return np.diag(arr.astype(np.float32))
    if arr.ndim == 2:
        if arr.shape != (num_labels, num_labels):
            raise ValueError(
                f"compat: a matrix compatibility must be ({num_labels}, {num_labels}), "
                f"got {arr.shape}"
            )
        m = arr.astype(np.float64)
        return np.ascontiguousarray(0.5 * (m + m.T), dtype=np.float32)
    raise ValueError(
        f"compat: expected a number, a vector or a matrix, got an array of shape {arr.shape}"
    )


def _energy_matrix(x: object, name: str) -> np.ndarray:
    """A 2-D float32 copy of an energy; +inf (probability 0) is kept as a huge energy."""
    arr = real_numbers(x, name)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array, got shape {arr.shape}")
    out = np.array(arr, dtype=np.float32, order="C")
    if np.isnan(out).any():
        raise ValueError(f"{name}: contains {int(np.isnan(out).sum())} NaN values")
    if np.isneginf(out).any():
        raise ValueError(f"{name}: contains -inf (an energy must be > -inf)")
    return out


def _finite_energy(u: np.ndarray) -> np.ndarray:
    """Replace +inf energies by a huge finite one; refuse points impossible for every label."""
    inf = np.isposinf(u)
    if inf.any():
        dead = inf.all(axis=0)
        if dead.any():
            raise ValueError(
                f"unary: {int(dead.sum())} points (first: {int(np.argmax(dead))}) have "
                "infinite energy (probability 0) for every label"
            )
        u = np.where(inf, _INF_ENERGY, u)
    return u


@dataclass
class _Kernel:
    lattice: PermutohedralLattice
    compat: float | np.ndarray
    normalization: str
    kernel: KernelType


# -- unaries ----------------------------------------------------------------------------------
class Unary:
    """Base of pydensecrf's unary objects, for :meth:`DenseCRF.setUnary`."""

    def __init__(self, energy: np.ndarray) -> None:
        self._energy = energy


class ConstUnary(Unary):
    """pydensecrf's ``ConstUnary(u)``: fixed energies ``u`` of shape (L, N)."""

    def __init__(self, u: np.ndarray) -> None:
        super().__init__(_energy_matrix(u, "u"))


class LogisticUnary(Unary):
    """pydensecrf's ``LogisticUnary(L, f)``: energies ``L @ f`` from weights L (labels, K)
    and features f (K, N)."""

    def __init__(self, L: np.ndarray, f: np.ndarray) -> None:
        super().__init__(_logistic_energy(L, f))


def _logistic_energy(weights: object, features: object) -> np.ndarray:
    w = as_float32_2d(weights, "L")
    f = as_float32_2d(features, "f")
    if w.shape[1] != f.shape[0]:
        raise ValueError(
            f"LogisticUnary: L {w.shape} and f {f.shape} cannot be multiplied (L @ f needs "
            f"L.shape[1] == f.shape[0])"
        )
    # float32 product as pydensecrf computes L * f with Eigen in single precision.
    return _energy_matrix(w @ f, "L @ f")


# -- the CRFs ---------------------------------------------------------------------------------
class DenseCRF:
    """pydensecrf's ``DenseCRF(nvar, nlabels)``: a fully connected CRF over ``nvar`` points.

    Set the unary with :meth:`setUnaryEnergy`, add kernels with :meth:`addPairwiseEnergy`,
    then run :meth:`inference`. Kernels may be added before or after the unary.
    """

    def __init__(self, nvar: int, nlabels: int) -> None:
        self._nvar = _count(nvar, "nvar")
        self._nlabel = _count(nlabels, "nlabels")
        # pydensecrf would allocate and die (or be killed) half-way: refuse with figures.
        check_memory(1, self._nvar, self._nlabel)
        self._kernels: list[_Kernel] = []
        # Built when the unary is set; kernels are added to it as they come.
        self._core: _CoreCRF | None = None

    # -- unary --------------------------------------------------------------------------------
    def setUnaryEnergy(self, u: np.ndarray, f: np.ndarray | None = None) -> None:
        """pydensecrf's ``setUnaryEnergy(u[, f])``: energies ``u`` (L, N), e.g. -log P.

        With ``f``, the energy is the logistic form ``u @ f`` (pydensecrf's
        LogisticUnaryEnergy): ``u`` (L, K) weights and ``f`` (K, N) features; pydensecrf
        itself only accepts K = N.
        """
        if f is None:
            self._set_energy(_energy_matrix(u, "unary"), "unary energy")
        else:
            self._set_energy(_logistic_energy(u, f), "unary energy u @ f")

    def setUnary(self, u: Unary) -> None:
        """pydensecrf's ``setUnary(Unary)``, for :class:`ConstUnary` or :class:`LogisticUnary`."""
        if not isinstance(u, Unary):
            raise TypeError(
                f"setUnary: expected a ConstUnary or LogisticUnary, got {type(u).__name__}"
            )
        self._set_energy(u._energy, f"{type(u).__name__} energy")

    def _set_energy(self, energy: np.ndarray, what: str) -> None:
        if energy.shape != (self._nlabel, self._nvar):
            raise ValueError(
                f"Bad shape for {what} (need {(self._nlabel, self._nvar)}, got {energy.shape})"
            )
        core = _CoreCRF(_finite_energy(energy))
        for k in self._kernels:
            core.add_kernel(k.lattice, k.compat, k.normalization)
        self._core = core

    # -- pairwise -----------------------------------------------------------------------------
    def addPairwiseEnergy(
        self,
        features: np.ndarray,
        compat: float | np.ndarray,
        kernel: int = DIAG_KERNEL,
        normalization: int = NORMALIZE_SYMMETRIC,
    ) -> None:
        """pydensecrf's ``addPairwiseEnergy``: a Gaussian kernel over ``features`` (d, N),
        already divided by their standard deviations, weighted by ``compat``.

        compat: a number (Potts weight), a vector of L weights (diagonal compatibility) or
        an (L, L) matrix (symmetrised), with pydensecrf's signs.
        """
        feats = real_numbers(features, "features")
        if feats.ndim != 2 or feats.shape[1] != self._nvar or feats.shape[0] < 1:
            raise ValueError(
                f"Bad shape for pairwise energy (need (d, {self._nvar}) with d >= 1, "
                f"got {feats.shape})"
            )
        self._add_kernel(feats.T, compat, kernel, normalization)

    def _add_kernel(
        self, point_features: np.ndarray, compat: object, kernel: object, normalization: object
    ) -> None:
        # Check the cheap arguments before the lattice is built.
        ktype = _kernel_type(kernel)
        norm = _normalization(normalization)
        mu = _compatibility(compat, self._nlabel)
        lattice = PermutohedralLattice(point_features)
        self._kernels.append(_Kernel(lattice, mu, norm, ktype))
        if self._core is not None:
            self._core.add_kernel(lattice, mu, norm)

    # -- inference ----------------------------------------------------------------------------
    def _crf(self, call: str) -> _CoreCRF:
        if self._core is None:
            # pydensecrf silently runs with an all-zero unary here.
            raise ValueError(
                f"{call}: no unary energy set; call setUnaryEnergy(U) with U of shape "
                f"{(self._nlabel, self._nvar)} first"
            )
        return self._core

    def inference(self, niter: int) -> np.ndarray:
        """pydensecrf's ``inference(n)``: marginals after n mean-field steps, (L, N) float32."""
        n = _count(niter, "niter", 0)
        return self._crf("inference").inference(n)

    def startInference(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """pydensecrf's ``startInference()``: (Q, tmp1, tmp2), Q = softmax(-U) as (L, N).

        tmp1 and tmp2 are empty scratch matrices, as in pydensecrf; pass all three to
        :meth:`stepInference`.
        """
        q = self._crf("startInference").initial_marginals()
        # (N, L) point-major transposed: an (L, N) view whose steps need no copies.
        return q.T, np.empty((0, 0), np.float32), np.empty((0, 0), np.float32)

    def stepInference(self, Q: np.ndarray, tmp1: object = None, tmp2: object = None) -> None:
        """pydensecrf's ``stepInference(Q, tmp1, tmp2)``: one mean-field step, Q updated in
        place. tmp1 and tmp2 are pydensecrf's scratch space; their contents are not used."""
        core = self._crf("stepInference")
        if not isinstance(Q, np.ndarray):
            raise TypeError(
                f"stepInference: Q must be the array from startInference() (updated in "
                f"place), got {type(Q).__name__}"
            )
        self._check_marginals(Q, "stepInference: Q")
        if not np.issubdtype(Q.dtype, np.floating):
            raise TypeError(f"stepInference: Q must be a float array, got dtype {Q.dtype}")
        if not Q.flags.writeable:
            raise ValueError("stepInference: Q is read-only but is updated in place")
        np.copyto(Q.T, core.step(Q.T), casting="same_kind")

    def klDivergence(self, Q: np.ndarray) -> float:
        """pydensecrf's ``klDivergence(Q)`` for (L, N) marginals: KL(Q || P) up to a constant,
        with pydensecrf's pairwise term (sum of Q times each kernel's cost, no 1/2)."""
        core = self._crf("klDivergence")
        q = self._check_marginals(Q, "klDivergence: Q")
        return core.kl_divergence(q.T)

    def _check_marginals(self, Q: object, name: str) -> np.ndarray:
        q = real_numbers(Q, name)
        if q.shape != (self._nlabel, self._nvar):
            raise ValueError(f"{name}: expected shape {(self._nlabel, self._nvar)}, got {q.shape}")
        check_finite(q, name)
        return q


class DenseCRF2D(DenseCRF):
    """pydensecrf's ``DenseCRF2D(width, height, nlabels)``: a CRF over the pixels of an image.

    Pixel (x, y) is point ``y * width + x`` (row-major, as ``image.reshape(-1, 3)``).
    """

    def __init__(self, w: int, h: int, nlabels: int) -> None:
        self._w = _count(w, "width")
        self._h = _count(h, "height")
        super().__init__(self._w * self._h, nlabels)

    def _positions(self, sx: np.float32, sy: np.float32) -> np.ndarray:
        # float32 division, as the reference computes i / sx in C++ float.
        xs = np.arange(self._w, dtype=np.float32) / sx
        ys = np.arange(self._h, dtype=np.float32) / sy
        pos = np.empty((self._h, self._w, 2), np.float32)
        pos[..., 0] = xs[None, :]
        pos[..., 1] = ys[:, None]
        return pos.reshape(-1, 2)

    def addPairwiseGaussian(
        self,
        sxy: float | tuple[float, float],
        compat: float | np.ndarray,
        kernel: int = DIAG_KERNEL,
        normalization: int = NORMALIZE_SYMMETRIC,
    ) -> None:
        """pydensecrf's ``addPairwiseGaussian``: a kernel over (x/sx, y/sy); sxy is a number
        or (sx, sy)."""
        sx, sy = _sigmas(sxy, 2, "sxy")
        self._add_kernel(self._positions(sx, sy), compat, kernel, normalization)

    def addPairwiseBilateral(
        self,
        sxy: float | tuple[float, float],
        srgb: float | tuple[float, float, float],
        rgbim: np.ndarray,
        compat: float | np.ndarray,
        kernel: int = DIAG_KERNEL,
        normalization: int = NORMALIZE_SYMMETRIC,
    ) -> None:
        """pydensecrf's ``addPairwiseBilateral``: a kernel over (x/sx, y/sy, r/sr, g/sg,
        b/sb); rgbim is the (height, width, 3) uint8 image, srgb a number or 3 numbers."""
        sx, sy = _sigmas(sxy, 2, "sxy")
        srgb3 = np.array(_sigmas(srgb, 3, "srgb"), np.float32)
        img = np.asarray(rgbim)
        if img.dtype != np.uint8:
            raise TypeError(
                f"rgbim: expected a uint8 (height, width, 3) RGB image, got dtype {img.dtype}; "
                "convert with np.clip(x, 0, 255).astype(np.uint8) after scaling to 0..255"
            )
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(
                f"rgbim: addPairwiseBilateral needs an RGB image of shape (height, width, 3), "
                f"got {img.shape}; for other channels build features with "
                "utils.create_pairwise_bilateral and use addPairwiseEnergy"
            )
        if img.shape[:2] != (self._h, self._w):
            raise ValueError(
                f"rgbim: image of shape {img.shape} does not match the CRF: need "
                f"({self._h}, {self._w}, 3) (height, width, 3)"
            )
        colours = img.reshape(-1, 3).astype(np.float32) / srgb3
        feats = np.concatenate([self._positions(sx, sy), colours], axis=1)
        self._add_kernel(feats, compat, kernel, normalization)
