"""The VGG-16 trunk of DeepLab v1 with the hole (atrous) algorithm (paper section 3.1).

Layers carry their Caffe names (``conv1_1`` ... ``conv5_3``, ``pool1`` ... ``pool5``,
``pool5a``) so that state-dict keys are the Caffe layer names plus ``.weight``/``.bias``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)
from torch import nn

from deeplab.models.variants import VGG16_BLOCKS, Pool, Variant

__all__ = ["CaffeMaxPool", "VGGTrunk", "conv_names"]


def conv_names() -> list[str]:
    """``['conv1_1', 'conv1_2', 'conv2_1', ..., 'conv5_3']`` (VGG-16's 13 convolutions)."""
    return [f"conv{b + 1}_{i + 1}" for b, n in enumerate(VGG16_BLOCKS) for i in range(n)]


class CaffeMaxPool(nn.Module):
    """Max pooling with Caffe's ceil rounding and, optionally, a different padding at test time.

    The released ``vgg128_noup`` nets (our ``deeplab``) pool4 with 2/1/0 in train.prototxt and
    2/1/1 in test.prototxt; reproducing that needs the padding to follow ``self.training``.
    Padding is with -inf, as in Caffe (padded cells never win the max).
    """

    def __init__(self, pool: Pool, eval_padding: int | None = None) -> None:
        super().__init__()
        self.kernel_size = pool.kernel
        self.stride = pool.stride
        self.padding = pool.padding
        self.eval_padding = pool.padding if eval_padding is None else eval_padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,C,H,W) -> (B,C,H',W') with H' = ``caffe_pool_size(H, ...)``."""
        padding = self.padding if self.training else self.eval_padding
        return F.max_pool2d(x, self.kernel_size, self.stride, padding, ceil_mode=True)

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"eval_padding={self.eval_padding}, ceil_mode=True"
        )


class VGGTrunk(nn.Module):
    """conv1_1 ... pool5 (and LargeFOV's pool5a) of a :class:`Variant`.

    pool4/pool5 keep stride 1 and conv5_* are dilated by 2 (the hole algorithm), so the
    trunk's output has stride 8 instead of VGG's 32 (paper section 3.1).
    """

    def __init__(self, variant: Variant) -> None:
        super().__init__()
        self.conv_names = conv_names()
        in_channels = 3
        for block, (n_convs, width) in enumerate(zip(VGG16_BLOCKS, variant.channels, strict=True)):
            dilation = variant.conv5_dilation if block == 4 else 1
            for i in range(n_convs):
                conv = nn.Conv2d(in_channels, width, 3, padding=dilation, dilation=dilation)
                self.add_module(f"conv{block + 1}_{i + 1}", conv)
                in_channels = width
        pools = variant.pool_specs(training=True)
        for k, pool in enumerate(pools, start=1):
            eval_padding = variant.pool4_eval_padding if k == 4 else None
            self.add_module(f"pool{k}", CaffeMaxPool(pool, eval_padding))
        self.pool5a: nn.Module | None = None
        if variant.pool5a is not None:
            p = variant.pool5a
            # Caffe's AVE pooling divides by the window clipped to the padded input: with
            # stride 1 and pad 1 that is always k*k, i.e. count_include_pad=True.
            self.pool5a = nn.AvgPool2d(
                p.kernel, p.stride, p.padding, ceil_mode=True, count_include_pad=True
            )
        self.out_channels = in_channels

    def forward_with_taps(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B,3,H,W) -> (features (B,C5,h,w) at stride 8, [x, pool1, pool2, pool3, pool4]).

        The taps feed the multi-scale branches (paper section 4.3).
        """
        taps = [x]
        names = iter(self.conv_names)
        for block, n_convs in enumerate(VGG16_BLOCKS, start=1):
            for _ in range(n_convs):
                conv = getattr(self, next(names))
                x = F.relu(conv(x), inplace=True)
            x = getattr(self, f"pool{block}")(x)
            if block < 5:
                taps.append(x)
        if self.pool5a is not None:
            x = self.pool5a(x)
        return x, taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) -> (B,C5,h,w) stride-8 features."""
        return self.forward_with_taps(x)[0]
