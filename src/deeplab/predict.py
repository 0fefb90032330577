"""Whole-image inference (paper section 3): pad, forward, upsample x8, crop, optional CRF.

The one path from an image to its labels: :class:`Predictor` runs the network and
:func:`refine` turns scores into labels, with the fully connected CRF of paper section 4
when parameters are given. Segmenting files, the web demo, evaluation and CRF tuning all
go through these two; evaluation and tuning call :func:`refine` on saved scores.

The released Caffe test nets score the whole image padded to 513x513 (514 for DeepLab;
bottom/right, with the mean, which is 0 in the Caffe input convention), upsample the stride-8
scores with an ``Interp`` layer of zoom factor 8 (paper section 3.1) and crop to the image.
Caffe's interpolation maps an ``h``-cell map to ``h + (h - 1)(8 - 1) = 8h - 7`` pixels with
output pixel ``8i`` equal to input cell ``i``: PyTorch's ``align_corners=True`` bilinear
resize to that size. For the 3/2/1-pooling variants output cell ``i`` is centred on image
pixel ``8i``, so the upsampled map lands exactly on the image grid for any input size;
DeepLab's 2/2/1 pools put cell 0 at pixel -7.5, which its test net undoes by dropping 7
leading pixels (``fc8_crop``), and the MSc test nets add their branches at full resolution:
:meth:`Predictor.logits` runs the network's own test path
(:meth:`deeplab.models.DeepLab.image_scores`). Padding is only needed to reproduce the
released test (``pad_to=513``, 514 for DeepLab) or to give all images one shape.

Example::

    from deeplab.models import load_model
    from deeplab.predict import Predictor
    from deeplab.crf import CRFParams

    predictor = Predictor(load_model("model.safetensors"), crf=CRFParams.preset("deeplab-largefov"))
    labels = predictor.predict(image)        # (H, W) uint8 from an (H, W, 3) uint8 RGB image
    result = predictor.segment(image, keep_probs=True)   # labels, dcnn_labels, probs
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)
from PIL import Image
from torch import nn

from deeplab.crf import CRFParams, DenseCRF
from deeplab.crf import dense as crf_dense
from deeplab.crf.threads import adapted_threads
from deeplab.crf.validation import check_image, check_label_maps
from deeplab.models import to_model_input
from deeplab.threads import rebalance_torch_threads

__all__ = [
    "OUTPUT_STRIDE",
    "Predictor",
    "Segmentation",
    "crf_size",
    "full_resolution",
    "pad_input",
    "padded_size",
    "refine",
    "softmax",
    "upsample_logits",
]

log = logging.getLogger(__name__)

OUTPUT_STRIDE = 8
"""Stride of every DeepLab v1 score map relative to its input (paper section 3.1)."""


def padded_size(
    height: int, width: int, pad_to: int | tuple[int, int] | None = None
) -> tuple[int, int]:
    """The (H', W') an (height, width) image is padded to before the forward pass.

    ``pad_to`` given: that fixed size (513 reproduces the released test; a larger image is a
    ValueError). ``None``: the smallest ``8k + 1`` at least as large, the sizes on which
    the x8 upsampled scores cover the padded input exactly (321, 513, ...).
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if pad_to is not None:
        th, tw = (pad_to, pad_to) if isinstance(pad_to, int) else (int(pad_to[0]), int(pad_to[1]))
        if height > th or width > tw:
            raise ValueError(f"image {height}x{width} is larger than pad_to {th}x{tw}")
        return th, tw

    def up(n: int) -> int:
        return OUTPUT_STRIDE * math.ceil((n - 1) / OUTPUT_STRIDE) + 1

    return up(height), up(width)


