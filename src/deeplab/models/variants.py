"""The DeepLab v1 network variants, as data: one frozen dataclass per variant, one table.

Every number comes from the paper (section 3, Table 2) or, where the paper is silent, from
the authors' released Caffe configs (``deeplab-public``; the tests read those prototxts and
check each released net layer by layer against its row here). :func:`deeplab.models.build_model`
turns a row of :data:`VARIANTS` into a module; nothing else in the package hard-codes a
variant.

Geometry helpers (:meth:`Variant.output_size`, :meth:`Variant.output_origin`) reproduce Caffe's
size arithmetic so callers (label subsampling, upsampling, tests) need not run the network
to know where its stride-8 output cells sit on the image.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

__all__ = [
    "MSC_TAPS",
    "VARIANTS",
    "Pool",
    "Variant",
    "caffe_pool_size",
    "get_variant",
    "list_models",
]

VGG16_BLOCKS: tuple[int, ...] = (2, 2, 3, 3, 3)
"""Convolutions per VGG-16 block (conv1_1, conv1_2 | conv2_1, conv2_2 | conv3_1..3 | ...)."""

VGG16_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)

MSC_TAPS: tuple[str, ...] = ("data", "pool1", "pool2", "pool3", "pool4")
"""Caffe names of the MSc taps: branch ``k`` is ``{tap}_conv``, ``{tap}_fc``, ``{tap}_ms``."""


@dataclass(frozen=True)
class Pool:
    """A Caffe pooling layer: kernel / stride / padding, always with Caffe's ceil rounding."""

    kernel: int
    stride: int
    padding: int


def caffe_pool_size(n: int, pool: Pool) -> int:
    """Output length of a Caffe pooling layer (ceil rounding, last window starts in the input).

    PyTorch's ``ceil_mode=True`` follows the same rule; tests check the two agree.
    """
    out = math.ceil((n + 2 * pool.padding - pool.kernel) / pool.stride) + 1
    if pool.padding > 0 and (out - 1) * pool.stride >= n + pool.padding:
        out -= 1
    return out


@dataclass(frozen=True)
class Variant:
    """One DeepLab v1 network (paper section 3 and Table 2; the released Caffe configs).

    ``pool4_eval_padding`` reproduces the released DeepLab (``vgg128_noup``) configs, whose
    test net pads pool4 by 1 while the train net does not: the module picks the padding from
    ``self.training``. ``None`` means "same as at train time".

    Released test-net facts: ``test_crop`` is the side the image is padded to (513; 514 for
    DeepLab), ``score_crop`` the pixels its ``fc8_crop`` layer removes at the top/left of the
    x8-interpolated scores (7 for DeepLab: ``pad_beg: -7``), ``caffe_classifier`` the Caffe
    name of fc8. ``msc_train_fc8``: whether fc8 learns together with the MSc branches
    (released DeepLab-MSc: yes; DeepLab-MSc-LargeFOV: no).
    """

    name: str
    paper_name: str
    description: str
    channels: tuple[int, ...] = VGG16_CHANNELS
    pool: Pool = Pool(3, 2, 1)  # pool1..pool3
    pool4: Pool = Pool(3, 1, 1)
    pool4_eval_padding: int | None = None
    pool5: Pool = Pool(3, 1, 1)
    pool5a: Pool | None = None  # LargeFOV's extra average pooling, 3/1/1
    conv5_dilation: int = 2
    fc6_kernel: int = 4
    fc6_dilation: int = 4
    fc6_padding: int = 6
    fc_channels: int = 4096  # fc6 and fc7 width
    dropout: float = 0.5  # after fc6 and fc7 (train only)
    msc: bool = False  # multi-scale branches on input, pool1..pool4 (paper section 4.3)
    msc_channels: int = 128
    train_crop: int = 321
    test_crop: int = 513
    score_crop: int = 0
    caffe_classifier: str = "fc8_voc12"
    msc_train_fc8: bool = False
    paper_params_m: float | None = None  # millions, 21 classes (paper section 5)
    caffe_config: str | None = None  # the released Caffe net this mirrors, if any
    crf_preset: str | None = None
    init_weights: str | None = None  # name of the ImageNet init record (weights.py)

    def pool_specs(self, training: bool) -> tuple[Pool, ...]:
        """pool1..pool5 as applied in train (``True``) or test (``False``) mode."""
        pool4 = self.pool4
        if not training and self.pool4_eval_padding is not None:
            pool4 = Pool(pool4.kernel, pool4.stride, self.pool4_eval_padding)
        return (self.pool, self.pool, self.pool, pool4, self.pool5)

    @property
    def fc6_extent(self) -> int:
        """Spatial extent of fc6's dilated kernel on the stride-8 grid."""
        return self.fc6_dilation * (self.fc6_kernel - 1) + 1

    def output_size(self, n: int, training: bool = False) -> int:
        """Length of the stride-8 score map for an input side of ``n`` pixels.

        >>> get_variant("deeplab").output_size(306, training=True)
        39
        >>> get_variant("deeplab-largefov").output_size(321)
        41
        """
        if n < 1:
            raise ValueError(f"input size must be positive, got {n}")
        for pool in self.pool_specs(training):
            n = caffe_pool_size(n, pool)
        if self.pool5a is not None:
            n = caffe_pool_size(n, self.pool5a)
        return n + 2 * self.fc6_padding - self.fc6_extent + 1

    def tap_geometry(self, training: bool = False) -> tuple[tuple[int, float], ...]:
        """(stride, origin) of the input and of pool1..pool5: feature cell ``i`` of a tap is
        centred on image pixel ``origin + stride * i``.

        The 3/2/1 pools are centred (origin stays 0); the 2/2/1 pools of ``deeplab`` move the
        grid by half a pixel per level, which is why its labels are sampled at 1, 9, ... .
        """
        stride, origin = 1, 0.0
        geometry = [(stride, origin)]
        for pool in self.pool_specs(training):
            origin += stride * ((pool.kernel - 1) / 2 - pool.padding)
            stride *= pool.stride
            geometry.append((stride, origin))
        return tuple(geometry)

    def output_origin(self, training: bool = False) -> float:
        """Image coordinate (pixels) of the centre of output cell 0; cell ``i`` is at
        ``origin + 8 * i``. 0 for all variants except ``deeplab`` (0.5 train, -7.5 test: its
        test net's ``fc8_crop`` removes the 7 leading pixels of the x8 scores, which puts them
        within half a pixel of the image grid)."""
        stride, origin = self.tap_geometry(training)[-1]
        if self.pool5a is not None:
            origin += stride * ((self.pool5a.kernel - 1) / 2 - self.pool5a.padding)
        return origin + stride * ((self.fc6_extent - 1) / 2 - self.fc6_padding)

    @property
    def output_stride(self) -> int:
        return self.tap_geometry(True)[-1][0]


