"""Independent reference computations for the conversion tests.

A DeepLab-LargeFOV forward pass written directly with torch.nn.functional calls on a dict
of (weight, bias) pairs: it shares no code with deeplab.models, so a converted model that
matches it applies the source weights as the source meant them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)

BLOCKS = (2, 2, 3, 3, 3)
Params = dict[str, tuple[torch.Tensor, torch.Tensor]]


def reference_largefov(
    x: torch.Tensor,
    p: Params,
    *,
    fc6_dilation: int = 12,
    fc6_padding: int = 12,
    pad_value: torch.Tensor | None = None,
    branch_strides: tuple[int, ...] = (),
) -> torch.Tensor:
    """LargeFOV on (B,3,H,W): 3/2/1 max pools (x3), 3/1/1 pool4/pool5, conv5 dilation 2,
    avg-pool 3/1/1, fc6 dilated, fc7, fc8; optional Caffe MSc branches ``fc{1,2,3}_c{k}``
    (3x3 stride s pad 1) added to fc8. ``pad_value`` (3,) pads conv1_1's input with a
    per-channel constant instead of zeros."""
    taps = [x]
    h = x
    for block, n in enumerate(BLOCKS, start=1):
        for j in range(1, n + 1):
            w, b = p[f"conv{block}_{j}"]
            d = 2 if block == 5 else 1
            pad = d
            if block == j == 1 and pad_value is not None:
                v = pad_value.view(1, 3, 1, 1)
                h = F.pad(h - v, (1, 1, 1, 1)) + v
                pad = 0
            h = F.relu(F.conv2d(h, w, b, padding=pad, dilation=d))
        h = F.max_pool2d(h, 3, 2 if block <= 3 else 1, 1, ceil_mode=True)
        taps.append(h)
    h = F.avg_pool2d(h, 3, 1, 1, ceil_mode=True, count_include_pad=True)
    w, b = p["fc6"]
    h = F.relu(F.conv2d(h, w, b, padding=fc6_padding, dilation=fc6_dilation))
    w, b = p["fc7"]
    h = F.relu(F.conv2d(h, w, b))
    w, b = p["fc8"]
    out = F.conv2d(h, w, b)
    for k, stride in enumerate(branch_strides):
        g = F.relu(F.conv2d(taps[k], *p[f"fc1_c{k}"], stride=stride, padding=1))
        g = F.relu(F.conv2d(g, *p[f"fc2_c{k}"]))
        out = out + F.conv2d(g, *p[f"fc3_c{k}"])
    return out


def torchvision_vgg16_state(
    channels: tuple[int, ...] = (64, 128, 256, 512, 512),
    fc: int = 4096,
    classes: int = 1000,
    dtype: torch.dtype = torch.float32,
    device: str | None = None,
) -> dict[str, torch.Tensor]:
    """A torchvision ``vgg16().state_dict()``-shaped dict (random values), optionally
    narrowed: features.{0,2,5,...,28}.*, classifier.{0,3,6}.*."""
    state: dict[str, torch.Tensor] = {}
    index, cin = 0, 3
    for n, cout in zip(BLOCKS, channels, strict=True):
        for _ in range(n):
            state[f"features.{index}.weight"] = torch.randn(
                cout, cin, 3, 3, dtype=dtype, device=device) * (2 / (9 * cin)) ** 0.5
            state[f"features.{index}.bias"] = torch.randn(cout, dtype=dtype, device=device) * 0.1
            index += 2
            cin = cout
        index += 1
    ins = (cin * 49, fc, fc)
    outs = (fc, fc, classes)
    for i, (fan_in, fan_out) in zip((0, 3, 6), zip(ins, outs, strict=True), strict=True):
        state[f"classifier.{i}.weight"] = torch.randn(
            fan_out, fan_in, dtype=dtype, device=device) * (2 / fan_in) ** 0.5
        state[f"classifier.{i}.bias"] = torch.randn(fan_out, dtype=dtype, device=device) * 0.1
    return state
