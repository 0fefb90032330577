"""Training and evaluation transforms (paper sections 3.1 and 5), as NumPy functions plus
two callables.

Both put images into the networks' input convention (:mod:`deeplab.conventions`: BGR,
0..255 scale, minus the per-channel mean, as a (3, H, W) float32 array). Training crops a
``crop_size`` square at a random place (images smaller than the crop are padded at the bottom
and right: the image with the mean, i.e. 0 after mean subtraction, the label with 255),
mirrors at random, and subsamples the label for the loss by picking every 8th pixel starting
at ``offset`` (0 for most variants, 1 for ``deeplab``), 321 -> 41, never blending labels
(the paper's targets are "the ground truth labels (subsampled by 8)", section 3.1).

Randomness comes only from the ``numpy.random.Generator`` passed to ``TrainTransform``, so a
given generator state always produces the same crop and mirror.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deeplab.conventions import CAFFE_MEAN_BGR, IGNORE_INDEX, from_caffe, to_caffe
from deeplab.data.sample import Sample

__all__ = [
    "MEAN_BGR",
    "EvalTransform",
    "TrainTransform",
    "crop",
    "from_caffe",
    "hflip",
    "pad_bottom_right",
    "random_crop_offsets",
    "subsample_label",
    "subsampled_size",
    "to_caffe",
]

MEAN_BGR: tuple[float, float, float] = CAFFE_MEAN_BGR
"""Per-channel mean in B, G, R order, subtracted after the RGB -> BGR swap (Caffe): the
networks' input convention (:mod:`deeplab.conventions`), here on numpy arrays."""


def pad_bottom_right(array: np.ndarray, height: int, width: int, value: float) -> np.ndarray:
    """Pad the last two axes of (..., H, W) up to at least (height, width) at the bottom/right.

    Axes already large enough are left alone (never cropped).
    """
    h, w = array.shape[-2:]
    ph, pw = max(height - h, 0), max(width - w, 0)
    if ph == 0 and pw == 0:
        return array
    pad = [(0, 0)] * (array.ndim - 2) + [(0, ph), (0, pw)]
    return np.pad(array, pad, mode="constant", constant_values=value)


def random_crop_offsets(
    height: int, width: int, crop_h: int, crop_w: int, rng: np.random.Generator
) -> tuple[int, int]:
    """Uniform (top, left) for a crop of (crop_h, crop_w) inside an (height, width) array.

    The array must already be at least as large as the crop (pad first).
    """
    if height < crop_h or width < crop_w:
        raise ValueError(f"crop {crop_h}x{crop_w} does not fit in {height}x{width}; pad first")
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    return top, left


def crop(array: np.ndarray, top: int, left: int, crop_h: int, crop_w: int) -> np.ndarray:
    """The (crop_h, crop_w) window at (top, left) of the last two axes."""
    return array[..., top : top + crop_h, left : left + crop_w]


def hflip(array: np.ndarray) -> np.ndarray:
    """Mirror the last axis (width) of a (..., H, W) array."""
    return array[..., ::-1]


def subsampled_size(size: int, stride: int = 8, offset: int = 0) -> int:
    """Length of ``range(offset, size, stride)``: 321 -> 41 (offset 0), 306 -> 39 (offset 1)."""
    return max(0, math.ceil((size - offset) / stride))


def subsample_label(label: np.ndarray, stride: int = 8, offset: int = 0) -> np.ndarray:
    """Pick pixels ``offset, offset + stride, ...`` along both axes of (..., H, W) (a copy).

    This is what Caffe's label "interp" layer with nearest picking does: never an average.
    """
    if stride < 1 or not 0 <= offset < stride:
        raise ValueError(f"need stride >= 1 and 0 <= offset < stride, got {stride}, {offset}")
    return np.ascontiguousarray(label[..., offset::stride, offset::stride])


