"""The one input convention of every DeepLab model here: Caffe's, on torch tensors.

Images enter the networks as float (B,3,H,W) tensors in **BGR** channel order, on the
**0..255** scale, minus the per-channel mean (B,G,R) = :data:`CAFFE_MEAN_BGR` that the
authors' released VGG-16 and DeepLab Caffe models were trained with. The constants and the
numpy form live in :mod:`deeplab.conventions`; these are the torch functions over the same
constants. Weights from other conventions (torchvision's RGB, 0..1, ImageNet mean/std) are
folded into ``conv1_1`` when converted (:mod:`deeplab.models.convert`), so callers never
switch conventions.
"""

from __future__ import annotations

import torch

from deeplab.conventions import CAFFE_MEAN_BGR, INPUT_CONVENTION

__all__ = ["CAFFE_MEAN_BGR", "INPUT_CONVENTION", "from_model_input", "to_model_input"]


def _mean(like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(CAFFE_MEAN_BGR, dtype=like.dtype, device=like.device).view(3, 1, 1)


def to_model_input(rgb: torch.Tensor) -> torch.Tensor:
    """RGB image(s) on the 0..255 scale, (3,H,W) or (B,3,H,W), any dtype (uint8 included)
    -> Caffe-convention input of the same shape (float32, or the input's float dtype)."""
    if rgb.dim() not in (3, 4) or rgb.shape[-3] != 3:
        raise ValueError(f"expected (3,H,W) or (B,3,H,W) RGB, got shape {tuple(rgb.shape)}")
    x = (rgb if rgb.is_floating_point() else rgb.to(torch.float32)).flip(-3)
    return x - _mean(x)


def from_model_input(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_model_input`: float RGB on the 0..255 scale (not clipped)."""
    if x.dim() not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"expected (3,H,W) or (B,3,H,W) input, got shape {tuple(x.shape)}")
    return (x + _mean(x)).flip(-3)
