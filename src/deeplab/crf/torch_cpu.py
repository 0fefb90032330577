"""The torch backend's CPU path: the compiled lattice kernels behind torch tensors.

On CPU float32 tensors :mod:`deeplab.crf.torch_backend` builds each image's lattice with
the numba kernels of :mod:`deeplab.crf.lattice` (a hash table, one pass over the points)
and filters through them, reading and writing the tensors' own memory (``Tensor.numpy()``
shares it; the kernels release the GIL). It is the lattice that
:func:`deeplab.crf.torch_lattice.build_lattice` builds, vertex for vertex (the permutohedral
lattice of Krähenbühl & Koltun 2011), so results are the generic path's to float32 rounding.

- :class:`CompiledLattice` has :class:`~deeplab.crf.torch_lattice.TorchLattice`'s filter
  interface: :func:`~deeplab.crf.torch_lattice.lattice_filter` differentiates it as it does
  the generic one (its backward is the adjoint filter, blur axes reversed).
- :func:`compiled_mean_field`: inference without gradients, each image through the numba
  backend's fused mean field (slice, softmax and splat in one pass over the points).

The numba modules are imported on first use: importing the torch backend loads none.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from deeplab.crf.lattice import PermutohedralLattice

log = logging.getLogger(__name__)

__all__ = [
    "CompiledLattice",
    "build_compiled_lattice",
    "compiled_mean_field",
    "compiled_softmax",
    "pad_labels",
]


class CompiledLattice:
    """The lattices of B images over their B N points, image b on rows ``b N .. (b+1) N - 1``
    (``copies`` > 1: the B lattices repeated, as :meth:`TorchLattice.repeat`).

    Same attributes as the generic lattice where callers read them: ``num_points``, ``dim``,
    ``alpha``, ``device`` (the CPU); :meth:`filter` and :meth:`repeat`.
    """

    def __init__(self, lattices: list[PermutohedralLattice], copies: int = 1) -> None:
        if not lattices or copies < 1:
            raise ValueError("CompiledLattice: need at least one lattice and one copy")
        self.lattices = lattices
        self.copies = copies
        self.points_per_image = lattices[0].num_points
        self.dim = lattices[0].dim
        self.alpha = lattices[0].alpha
        self.num_points = self.points_per_image * len(lattices) * copies
        self.num_vertices = sum(lat.num_vertices for lat in lattices) * copies
        # Slice weights times alpha, as PermutohedralLattice.filter rounds them (float32).
        self._slice_w = [lat.weights * np.float32(lat.alpha) for lat in lattices]

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def repeat(self, copies: int) -> CompiledLattice:
        """``copies`` copies of these images' lattices, for a batch of equal features."""
        out = CompiledLattice.__new__(CompiledLattice)
        out.__dict__.update(self.__dict__)
        out.copies = self.copies * copies
        out.num_points = self.num_points * copies
        out.num_vertices = self.num_vertices * copies
        return out

    def _blocks(self) -> Iterator[tuple[PermutohedralLattice, np.ndarray, slice]]:
        n = self.points_per_image
        for b in range(len(self.lattices) * self.copies):
            i = b % len(self.lattices)
            yield self.lattices[i], self._slice_w[i], slice(b * n, (b + 1) * n)

    def filter(self, values: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        """Gaussian-filter (N, C) float32 CPU values (no autograd; see ``lattice_filter``);
        ``reverse=True``: the adjoint filter. Returns a new (N, C) tensor."""
        from deeplab.crf import kernels
        from deeplab.crf.meanfield import padded_width

        if values.dim() != 2 or values.shape[0] != self.num_points:
            raise ValueError(
                f"values: expected ({self.num_points}, C), got shape {tuple(values.shape)}"
            )
        if values.dtype != torch.float32 or values.device.type != "cpu":
            raise TypeError(
                f"values: the compiled lattice filters float32 CPU tensors, got "
                f"{values.dtype} on {values.device}"
            )
        c = values.shape[1]
        # Rows of a multiple of 4 floats take the kernels' vector path, about twice as fast
        # as the scalar loops for 21 labels: worth a padded copy in and out.
        width = c if c < 8 else padded_width(c)
        x = values.detach()
        if width != c:
            x = torch.nn.functional.pad(x, (0, width - c))
        x = x.contiguous()
        out = torch.empty((self.num_points, width), dtype=torch.float32)
        xs, outs = x.numpy(), out.numpy()
        for lat, slice_w, rows in self._blocks():
            buf = np.empty((lat.num_vertices + 1, width), np.float32)
            lat.splat_blur(xs[rows], buf, reverse=reverse)
            kernels.slice_into(buf, lat.offsets, slice_w, outs[rows], False)
        return out if width == c else out[:, :c].contiguous()


def build_compiled_lattice(features: torch.Tensor) -> CompiledLattice:
    """One lattice per image of (N, d) or (B, N, d) CPU features (already divided by the
    Gaussian's standard deviations; converted to float32), built by the numba kernels."""
    from deeplab.crf.lattice import PermutohedralLattice

    if features.dim() == 2:
        features = features[None]
    if features.dim() != 3:
        raise ValueError(f"features: expected (N, d) or (B, N, d), got {tuple(features.shape)}")
    if features.device.type != "cpu":
        raise ValueError(f"features: the compiled lattice needs CPU tensors, got {features.device}")
    if not features.is_floating_point():
        raise TypeError(f"features: expected a floating point tensor, got {features.dtype}")
    feats = features.detach().to(torch.float32).contiguous().numpy()
    return CompiledLattice([PermutohedralLattice(f) for f in feats])


def compiled_mean_field(
    neg_unary: torch.Tensor,
    spatial: torch.Tensor | None,
    bilateral: torch.Tensor | None,
    w1: float,
    w2: float,
    compat: torch.Tensor | None,
    iterations: int,
    normalization: str,
) -> torch.Tensor:
    """Marginals (B, L, N) float32 of ``iterations`` mean-field updates, no gradients.

    neg_unary: (B, L, N) float32 CPU ``-U``; spatial: (N, d_s) features of the spatial
    kernel (weight w2) or None; bilateral: (B, N, d_b) features of the bilateral kernel
    (weight w1) or None; compat: (L, L) label compatibility mu, None for Potts. Each image
    runs the numba backend's inference (:meth:`deeplab.crf.meanfield.DenseCRF.inference`)
    on these features, the spatial lattice built once for the batch.
    """
    from deeplab.crf import kernels
    from deeplab.crf.lattice import PermutohedralLattice
    from deeplab.crf.meanfield import DenseCRF, padded_width

    b, n_lab, n = neg_unary.shape
    maps = neg_unary.detach().to(torch.float32).contiguous().numpy()
    mu = None if compat is None else compat.detach().to(torch.float32).contiguous().numpy()
    # As the numba backend's images: kernel m costs w_m * mu, Potts weight w_m without mu.
    c1 = w1 if mu is None else np.float32(w1) * mu
    c2 = w2 if mu is None else np.float32(w2) * mu
    spatial_lat = None
    if spatial is not None:
        spatial_lat = PermutohedralLattice(spatial.detach().to(torch.float32).numpy())
    bil = None if bilateral is None else bilateral.detach().to(torch.float32).contiguous().numpy()
    out = torch.empty((b, n_lab, n), dtype=torch.float32)
    for i in range(b):
        padded = np.empty((n, padded_width(n_lab)), np.float32)
        kernels.pad_transpose(maps[i], np.float32(1.0), padded)
        crf = DenseCRF(_neg_unary=(padded, n_lab))
        if spatial_lat is not None:
            crf.add_kernel(spatial_lat, c2, normalization)
        if bil is not None:
            crf.add_kernel(PermutohedralLattice(bil[i]), c1, normalization)
        q = crf.inference(iterations)
        out[i].copy_(torch.from_numpy(q))
    log.debug("compiled mean field: %d items of %d points, %d labels", b, n, n_lab)
    return out


# Energy of a padding label: its probability is exactly 0 in every softmax (the kernels'
# PAD_ENERGY; torch's softmax gives 0 too).
_PAD_ENERGY = -1e30


def pad_labels(
    neg_unary: torch.Tensor, compat: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Point-major (P, L) energies ``-U`` padded to (P, W), W the kernels' vector width
    (a multiple of 4), with energy -1e30 (probability 0), and an (L, L) compatibility
    padded with zeros to (W, W); differentiable. Padding labels stay at probability 0 and
    send no message: the first L columns of every update are the unpadded ones."""
    from deeplab.crf.meanfield import padded_width

    num_labels = neg_unary.shape[1]
    width = padded_width(num_labels)
    if width == num_labels:
        return neg_unary, compat
    extra = width - num_labels
    padded = torch.nn.functional.pad(neg_unary, (0, extra), value=_PAD_ENERGY)
    if compat is not None:
        compat = torch.nn.functional.pad(compat, (0, extra, 0, extra))
    return padded, compat


class _CompiledSoftmax(torch.autograd.Function):
    """Row softmax of (P, W) float32 CPU energies by the compiled kernel (W a multiple
    of 4); the backward is softmax's, ``q * (g - sum(g q))``, in torch."""

    @staticmethod
    def forward(ctx, energy: torch.Tensor) -> torch.Tensor:
        from deeplab.crf import kernels

        e = energy.detach().contiguous()
        q = torch.empty_like(e)
        kernels.softmax_rows(e.numpy(), q.numpy())
        ctx.save_for_backward(q)
        return q

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (q,) = ctx.saved_tensors
        return q * (grad - (grad * q).sum(1, keepdim=True))


def compiled_softmax(energy: torch.Tensor) -> torch.Tensor:
    """``softmax(energy, 1)`` of (P, W) float32 CPU energies, W a multiple of 4
    (:func:`pad_labels`), through the compiled kernel; differentiable."""
    return _CompiledSoftmax.apply(energy)
