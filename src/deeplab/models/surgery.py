"""Tensor surgery behind the converters: fc decimation and input-convention folding.

Paper sections 3.1-3.2: VGG-16's fc6 (7x7x512 -> 4096) and fc7 become convolutions and are
reduced "by simple decimation" (4x4 or 3x3 taps; 4096 -> 1024 channels for LargeFOV).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from deeplab.models.inputs import CAFFE_MEAN_BGR

__all__ = [
    "TORCHVISION_MEAN",
    "TORCHVISION_STD",
    "conv_form",
    "decimate_fc",
    "decimation_taps",
    "fold_torchvision_input",
]

TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)


def decimation_taps(size: int, keep: int) -> list[int]:
    """Evenly spread taps of a ``size`` kernel: 7 -> 4 gives [0, 2, 4, 6], 7 -> 3 [0, 3, 6].

    With fc6's dilation these taps land on the same image offsets as VGG's 7x7 kernel at
    stride 32 for DeepLab-4x4 (hole 8) and LargeFOV (hole 12) (paper section 3.1/5).
    """
    if not 1 <= keep <= size:
        raise ValueError(f"cannot decimate a size-{size} kernel to {keep}")
    if keep == 1:
        return [size // 2]
    return [round(i * (size - 1) / (keep - 1)) for i in range(keep)]


def decimate_fc(
    weight: torch.Tensor,
    bias: torch.Tensor,
    kernel: int,
    out_channels: int,
    in_step: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decimate a conv-shaped fc layer (O,I,K,K) to (out_channels, I/in_step, kernel, kernel).

    Spatial taps: :func:`decimation_taps`; channels: every (O/out_channels)-th output and
    every ``in_step``-th input (fc7's inputs follow fc6's kept outputs), as the paper's
    "simple decimation" (sections 3.2 and 5; 4096 -> 1024 keeps every 4th).
    """
    o, _, k_h, k_w = weight.shape
    if k_h != k_w or o % out_channels:
        raise ValueError(f"cannot decimate {tuple(weight.shape)} to {out_channels} channels")
    step = o // out_channels
    taps = torch.tensor(decimation_taps(k_h, kernel), device=weight.device)
    w = weight[::step, ::in_step].index_select(2, taps).index_select(3, taps)
    return w.contiguous(), bias[::step].contiguous()


def fold_torchvision_input(
    weight: torch.Tensor,
    bias: torch.Tensor,
    mean: Sequence[float] = TORCHVISION_MEAN,
    std: Sequence[float] = TORCHVISION_STD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewrite a first conv (O,3,k,k) trained on torchvision input (RGB, x/255, minus mean,
    over std) so that it takes Caffe input (BGR, 0..255, minus :data:`CAFFE_MEAN_BGR`).

    With c_r = (caffe_mean_r/255 - mean_r)/std_r, torchvision's x_r equals
    caffe_x_{2-r}/(255 std_r) + c_r, so W' = flip_c(W / (255 std)) and
    b' = b + sum W * c. Exact wherever the kernel sees no padding: at the 1-pixel image
    border the source pads x with 0 while the folded conv effectively pads with c.
    """
    w64 = weight.to(torch.float64)
    std_t = torch.tensor(std, dtype=torch.float64, device=weight.device)
    mean_t = torch.tensor(mean, dtype=torch.float64, device=weight.device)
    caffe_mean_rgb = torch.tensor(CAFFE_MEAN_BGR[::-1], dtype=torch.float64, device=weight.device)
    shift = (caffe_mean_rgb / 255.0 - mean_t) / std_t
    new_bias = bias.to(torch.float64) + (w64 * shift.view(1, 3, 1, 1)).sum(dim=(1, 2, 3))
    new_weight = (w64 / (255.0 * std_t).view(1, 3, 1, 1)).flip(1)
    return new_weight.to(weight.dtype), new_bias.to(bias.dtype)


def conv_form(w: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A conv or fc weight as stored -> conv layout (O, I, k, k).

    4-D conv weights pass unchanged (a wrong shape is reported by the caller, never
    reinterpreted); InnerProduct (O, I*k*k) and Caffe's legacy 4-D InnerProduct
    (1, 1, O, I*k*k) are reshaped with I = ``in_channels``, as Caffe's fc-to-conv surgery.
    """
    if w.dim() == 4 and w.shape[0] == w.shape[1] == 1 and w.shape[3] % in_channels == 0:
        w = w.reshape(w.shape[2], w.shape[3])
    if w.dim() == 4:
        return w
    if w.dim() != 2:
        raise ValueError(f"weight {tuple(w.shape)} is neither a conv nor an fc weight")
    o, rest = w.shape
    k = math.isqrt(rest // in_channels) if rest % in_channels == 0 else 0
    if k == 0 or in_channels * k * k != rest:
        raise ValueError(f"weight {tuple(w.shape)} is not a square conv over {in_channels} inputs")
    return w.reshape(o, in_channels, k, k)
