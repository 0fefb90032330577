"""DeepLab v1 networks (paper section 3) and their multi-scale branches (section 4.3).

``forward`` returns stride-8 class scores, as the released train nets compute them (the MSc
branches strided onto the stride-8 grid and summed with fc8). :meth:`DeepLab.image_scores`
is the released test net: scores on the input's pixel grid (fc8 interpolated x8, DeepLab's
``fc8_crop``, and for MSc the branches at stride 1 interpolated to full resolution and summed
there, ``fc_fusion``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import cast

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)
from torch import nn

from deeplab.models.variants import Variant, get_variant
from deeplab.models.vgg import VGGTrunk

__all__ = ["DeepLab", "MScBranch", "caffe_interp", "init_weights"]

MSC_STD = 0.001
MSC_POOL4_1X1_STD = 0.005
CLASSIFIER_STD = 0.01
PIXEL_STD = 57.6  # ImageNet pixel std on the 0..255 scale (0.226 * 255)


class MScBranch(nn.Module):
    """One multi-scale branch: 3x3 conv (stride s) -> ReLU -> dropout -> 1x1 -> ReLU ->
    dropout -> 1x1 to the classes (paper section 4.3). Caffe names, tap ``data`` or
    ``pool1``..``pool4``: ``fc1`` = ``{tap}_conv``, ``fc2`` = ``{tap}_fc``, ``fc3`` =
    ``{tap}_ms``.

    The 3x3 conv has no built-in padding: :meth:`forward` pads (or crops) the tap so that the
    branch lands exactly on the main network's output cells, see :meth:`forward`;
    :meth:`forward_dense` runs it at stride 1, pad 1, as the released test nets do.
    """

    def __init__(
        self, in_channels: int, width: int, num_classes: int, stride: int, dropout: float
    ) -> None:
        super().__init__()
        self.stride = stride
        self.fc1 = nn.Conv2d(in_channels, width, 3, stride=stride)
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Conv2d(width, width, 1)
        self.drop2 = nn.Dropout(dropout)
        self.fc3 = nn.Conv2d(width, num_classes, 1)

    def forward(self, tap: torch.Tensor, out_hw: tuple[int, int], shift: int) -> torch.Tensor:
        """(B,C,S_h,S_w) tap -> (B,classes,*out_hw) scores on the main output grid.

        Branch cell ``j`` is centred on tap cell ``stride * j`` and main cell ``i`` is branch
        cell ``i - shift``. Caffe's 3x3/pad 1 conv gives exactly that for inputs of size
        8k+1 (321, 513); for other sizes ceil-mode pooling gives the main network extra
        trailing cells, so the tap is zero-padded (like the conv's own padding) or cropped at
        the bottom/right to match, which keeps output stride 8 for every input size.
        """
        s = self.stride
        pads: list[int] = []
        for size, out in zip(reversed(tap.shape[-2:]), reversed(out_hw), strict=True):
            front = 1 + shift * s
            back = (out - 1 - shift) * s + 1 - (size - 1)
            pads += [front, back]
        x = F.pad(tap, pads)
        x = self.drop1(F.relu(self.fc1(x), inplace=True))
        x = self.drop2(F.relu(self.fc2(x), inplace=True))
        return self.fc3(x)

    def forward_dense(self, tap: torch.Tensor) -> torch.Tensor:
        """(B,C,S_h,S_w) tap -> (B,classes,S_h,S_w): the released test nets' branch, the same
        weights at stride 1 and pad 1 on the tap's full resolution."""
        x = self.drop1(F.relu(F.conv2d(tap, self.fc1.weight, self.fc1.bias, padding=1)))
        x = self.drop2(F.relu(self.fc2(x), inplace=True))
        return self.fc3(x)


def caffe_interp(x: torch.Tensor, zoom: int) -> torch.Tensor:
    """Caffe's ``Interp`` layer with ``zoom_factor``: (B,L,h,w) -> (B,L,z(h-1)+1,z(w-1)+1),
    bilinear with output pixel ``z*i`` equal to input cell ``i`` (align-corners)."""
    if zoom == 1:
        return x
    h, w = x.shape[-2:]
    size = (zoom * (h - 1) + 1, zoom * (w - 1) + 1)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class DeepLab(VGGTrunk):
    """A DeepLab v1 network for one :class:`~deeplab.models.variants.Variant`.

    Input: (B,3,H,W) float in the Caffe convention (BGR, 0..255, minus the mean; see
    :mod:`deeplab.models.inputs`). Output: (B,num_classes,h,w) logits at stride 8,
    ``h = variant.output_size(H, self.training)``: the released train net's scores (for MSc
    in either mode the strided branches summed on the stride-8 grid). The released test
    net's full-resolution scores are :meth:`image_scores`.
    """

    def __init__(self, variant: Variant | str, num_classes: int = 21) -> None:
        variant = get_variant(variant)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        super().__init__(variant)
        self.variant = variant
        self.num_classes = num_classes
        self.class_names: tuple[str, ...] = ()
        width = variant.fc_channels
        k, d = variant.fc6_kernel, variant.fc6_dilation
        self.fc6 = nn.Conv2d(self.out_channels, width, k, padding=variant.fc6_padding, dilation=d)
        self.drop6 = nn.Dropout(variant.dropout)
        self.fc7 = nn.Conv2d(width, width, 1)
        self.drop7 = nn.Dropout(variant.dropout)
        self.fc8 = nn.Conv2d(width, num_classes, 1)
        self.msc: nn.ModuleList | None = None
        self._shifts: dict[bool, tuple[int, ...]] = {}
        if variant.msc:
            tap_channels = (3, *variant.channels[:4])
            strides = [variant.output_stride // s for s, _ in variant.tap_geometry(True)[:5]]
            self.msc = nn.ModuleList(
                MScBranch(c, variant.msc_channels, num_classes, s, variant.dropout)
                for c, s in zip(tap_channels, strides, strict=True)
            )
            self._shifts = {mode: self._branch_shifts(mode) for mode in (True, False)}
        init_weights(self)

    def _branch_shifts(self, training: bool) -> tuple[int, ...]:
        # Whole cells between each branch's first cell and the main output's first cell.
        # Exact (0) for the 3/2/1-pooling variants; for `deeplab-msc` the 2/2/1 pools move
        # each level by half a pixel, so branches sit within half a cell (<= 4 px) of the
        # main grid, and in test mode pool4's extra padding adds one leading cell.
        out_origin = self.variant.output_origin(training)
        stride = self.variant.output_stride
        return tuple(
            math.floor((origin - out_origin) / stride + 0.5)
            for _, origin in self.variant.tap_geometry(training)[:5]
        )

    def _check_input(self, x: torch.Tensor, training: bool) -> None:
        """Raise ValueError unless x is a float (B,3,H,W) batch with a non-empty output."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (B,3,H,W) image batch, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"expected a floating point image batch, got {x.dtype}")
        if min(self.variant.output_size(n, training) for n in x.shape[-2:]) < 1:
            raise ValueError(f"input {tuple(x.shape[-2:])} is too small for {self.variant.name}")

    def _branches(self) -> list[MScBranch]:
        """The MSc branches on the input and pool1..pool4 (paper section 4.3); empty
        without MSc."""
        # A ModuleList holds them (so that they register); its items are typed nn.Module.
        return [] if self.msc is None else cast("list[MScBranch]", list(self.msc))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) Caffe-convention image -> (B,num_classes,h,w) stride-8 logits."""
        self._check_input(x, self.training)
        features, taps = self.forward_with_taps(x)
        h = self.drop6(F.relu(self.fc6(features), inplace=True))
        h = self.drop7(F.relu(self.fc7(h), inplace=True))
        scores = self.fc8(h)
        if self.msc is not None:
            out_hw = (scores.shape[-2], scores.shape[-1])
            shifts = self._shifts[self.training]
            for branch, tap, shift in zip(self._branches(), taps, shifts, strict=True):
                # Summing five 1x1 class layers equals one classifier over the concatenated
                # 5x128 channels (paper: "enhanced by 640 channels").
                scores = scores + branch(tap, out_hw, shift)
        return scores

    @torch.no_grad()
    def image_scores(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) Caffe-convention image -> (B,num_classes,H,W) scores on its pixel grid:
        the released test net (eval mode only).

        fc8's stride-8 scores are interpolated x8 (``fc8_interp``) and, for ``deeplab``, the
        first ``score_crop`` = 7 pixels dropped (``fc8_crop``: its 2x2 pools put output cell 0
        at pixel -7.5). MSc: each branch runs at stride 1 on its tap, is interpolated by the
        tap's stride (image: none; pool1..pool4: 2, 4, 8, 8) and added (``fc_fusion``). Every
        map starts on pixel 0 and covers at least H x W; the sum is cropped to H x W.
        """
        if self.training:
            raise RuntimeError("image_scores follows the released test net: call .eval() first")
        self._check_input(x, False)
        height, width = x.shape[-2:]
        features, taps = self.forward_with_taps(x)
        h = F.relu(self.fc6(features))
        h = F.relu(self.fc7(h))
        crop = self.variant.score_crop
        scores = caffe_interp(self.fc8(h), self.variant.output_stride)[..., crop:, crop:]
        maps = [scores]
        if self.msc is not None:
            strides = [s for s, _ in self.variant.tap_geometry(False)[:5]]
            for branch, tap, stride in zip(self._branches(), taps, strides, strict=True):
                maps.append(caffe_interp(branch.forward_dense(tap), stride))
        for m in maps:
            if m.shape[-2] < height or m.shape[-1] < width:
                raise ValueError(
                    f"{self.variant.name}: scores of {tuple(m.shape[-2:])} do not cover the "
                    f"input {height}x{width}"
                )
        out = maps[0][..., :height, :width]
        for m in maps[1:]:
            out = out + m[..., :height, :width]
        return out

    def branch_parameters(self) -> Iterator[nn.Parameter]:
        """The multi-scale branch parameters: the only ones the paper trains for MSc models."""
        if self.msc is not None:
            yield from self.msc.parameters()

    def freeze_base(self, frozen: bool = True, train_fc8: bool | None = None) -> None:
        """Set ``requires_grad`` of everything but the MSc branches to ``not frozen``.

        MSc models are built frozen: "we only adjust the newly added weights" (section 4.3).
        ``train_fc8`` (``None``: ``variant.msc_train_fc8``) keeps fc8 learning too, as in the
        released DeepLab-MSc (frozen in the released DeepLab-MSc-LargeFOV).
        """
        if train_fc8 is None:
            train_fc8 = self.variant.msc_train_fc8
        branch = {id(p) for p in self.branch_parameters()}
        fc8 = {id(p) for p in self.fc8.parameters()}
        for p in self.parameters():
            if id(p) in fc8:
                p.requires_grad_(not frozen or train_fc8)
            elif id(p) not in branch:
                p.requires_grad_(not frozen)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters with ``requires_grad`` (hand these to the optimizer)."""
        return (p for p in self.parameters() if p.requires_grad)

    def extra_repr(self) -> str:
        return f"variant={self.variant.name!r}, num_classes={self.num_classes}"


@torch.no_grad()
def init_weights(model: DeepLab) -> None:
    """Fresh initialisation (paper section 5, training; the released prototxt fillers).

    Trunk, fc6, fc7: He-normal (fan-in, ReLU gain), zero bias; these are overwritten by the
    ImageNet weights for the paper's variants, and let ``deeplab-largefov-tiny`` train from
    scratch. fc8: N(0, 0.01), bias 0. MSc branches: N(0, 0.001), pool4's 1x1 N(0, 0.005), the
    class layers N(0, 0.01), bias 0 (released MSc prototxt fillers).
    """
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d):
            continue
        if name == "fc8":
            std = CLASSIFIER_STD
        elif name.startswith("msc."):
            branch = int(name.split(".")[1])
            if name.endswith("fc3"):
                std = CLASSIFIER_STD
            elif name.endswith("fc2") and branch == 4:
                std = MSC_POOL4_1X1_STD
            else:
                std = MSC_STD
        else:
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if name == "conv1_1":
                # He init assumes unit-variance inputs; Caffe-convention pixels have a std
                # of about 58 (ImageNet, 0..255 scale), so scale conv1_1 to match.
                module.weight.div_(PIXEL_STD)
            _zero_bias(module)
            continue
        nn.init.normal_(module.weight, 0.0, std)
        _zero_bias(module)


def _zero_bias(conv: nn.Conv2d) -> None:
    """Set a convolution's bias to 0 (every DeepLab convolution has one)."""
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
