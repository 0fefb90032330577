"""The fully connected CRF of Krähenbühl & Koltun (2011) as used by DeepLab (Chen et al.
2015, section 4).

Three layers, from the top:

- images: :func:`dense_crf` (probabilities), :func:`dense_crf_from_logits`,
  :func:`dense_crf_from_unary`, :func:`dense_crf_from_labels`, with :class:`CRFParams`;
- volumes: :func:`dense_crf_3d` (CT, MRI, microscopy; anisotropic voxels in mm);
- any points and features: :class:`DenseCRF` with any number of Gaussian kernels;
- :class:`PermutohedralLattice`: fast Gaussian filtering over arbitrary features.

Every entry point takes ``(image or volume, maps, params=None, *, ...)``.

:mod:`deeplab.crf.torch_backend` (``deeplab.crf.torch_backend``) runs the same CRF in
PyTorch: batched, on any device and differentiable; ``backend="torch"`` (or tensor inputs)
selects it in the functions above, and ``TorchDenseCRF`` is its ``nn.Module``.

Every name here is loaded on first use: ``import deeplab.crf`` imports numpy only, the
numba kernels come with the first numpy entry point and torch with the first tensor one;
nothing here imports the rest of the package.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what the lazy look-ups below give, for type checkers (`as`: exported)
    from deeplab.crf import torch_backend as torch_backend
    from deeplab.crf.dense import bilateral_features as bilateral_features
    from deeplab.crf.dense import dense_crf as dense_crf
    from deeplab.crf.dense import dense_crf_from_labels as dense_crf_from_labels
    from deeplab.crf.dense import dense_crf_from_logits as dense_crf_from_logits
    from deeplab.crf.dense import dense_crf_from_unary as dense_crf_from_unary
    from deeplab.crf.dense import estimate_memory as estimate_memory
    from deeplab.crf.dense import spatial_features as spatial_features
    from deeplab.crf.lattice import PermutohedralLattice as PermutohedralLattice
    from deeplab.crf.meanfield import DenseCRF as DenseCRF
    from deeplab.crf.params import PRESETS as PRESETS
    from deeplab.crf.params import CRFParams as CRFParams
    from deeplab.crf.torch_backend import DenseCRF as TorchDenseCRF  # noqa: F401 (exported)
    from deeplab.crf.unary import unary_from_labels as unary_from_labels
    from deeplab.crf.unary import unary_from_logits as unary_from_logits
    from deeplab.crf.unary import unary_from_probs as unary_from_probs
    from deeplab.crf.validation import NORMALIZATIONS as NORMALIZATIONS
    from deeplab.crf.volume import dense_crf_3d as dense_crf_3d
    from deeplab.crf.volume import estimate_volume_memory as estimate_volume_memory

# Public name -> (module under deeplab.crf, attribute there; None: the module itself).
_LAZY: dict[str, tuple[str, str | None]] = {
    "NORMALIZATIONS": ("validation", "NORMALIZATIONS"),
    "PRESETS": ("params", "PRESETS"),
    "CRFParams": ("params", "CRFParams"),
    "DenseCRF": ("meanfield", "DenseCRF"),
    "PermutohedralLattice": ("lattice", "PermutohedralLattice"),
    "TorchDenseCRF": ("torch_backend", "DenseCRF"),
    "bilateral_features": ("dense", "bilateral_features"),
    "dense_crf": ("dense", "dense_crf"),
    "dense_crf_3d": ("volume", "dense_crf_3d"),
    "dense_crf_from_labels": ("dense", "dense_crf_from_labels"),
    "dense_crf_from_logits": ("dense", "dense_crf_from_logits"),
    "dense_crf_from_unary": ("dense", "dense_crf_from_unary"),
    "estimate_memory": ("dense", "estimate_memory"),
    "estimate_volume_memory": ("volume", "estimate_volume_memory"),
    "spatial_features": ("dense", "spatial_features"),
    "torch_backend": ("torch_backend", None),
    "unary_from_labels": ("unary", "unary_from_labels"),
    "unary_from_logits": ("unary", "unary_from_logits"),
    "unary_from_probs": ("unary", "unary_from_probs"),
}

# `from deeplab.crf import *` loads every name in __all__: where torch is not installed
# (the CRF-only install) its two names are left out so that the star import still works.
_NEEDS_TORCH = ("TorchDenseCRF", "torch_backend")


def _have_torch() -> bool:
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


__all__ = sorted(name for name in _LAZY if name not in _NEEDS_TORCH or _have_torch())


def __getattr__(name: str) -> object:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    module = importlib.import_module(f"{__name__}.{module_name}")
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value  # the next look-up does not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