_DEEPLAB = Variant(
    name="deeplab",
    paper_name="DeepLab",
    description="VGG-16, fc6 decimated to 4x4 (input stride 4), 2x2 pooling",
    pool=Pool(2, 2, 1),
    pool4=Pool(2, 1, 0),
    pool4_eval_padding=1,
    fc6_kernel=4,
    fc6_dilation=4,
    fc6_padding=6,
    train_crop=306,
    test_crop=514,
    score_crop=7,
    caffe_classifier="fc8_pascal",
    paper_params_m=65.1,
    caffe_config="DeepLab",
    crf_preset="deeplab",
    init_weights="vgg16_128",
)

_LARGEFOV = Variant(
    name="deeplab-largefov",
    paper_name="DeepLab-LargeFOV",
    description="fc6 3x3 with input stride 12, fc6/fc7 reduced to 1024 channels",
    pool5a=Pool(3, 1, 1),
    fc6_kernel=3,
    fc6_dilation=12,
    fc6_padding=12,
    fc_channels=1024,
    paper_params_m=20.5,
    caffe_config="DeepLab-LargeFOV",
    crf_preset="deeplab-largefov",
    init_weights="vgg16_20M",
)

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        _DEEPLAB,
        Variant(
            name="deeplab-7x7",
            paper_name="DeepLab-7x7",
            description="VGG-16 with its full 7x7 fc6 (input stride 4)",
            fc6_kernel=7,
            fc6_dilation=4,
            fc6_padding=12,
            paper_params_m=134.3,
            crf_preset="deeplab",
        ),
        Variant(
            name="deeplab-4x4",
            paper_name="DeepLab-4x4",
            description="fc6 decimated to 4x4 with a large input stride of 8",
            fc6_kernel=4,
            fc6_dilation=8,
            fc6_padding=12,
            paper_params_m=65.1,
            crf_preset="deeplab",
            init_weights="vgg16_128",
        ),
        _LARGEFOV,
        # The MSc variants are their base networks plus the multi-scale branches. The
        # released DeepLab-MSc is not built on `deeplab`: its header says the pooling "changed
        # from 2 to 3 in the first 4 layers", so its base is DeepLab's fc6 (4x4, dilation 4)
        # on the 3/2/1 pools of the other variants (crop 321, labels from pixel 0).
        Variant(
            name="deeplab-msc",
            paper_name="DeepLab-MSc",
            description="DeepLab's fc6 on 3x3 pooling, plus multi-scale branches on the "
            "input and pool1..pool4",
            fc6_kernel=4,
            fc6_dilation=4,
            fc6_padding=6,
            msc=True,
            msc_train_fc8=True,
            caffe_classifier="fc8_pascal",
            caffe_config="DeepLab-MSc",
            crf_preset="deeplab-msc",
            init_weights="vgg16_128",
        ),
        dataclasses.replace(
            _LARGEFOV,
            name="deeplab-msc-largefov",
            paper_name="DeepLab-MSc-LargeFOV",
            description="DeepLab-LargeFOV plus multi-scale branches",
            msc=True,
            paper_params_m=None,
            caffe_config="DeepLab-MSc-LargeFOV",
            crf_preset="deeplab-msc-largefov",
        ),
        # Not in the paper: LargeFOV's exact topology (pools, strides, dilations, pads) with
        # narrow layers, for training from scratch on a small CPU in minutes. It stays
        # BatchNorm-free so that it shares every code path with the real variants (converter,
        # checkpoints, train == eval behaviour); He (Kaiming) initialisation keeps activations
        # at unit scale through its 15 ReLU layers, which is what makes it trainable from
        # scratch without normalisation. Dropout is off: with 128-wide fc layers and a few
        # thousand SGD steps it only slows convergence.
        dataclasses.replace(
            _LARGEFOV,
            name="deeplab-largefov-tiny",
            paper_name="(none: narrow LargeFOV for CPU demos)",
            description="LargeFOV topology, channels 16-32-64-64-64, fc 128, no dropout",
            channels=(16, 32, 64, 64, 64),
            fc_channels=128,
            dropout=0.0,
            paper_params_m=None,
            caffe_config=None,
            init_weights=None,
        ),
    )
}


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`, in table order."""
    return list(VARIANTS)


def get_variant(name: str | Variant) -> Variant:
    """Look a variant up by name (a :class:`Variant` passes through unchanged)."""
    if isinstance(name, Variant):
        return name
    try:
        return VARIANTS[name]
    except KeyError:
        known = ", ".join(VARIANTS)
        raise ValueError(f"unknown model {name!r}; known models: {known}") from None
