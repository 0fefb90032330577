"""DeepLab v1 networks (paper section 3) and their multi-scale branches (section 4.3).

``forward`` returns stride-8 class scores; upsampling to the image (bilinear, x8) is the
predictor's job, not the network's (SPEC.md section 3).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)
from torch import nn

from deeplab.models.variants import Variant, get_variant
from deeplab.models.vgg import VGGTrunk

__all__ = ["DeepLab", "MScBranch", "init_weights"]

MSC_STD = 0.001
MSC_POOL4_1X1_STD = 0.005
CLASSIFIER_STD = 0.01
PIXEL_STD = 57.6  # ImageNet pixel std on the 0..255 scale (0.226 * 255)


class MScBranch(nn.Module):
    """One multi-scale branch: 3x3 conv (stride s) -> ReLU -> dropout -> 1x1 -> ReLU ->
    dropout -> 1x1 to the classes (paper section 4.3; Caffe names ``fc1_cK``..``fc3_cK``).

    The 3x3 conv has no built-in padding: :meth:`forward` pads (or crops) the tap so that the
    branch lands exactly on the main network's output cells, see :meth:`forward`.
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


class DeepLab(VGGTrunk):
    """A DeepLab v1 network for one :class:`~deeplab.models.variants.Variant`.

    Input: (B,3,H,W) float in the Caffe convention (BGR, 0..255, minus the mean; see
    :mod:`deeplab.models.inputs`). Output: (B,num_classes,h,w) logits at stride 8,
    ``h = variant.output_size(H, self.training)``.
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) Caffe-convention image -> (B,num_classes,h,w) stride-8 logits."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (B,3,H,W) image batch, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"expected a floating point image batch, got {x.dtype}")
        if min(self.variant.output_size(n, self.training) for n in x.shape[-2:]) < 1:
            raise ValueError(f"input {tuple(x.shape[-2:])} is too small for {self.variant.name}")
        features, taps = self.forward_with_taps(x)
        h = self.drop6(F.relu(self.fc6(features), inplace=True))
        h = self.drop7(F.relu(self.fc7(h), inplace=True))
        scores = self.fc8(h)
        if self.msc is not None:
            out_hw = (scores.shape[-2], scores.shape[-1])
            shifts = self._shifts[self.training]
            for branch, tap, shift in zip(self.msc, taps, shifts, strict=True):
                # Summing five 1x1 class layers equals one classifier over the concatenated
                # 5x128 channels (paper: "enhanced by 640 channels").
                scores = scores + branch(tap, out_hw, shift)
        return scores

    def branch_parameters(self) -> Iterator[nn.Parameter]:
        """The multi-scale branch parameters: the only ones the paper trains for MSc models."""
        if self.msc is not None:
            yield from self.msc.parameters()

    def freeze_base(self, frozen: bool = True) -> None:
        """Set ``requires_grad`` of everything but the MSc branches to ``not frozen``.

        MSc models are built frozen: "we only adjust the newly added weights" (section 4.3).
        """
        branch = {id(p) for p in self.branch_parameters()}
        for p in self.parameters():
            if id(p) not in branch:
                p.requires_grad_(not frozen)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters with ``requires_grad`` (hand these to the optimizer)."""
        return (p for p in self.parameters() if p.requires_grad)

    def extra_repr(self) -> str:
        return f"variant={self.variant.name!r}, num_classes={self.num_classes}"


@torch.no_grad()
def init_weights(model: DeepLab) -> None:
    """Fresh initialisation, as the paper's and SPEC's recipe says.

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
            nn.init.zeros_(module.bias)
            continue
        nn.init.normal_(module.weight, 0.0, std)
        nn.init.zeros_(module.bias)
