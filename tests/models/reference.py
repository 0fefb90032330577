"""Independent reference computations for the conversion tests.

A DeepLab-LargeFOV forward pass written directly with torch.nn.functional calls on a dict
of (weight, bias) pairs, and an interpreter of the authors' released prototxts
(:func:`run_prototxt`): they share no code with deeplab.models, so a converted model that
matches them applies the source weights as the source meant them.
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
    avg-pool 3/1/1, fc6 dilated, fc7, fc8; optional Caffe MSc branches ``{tap}_conv``,
    ``{tap}_fc``, ``{tap}_ms`` (3x3 stride s pad 1; tap ``data``, ``pool1`` ...) added to
    fc8. ``pad_value`` (3,) pads conv1_1's input with a per-channel constant, not zeros."""
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
    tap_names = ("data", "pool1", "pool2", "pool3", "pool4")
    for k, stride in enumerate(branch_strides):
        name = tap_names[k]
        g = F.relu(F.conv2d(taps[k], *p[f"{name}_conv"], stride=stride, padding=1))
        g = F.relu(F.conv2d(g, *p[f"{name}_fc"]))
        out = out + F.conv2d(g, *p[f"{name}_ms"])
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
            state[f"features.{index}.weight"] = (
                torch.randn(cout, cin, 3, 3, dtype=dtype, device=device) * (2 / (9 * cin)) ** 0.5
            )
            state[f"features.{index}.bias"] = torch.randn(cout, dtype=dtype, device=device) * 0.1
            index += 2
            cin = cout
        index += 1
    ins = (cin * 49, fc, fc)
    outs = (fc, fc, classes)
    for i, (fan_in, fan_out) in zip((0, 3, 6), zip(ins, outs, strict=True), strict=True):
        state[f"classifier.{i}.weight"] = (
            torch.randn(fan_out, fan_in, dtype=dtype, device=device) * (2 / fan_in) ** 0.5
        )
        state[f"classifier.{i}.bias"] = torch.randn(fan_out, dtype=dtype, device=device) * 0.1
    return state


def _caffe_pool_cells(n: int, kernel: int, stride: int, pad: int) -> int:
    """Caffe's pooled length: ceil rounding, then drop a last window starting in the padding."""
    cells = -(-(n + 2 * pad - kernel) // stride) + 1
    if pad and (cells - 1) * stride >= n + pad:
        cells -= 1
    return cells


def caffe_pool(x: torch.Tensor, kind: str, kernel: int, stride: int, pad: int) -> torch.Tensor:
    """Caffe's POOLING layer written out: pad explicitly, then plain floor-mode pooling.

    MAX pads with -inf. AVE divides each window's sum by its size clipped to the padded
    input (Caffe: ``min(start + k, n + pad) - start``), so cells past ``n + pad`` (added
    for the ceil rounding) do not count.
    """
    h, w = x.shape[-2:]
    oh, ow = (_caffe_pool_cells(n, kernel, stride, pad) for n in (h, w))
    extra_h = (oh - 1) * stride + kernel - (h + 2 * pad)
    extra_w = (ow - 1) * stride + kernel - (w + 2 * pad)
    pads = (pad, pad + max(extra_w, 0), pad, pad + max(extra_h, 0))
    if kind == "MAX":
        xp = F.pad(x, pads, value=float("-inf"))
        return F.max_pool2d(xp, kernel, stride)[..., :oh, :ow]
    if kind != "AVE":
        raise ValueError(f"pooling kind {kind!r}")
    sums = F.avg_pool2d(F.pad(x, pads), kernel, stride, divisor_override=1)
    inside = F.pad(
        torch.ones(1, 1, h + 2 * pad, w + 2 * pad, dtype=x.dtype),
        (0, max(extra_w, 0), 0, max(extra_h, 0)),
    )
    counts = F.avg_pool2d(inside, kernel, stride, divisor_override=1)
    return (sums / counts)[..., :oh, :ow]


def caffe_interp_zoom(x: torch.Tensor, zoom: int) -> torch.Tensor:
    """Caffe's INTERP with ``zoom_factor``: ``n -> n + (n - 1)(zoom - 1)``, corners aligned."""
    h, w = x.shape[-2:]
    size = (h + (h - 1) * (zoom - 1), w + (w - 1) * (zoom - 1))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def run_prototxt(net, phase: str, data: torch.Tensor, params: Params) -> dict[str, torch.Tensor]:
    """Execute a released DeepLab net (a parsed prototxt) on ``data``, layer by layer.

    Follows only the prototxt: CONVOLUTION (kernel, stride, pad, ``hole``), RELU, DROPOUT
    (identity: the comparison runs without dropout), POOLING (MAX/AVE, Caffe's rounding),
    INTERP (``zoom_factor``), PADDING (``pad_beg``/``pad_end``, negative = crop), ELTWISE SUM.
    Layers of the other phase, the data layer (``data`` is the padded image), labels, losses
    and MAT_WRITE are skipped. Weights come from ``params`` by layer name: their shapes, not
    ``num_output``, set the channel counts, so narrow test nets run the same prototxt.
    Returns every blob computed (by top name).
    """
    blobs = {"data": data}
    for layer in net.all("layers") + net.all("layer"):
        phases = [inc.one("phase") for inc in layer.all("include")]
        if phases and phase not in phases:
            continue
        kind = str(layer.one("type"))
        bottoms = [str(b) for b in layer.all("bottom")]
        if kind in ("IMAGE_SEG_DATA", "SOFTMAX_LOSS", "SEG_ACCURACY", "MAT_WRITE", "SILENCE"):
            continue
        if "label" in bottoms:
            continue  # label_shrink: the labels' own subsampling, checked elsewhere
        top = str(layer.one("top"))
        x = blobs[bottoms[0]]
        if kind == "CONVOLUTION":
            p = layer.sub("convolution_param")
            w, b = params[str(layer.one("name"))]
            if w.shape[-1] != int(p.one("kernel_size")):
                raise ValueError(f"{layer.one('name')}: kernel {w.shape} vs prototxt")
            y = F.conv2d(
                x,
                w,
                b,
                stride=int(p.one("stride", 1)),
                padding=int(p.one("pad", 0)),
                dilation=int(p.one("hole", 1)),
            )
        elif kind == "RELU":
            y = F.relu(x)
        elif kind == "DROPOUT":
            y = x
        elif kind == "POOLING":
            p = layer.sub("pooling_param")
            y = caffe_pool(
                x,
                str(p.one("pool")),
                int(p.one("kernel_size")),
                int(p.one("stride", 1)),
                int(p.one("pad", 0)),
            )
        elif kind == "INTERP":
            y = caffe_interp_zoom(x, int(layer.sub("interp_param").one("zoom_factor")))
        elif kind == "PADDING":
            p = layer.sub("padding_param")
            beg, end = int(p.one("pad_beg")), int(p.one("pad_end"))
            if beg > 0 or end > 0:
                raise ValueError("only cropping PADDING layers are used by DeepLab")
            h, w = x.shape[-2:]
            y = x[..., -beg : h + end, -beg : w + end]
        elif kind == "ELTWISE":
            if str(layer.sub("eltwise_param").one("operation")) != "SUM":
                raise ValueError("only ELTWISE SUM is used by DeepLab")
            parts = [blobs[name] for name in bottoms]
            shapes = {tuple(t.shape) for t in parts}
            if len(shapes) != 1:
                raise ValueError(f"ELTWISE {layer.one('name')}: shapes differ: {shapes}")
            y = sum(parts[1:], parts[0])
        else:
            raise ValueError(f"layer type {kind} not understood")
        blobs[top] = y
    return blobs