@dataclass(frozen=True)
class TrainTransform:
    """Sample -> (image (3, crop, crop) float32, label int64) for training.

    Steps: Caffe convention, pad bottom/right to the crop (image 0 = the mean, label 255),
    random crop, random mirror, then label subsampling by ``label_stride`` from
    ``label_offset`` (``label_stride=1``: full-resolution label).

    Attributes:
        crop_size: 321 for most variants, 306 for ``deeplab`` (the released solvers).
        label_stride: 8, the network's output stride.
        label_offset: 0, or 1 for ``deeplab`` (306 -> 39).
        mirror: random horizontal flip with probability 1/2.
        mean_bgr: the mean subtracted.
    """

    crop_size: int | tuple[int, int] = 321
    label_stride: int = 8
    label_offset: int = 0
    mirror: bool = True
    mean_bgr: tuple[float, float, float] = MEAN_BGR

    def __post_init__(self) -> None:
        ch, cw = self.crop_hw
        if ch < 1 or cw < 1:
            raise ValueError(f"crop_size must be positive, got {self.crop_size}")
        if self.label_stride < 1 or not 0 <= self.label_offset < self.label_stride:
            raise ValueError(
                f"need label_stride >= 1 and 0 <= label_offset < label_stride, got "
                f"{self.label_stride}, {self.label_offset}"
            )

    @property
    def crop_hw(self) -> tuple[int, int]:
        if isinstance(self.crop_size, int):
            return (self.crop_size, self.crop_size)
        return (int(self.crop_size[0]), int(self.crop_size[1]))

    def __call__(
        self, sample: Sample, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if rng is None:
            raise ValueError("TrainTransform needs a numpy Generator (it is random)")
        ch, cw = self.crop_hw
        image = pad_bottom_right(to_caffe(sample.image, self.mean_bgr), ch, cw, 0.0)
        label = pad_bottom_right(sample.label, ch, cw, IGNORE_INDEX)
        top, left = random_crop_offsets(image.shape[1], image.shape[2], ch, cw, rng)
        image, label = crop(image, top, left, ch, cw), crop(label, top, left, ch, cw)
        if self.mirror and rng.random() < 0.5:
            image, label = hflip(image), hflip(label)
        label = subsample_label(label, self.label_stride, self.label_offset)
        return np.ascontiguousarray(image), label.astype(np.int64)


@dataclass(frozen=True)
class EvalTransform:
    """Sample -> (image (3, H', W') float32, label (H', W') int64) on the whole image.

    No crop. Optional bottom/right padding (image 0 = the mean, label 255, so scoring the
    padded prediction equals scoring the cropped one): to a fixed ``pad_to`` size (the
    released test pads to 513x513; a larger image is an error), or up to the next size with
    ``(size - pad_offset) % pad_multiple == 0`` (e.g. multiple 8, offset 1: 8k + 1 sizes).
    With ``pad_label=False`` the label keeps the image's original size.
    """

    pad_to: int | tuple[int, int] | None = None
    pad_multiple: int | None = None
    pad_offset: int = 0
    pad_label: bool = True
    mean_bgr: tuple[float, float, float] = MEAN_BGR

    def __post_init__(self) -> None:
        if self.pad_to is not None and self.pad_multiple is not None:
            raise ValueError("give pad_to or pad_multiple, not both")
        if self.pad_multiple is not None and self.pad_multiple < 1:
            raise ValueError(f"pad_multiple must be >= 1, got {self.pad_multiple}")
        if self.pad_offset < 0:
            raise ValueError(f"pad_offset must be >= 0, got {self.pad_offset}")

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """The (H', W') an (height, width) image is padded to."""
        if self.pad_to is not None:
            th, tw = (self.pad_to, self.pad_to) if isinstance(self.pad_to, int) else self.pad_to
            if height > th or width > tw:
                raise ValueError(f"image {height}x{width} is larger than pad_to {th}x{tw}")
            return int(th), int(tw)
        if self.pad_multiple is not None:
            m, o = self.pad_multiple, self.pad_offset

            def up(n: int) -> int:
                return o + m * math.ceil(max(n - o, 0) / m)

            return up(height), up(width)
        return height, width

    def __call__(
        self, sample: Sample, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        h, w = sample.size
        th, tw = self.padded_size(h, w)
        image = pad_bottom_right(to_caffe(sample.image, self.mean_bgr), th, tw, 0.0)
        label = sample.label
        if self.pad_label:
            label = pad_bottom_right(label, th, tw, IGNORE_INDEX)
        return np.ascontiguousarray(image), label.astype(np.int64)
