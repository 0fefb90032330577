"""The fully connected CRF of Kraehenbuehl & Koltun (2011) as used by DeepLab.

Three layers, from the top:

- images: :func:`dense_crf` (probabilities), :func:`dense_crf_from_logits`,
  :func:`dense_crf_from_unary`, :func:`dense_crf_from_labels`, with :class:`CRFParams`;
- volumes: :func:`dense_crf_3d` (CT, MRI, microscopy; anisotropic voxels in mm);
- any points and features: :class:`DenseCRF` with any number of Gaussian kernels;
- :class:`PermutohedralLattice`: fast Gaussian filtering over arbitrary features.

:mod:`deeplab.crf.torch_backend` runs the same CRF in PyTorch: batched, on any device and
differentiable; ``backend="torch"`` (or tensor inputs) selects it in the functions above,
and ``TorchDenseCRF`` is its ``nn.Module``. Both are loaded on first use: importing this
subpackage imports numpy and numba only; it never imports the networks.
"""

from deeplab.crf.dense import (
    bilateral_features,
    dense_crf,
    dense_crf_from_labels,
    dense_crf_from_logits,
    dense_crf_from_unary,
    estimate_memory,
    spatial_features,
)
from deeplab.crf.lattice import PermutohedralLattice
from deeplab.crf.meanfield import DenseCRF
from deeplab.crf.params import NORMALIZATIONS, PRESETS, CRFParams
from deeplab.crf.unary import unary_from_labels, unary_from_logits, unary_from_probs
from deeplab.crf.volume import dense_crf_3d, estimate_volume_memory

__all__ = [
    "NORMALIZATIONS",
    "PRESETS",
    "CRFParams",
    "DenseCRF",
    "PermutohedralLattice",
    "bilateral_features",
    "dense_crf",
    "dense_crf_3d",
    "dense_crf_from_labels",
    "dense_crf_from_logits",
    "dense_crf_from_unary",
    "estimate_memory",
    "estimate_volume_memory",
    "spatial_features",
    "unary_from_labels",
    "unary_from_logits",
    "unary_from_probs",
]


def __getattr__(name: str) -> object:
    # The PyTorch backend's module (deeplab.crf.torch_backend.DenseCRF) imports torch, so it
    # is loaded on first use only: importing deeplab.crf stays numpy/numba-only.
    if name == "TorchDenseCRF":
        from deeplab.crf.torch_backend import DenseCRF as TorchDenseCRF

        return TorchDenseCRF
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
