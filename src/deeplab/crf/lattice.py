"""The permutohedral lattice (Adams, Baek & Davis, Eurographics 2010) over any features.

Filtering with it approximates a Gaussian over feature space,
``out_i = sum_j exp(-|f_i - f_j|^2 / 2) in_j``, in time linear in the number of points:
splat onto the lattice vertices with barycentric weights, blur along each of the d+1
lattice axes with (1/2, 1, 1/2), slice back, times ``1 / (1 + 2^-d)``. This is exactly the
filter of Kraehenbuehl & Koltun's reference code, so CRF results agree with it.
"""

from __future__ import annotations

import logging

import numpy as np

from deeplab.crf import kernels
from deeplab.crf.validation import as_float32_2d

log = logging.getLogger(__name__)


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
        rem0, rank, weights, overflow = kernels.simplex_keys(feats)
        if overflow:
            raise ValueError(
                f"features: lattice coordinates of {overflow} points exceed the supported "
                f"range ({kernels.MAX_LATTICE_COORD:.1e}); a standard deviation is too small "
                "for the range of the features"
            )
        offsets, keys, table = kernels.insert_keys(rem0, rank)
        del rem0, rank
        self.num_points = n
        self.dim = d
        #: (N, d+1) vertex index and barycentric weight of each simplex corner.
        self.offsets = offsets
        self.weights = weights
        self.num_vertices = keys.shape[0]
        #: (d+1, M, 2) blur neighbours; M is the all-zero row.
        self.neighbors = kernels.build_neighbors(keys, table)
        del keys, table
        self.splat_ptr, self.splat_points, self.splat_weights = kernels.build_splat_index(
            offsets, weights, self.num_vertices
        )
        #: The reference's scale of the blurred result, 1 / (1 + 2^-d).
        self.alpha = float(1.0 / (1.0 + 2.0 ** (-d)))
        log.debug("lattice: %d points, d=%d, %d vertices", n, d, self.num_vertices)

    def splat_blur(
        self,
        values: np.ndarray,
        buf: np.ndarray,
        tmp: np.ndarray,
        *,
        splat_weights: np.ndarray | None = None,
        reverse: bool = False,
    ) -> None:
        """Splat (N, C) values and blur them; the result is left in ``buf`` (M+1, C).

        splat_weights: the CSR weights with per-point factors folded in (default: plain
        barycentric weights).
        """
        wts = self.splat_weights if splat_weights is None else splat_weights
        # The blur ends in its first buffer for an even number of axes: start so it ends in buf.
        first, second = (buf, tmp) if (self.dim + 1) % 2 == 0 else (tmp, buf)
        kernels.splat(values, self.splat_points, wts, self.splat_ptr, first)
        kernels.blur(first, second, self.neighbors, reverse)

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
        shape = (self.num_vertices + 1, vals2.shape[1])
        buf, tmp = np.empty(shape, np.float32), np.empty(shape, np.float32)
        self.splat_blur(vals2, buf, tmp, reverse=reverse)
        out = np.empty_like(vals2)
        kernels.slice_into(buf, self.offsets, self.weights * np.float32(self.alpha), out, False)
        return out[:, 0] if squeeze else out