def pad_input(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero-pad a Caffe-convention batch (B, 3, H, W) at the bottom/right to ``size``.

    Zero is the mean colour in this convention: the paper's padding.
    """
    h, w = x.shape[-2:]
    th, tw = size
    if th < h or tw < w:
        raise ValueError(f"cannot pad {h}x{w} to the smaller {th}x{tw}")
    if (th, tw) == (h, w):
        return x
    return F.pad(x, (0, tw - w, 0, th - h))


def _has_own_test_path(model: nn.Module) -> bool:
    """Whether the model's released test net differs from upsampling ``model(x)`` x8."""
    variant = getattr(model, "variant", None)
    if variant is None or not hasattr(model, "image_scores"):
        return False
    return bool(getattr(variant, "score_crop", 0)) or getattr(model, "msc", None) is not None


def full_resolution(scores: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(L, H, W) scores for an image of ``size`` from :meth:`Predictor.scores`: stride-8
    scores are upsampled x8 and cropped (:func:`upsample_logits`), scores already on the
    image's grid are returned as they are."""
    t = scores if isinstance(scores, torch.Tensor) else torch.from_numpy(np.asarray(scores))
    t = t.float()
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    return upsample_logits(t, size)


def upsample_logits(
    logits: torch.Tensor, size: tuple[int, int] | None = None, factor: int = OUTPUT_STRIDE
) -> torch.Tensor:
    """Caffe's ``Interp`` with ``zoom_factor``: (..., L, h, w) -> (..., L, H, W).

    Bilinear with align-corners semantics to ``(factor(h-1)+1, factor(w-1)+1)``, so output
    pixel ``factor * i`` is input cell ``i`` exactly, then cropped to ``size`` (the image)
    at the top-left. ``size`` larger than the upsampled map is a ValueError.
    """
    if logits.dim() < 3:
        raise ValueError(f"expected (..., L, h, w) scores, got shape {tuple(logits.shape)}")
    h, w = logits.shape[-2:]
    full = (factor * (h - 1) + 1, factor * (w - 1) + 1)
    lead = logits.shape[:-3]
    x = logits.reshape(-1, *logits.shape[-3:])
    if not x.is_floating_point():
        raise ValueError(f"scores must be floating point, got {x.dtype}")
    up = F.interpolate(x, size=full, mode="bilinear", align_corners=True)
    if size is not None:
        th, tw = size
        if th > full[0] or tw > full[1]:
            raise ValueError(
                f"upsampled scores are {full[0]}x{full[1]}, smaller than the image {th}x{tw}"
            )
        up = up[..., :th, :tw]
    return up.reshape(*lead, *up.shape[-3:])


def softmax(logits: np.ndarray) -> np.ndarray:
    """(L, H, W) class probabilities from scores, over axis 0 (a new float array)."""
    z = logits - logits.max(axis=0, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=0, keepdims=True)
    return z


def crf_size(height: int, width: int, max_pixels: int | None = None) -> tuple[int, int]:
    """(h, w) the CRF of :func:`refine` runs at for an image of this size: the image's own,
    or scaled down (aspect kept) to at most ``max_pixels`` pixels."""
    if max_pixels is None or height * width <= max_pixels:
        return height, width
    scale = math.sqrt(max_pixels / (height * width))
    return max(1, int(height * scale)), max(1, int(width * scale))


def _resize_nearest(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) labels or (L, H, W) float32 maps -> ``size`` (h, w), nearest neighbour."""
    h, w = size
    if maps.ndim == 2:
        return np.asarray(Image.fromarray(maps).resize((w, h), Image.Resampling.NEAREST))
    return np.stack(
        [np.asarray(Image.fromarray(m).resize((w, h), Image.Resampling.NEAREST)) for m in maps]
    )


@overload
def refine(
    image: np.ndarray,
    scores: np.ndarray | torch.Tensor,
    params: CRFParams | None,
    *,
    max_pixels: int | None = None,
    callback: Callable[[int, np.ndarray], None] | None = None,
    keep_probs: Literal[False] = False,
) -> np.ndarray: ...


@overload
def refine(
    image: np.ndarray,
    scores: np.ndarray | torch.Tensor,
    params: CRFParams | None,
    *,
    max_pixels: int | None = None,
    callback: Callable[[int, np.ndarray], None] | None = None,
    keep_probs: Literal[True],
) -> tuple[np.ndarray, np.ndarray]: ...


def refine(
    image: np.ndarray,
    scores: np.ndarray | torch.Tensor,
    params: CRFParams | None,
    *,
    max_pixels: int | None = None,
    callback: Callable[[int, np.ndarray], None] | None = None,
    keep_probs: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Labels of an (H, W, 3) uint8 RGB image from its network scores (paper section 4).

    Args:
        image: the (H, W, 3) uint8 RGB image the scores belong to.
        scores: what :meth:`Predictor.scores` returns: (L, h, w) stride-8 scores (upsampled
            x8 and cropped here, :func:`full_resolution`) or (L, H, W) on the image's grid.
        params: the fully connected CRF's parameters (unary ``-scores``, which equals
            ``-log softmax`` up to a per-pixel constant), or None for the plain argmax.
        max_pixels: images larger than this get their CRF on an area-averaged copy of at
            most this many pixels (:func:`crf_size`; ``theta_alpha`` and ``theta_gamma`` are
            widths in pixels and are scaled alike), its labels scaled back up (nearest): a
            bound on the CRF's memory and time. None: always at full size.
        callback: ``callback(it, q)`` after every mean-field iteration: the iteration
            number (from 0) and the (L, h, w) marginals at the CRF's size (a buffer the next
            iteration overwrites: copy what you keep); an exception it raises (a cancelled
            job) ends the CRF.
        keep_probs: also return (L, H, W) float32 probabilities: the CRF marginals, or the
            softmax of the scores without a CRF.

    Returns:
        (H, W) uint8 labels, or ``(labels, probs)`` with ``keep_probs``. A CRF that does not
        fit in memory is a MemoryError (:func:`deeplab.crf.dense.check_memory`); parameters
        it cannot use are a ValueError.
    """
    h, w = np.shape(image)[:2]
    full = full_resolution(scores, (h, w))
    if params is None:
        logits = full.numpy()
        labels = np.asarray(logits.argmax(0), dtype=np.uint8)
        return (labels, softmax(logits)) if keep_probs else labels
    img = check_image(image)
    num_labels = int(full.shape[0])
    ch, cw = crf_size(h, w, max_pixels)
    crf_dense.check_memory(ch, cw, num_labels)
    run = params
    if (ch, cw) != (h, w):
        # Area averaging for both inputs; the spatial kernels' widths are in pixels.
        img = np.asarray(Image.fromarray(img).resize((cw, ch), Image.Resampling.BOX))
        full = F.interpolate(full[None], size=(ch, cw), mode="area")[0]
        scale = cw / w
        run = params.replace(
            theta_alpha=params.theta_alpha * scale, theta_gamma=params.theta_gamma * scale
        )
    # Built from DenseCRF directly, not dense_crf_from_logits: that keeps the scores alive
    # through the whole inference and copies the marginals for every callback. Here each
    # large buffer is dropped once the next exists, since the CRF's peak memory is what
    # bounds the image size (crf_dense.estimate_memory).
    unary = np.negative(check_label_maps(full.numpy(), "scores", (ch, cw), finite=False))
    del full
    hook = None
    if callback is not None:

        def hook(it: int, q: np.ndarray) -> None:
            callback(it, q.reshape(num_labels, ch, cw))

    with adapted_threads():
        crf = DenseCRF(unary.reshape(num_labels, ch * cw))
        del unary
        crf_dense.add_image_kernels(crf, img, run)
        q = crf.inference(run.iterations, callback=hook)
    del crf
    labels = np.asarray(q.argmax(0), dtype=np.uint8).reshape(ch, cw)
    probs = q.reshape(num_labels, ch, cw) if keep_probs else None
    del q
    if (ch, cw) != (h, w):
        labels = _resize_nearest(labels, (h, w))
        probs = None if probs is None else _resize_nearest(probs, (h, w))
    return (labels, probs) if probs is not None else labels


@dataclass
class Segmentation:
    """One image's result: ``labels`` (H, W) uint8 (after the CRF when one ran),
    ``dcnn_labels`` the network's own argmax, ``probs`` (L, H, W) float32 (CRF marginals,
    else the softmax) when asked for."""

    labels: np.ndarray
    dcnn_labels: np.ndarray
    probs: np.ndarray | None = None


def _check_rgb(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError("image must be a uint8 numpy array (H, W, 3), RGB")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got {image.shape}")
    return image


class Predictor:
    """A trained network plus the paper's test-time pipeline (sections 3 and 4).

    Args:
        model: maps (B, 3, H, W) Caffe-convention input to (B, L, h, w) stride-8 logits
            (any :func:`deeplab.models.build_model` network). Put in eval mode here.
        crf: CRF parameters for :meth:`predict` and :meth:`segment`, or ``None`` for the
            plain argmax.
        device: where the network runs (the CRF runs on the CPU).
        pad_to: fixed padded size (513 for the released test) or ``None`` (next 8k + 1).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        crf: CRFParams | None = None,
        device: str | torch.device = "cpu",
        pad_to: int | tuple[int, int] | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.crf = crf
        self.pad_to = pad_to
        self.num_classes = int(getattr(model, "num_classes", 0)) or None
        self.class_names: tuple[str, ...] = tuple(getattr(model, "class_names", ()) or ())

    def check_size(self, height: int, width: int) -> None:
        """MemoryError with the figures when the CRF could not hold this image in memory."""
        if self.crf is not None and self.num_classes is not None:
            crf_dense.check_memory(height, width, self.num_classes)

    def _input(self, image: np.ndarray) -> torch.Tensor:
        """(1, 3, H', W') padded Caffe-convention input of an (H, W, 3) uint8 RGB image."""
        h, w = image.shape[:2]
        rgb = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
        return pad_input(to_model_input(rgb.to(self.device)), padded_size(h, w, self.pad_to))

    @torch.no_grad()
    def stride8_logits(self, image: np.ndarray) -> np.ndarray:
        """(L, h, w) float32 network scores of the padded image (what evaluation saves):
        ``model(x)``, for MSc the train nets' stride-8 sum (:meth:`logits` is the test net)."""
        x = self._input(_check_rgb(image))
        if self.device.type == "cpu":
            rebalance_torch_threads()
        out = self.model(x)
        return out[0].float().cpu().numpy()

    def scores(self, image: np.ndarray) -> np.ndarray:
        """The scores worth keeping for an image (what evaluation saves, what the web demo
        caches): (L, h, w) stride-8 scores where upsampling them x8 is the released test
        (LargeFOV, 7x7, 4x4 and other models), else (L, H, W) scores on the image's grid
        (``deeplab``'s ``fc8_crop``, the MSc fusion). :func:`full_resolution` turns either
        into (L, H, W)."""
        if _has_own_test_path(self.model):
            return self.logits(image)
        return self.stride8_logits(image)

    @torch.no_grad()
    def logits(self, image: np.ndarray) -> np.ndarray:
        """(L, H, W) float32 scores at the image's resolution.

        A :class:`~deeplab.models.DeepLab` computes them as its released test net does
        (:meth:`~deeplab.models.DeepLab.image_scores`: ``deeplab``'s ``fc8_crop``, the MSc
        branches fused at full resolution); any other model's stride-8 scores are upsampled
        x8 and cropped.
        """
        img = _check_rgb(image)
        full = getattr(self.model, "image_scores", None)
        if full is None:
            scores = torch.from_numpy(self.stride8_logits(img))
            return upsample_logits(scores, img.shape[:2]).numpy()
        h, w = img.shape[:2]
        out = full(self._input(img))
        return out[0, :, :h, :w].float().cpu().numpy()

    def segment(self, image: np.ndarray, keep_probs: bool = False) -> Segmentation:
        """Labels of an (H, W, 3) uint8 RGB image (see :class:`Segmentation`); the CRF's
        memory is checked before the network runs."""
        self.check_size(*image.shape[:2])
        logits = self.logits(image)
        dcnn = np.asarray(logits.argmax(0), dtype=np.uint8)
        if keep_probs:
            labels, probs = refine(image, logits, self.crf, keep_probs=True)
            return Segmentation(labels, dcnn, probs)
        return Segmentation(refine(image, logits, self.crf), dcnn)

    def predict(self, image: np.ndarray, use_crf: bool = True) -> np.ndarray:
        """(H, W) uint8 label map: the argmax of :meth:`logits`, after the CRF if the
        predictor has one and ``use_crf``."""
        return refine(image, self.logits(image), self.crf if use_crf else None)
