"""Whole-image inference (SPEC section 3): pad, forward, upsample x8, crop, optional CRF.

The released Caffe test nets score the whole image padded to 513x513 (514 for DeepLab;
bottom/right, with the mean, which is 0 in the Caffe input convention), upsample the stride-8
scores with an ``Interp`` layer of zoom factor 8 and crop to the image. Caffe's interpolation
maps an ``h``-cell map to ``h + (h - 1)(8 - 1) = 8h - 7`` pixels with output pixel ``8i``
equal to input cell ``i``: PyTorch's ``align_corners=True`` bilinear resize to that size. For
the 3/2/1-pooling variants output cell ``i`` is centred on image pixel ``8i``, so the
upsampled map lands exactly on the image grid for any input size; DeepLab's 2/2/1 pools put
cell 0 at pixel -7.5, which its test net undoes by dropping 7 leading pixels (``fc8_crop``),
and the MSc test nets add their branches at full resolution: :meth:`Predictor.logits` runs
the network's own test path (:meth:`deeplab.models.DeepLab.image_scores`). Padding is only
needed to reproduce the released test (``pad_to=513``, 514 for DeepLab) or to give all
images one shape.

Example::

    from deeplab.models import load_model
    from deeplab.predict import Predictor
    from deeplab.crf import CRFParams

    predictor = Predictor(load_model("model.safetensors"), crf=CRFParams.preset("deeplab-largefov"))
    labels = predictor.predict(image)        # (H, W) uint8 from an (H, W, 3) uint8 RGB image
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)
from torch import nn

from deeplab.crf import CRFParams, dense_crf_from_logits
from deeplab.models import to_model_input
from deeplab.threads import rebalance_torch_threads

__all__ = [
    "OUTPUT_STRIDE",
    "Predictor",
    "crf_labels",
    "full_resolution",
    "pad_input",
    "padded_size",
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


def crf_labels(image: np.ndarray, logits: np.ndarray, params: CRFParams | None) -> np.ndarray:
    """(H, W) uint8 labels from full-resolution (L, H, W) scores: the argmax, after the
    dense CRF (paper section 4, unary = -log softmax) when ``params`` is given."""
    if params is None:
        return np.asarray(logits.argmax(0), dtype=np.uint8)
    q = dense_crf_from_logits(image, np.ascontiguousarray(logits, dtype=np.float32), params)
    return np.asarray(q.argmax(0), dtype=np.uint8)


class Predictor:
    """A trained network plus the paper's test-time pipeline.

    Args:
        model: maps (B, 3, H, W) Caffe-convention input to (B, L, h, w) stride-8 logits
            (any :func:`deeplab.models.build_model` network). Put in eval mode here.
        device: where the network runs.
        crf: CRF parameters for :meth:`predict`, or ``None`` for the plain argmax.
        pad_to: fixed padded size (513 for the released test) or ``None`` (next 8k + 1).
    """

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "cpu",
        crf: CRFParams | None = None,
        pad_to: int | tuple[int, int] | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.crf = crf
        self.pad_to = pad_to

    @staticmethod
    def _check(image: np.ndarray) -> np.ndarray:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise ValueError("image must be a uint8 numpy array (H, W, 3), RGB")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be (H, W, 3), got {image.shape}")
        return image

    @torch.no_grad()
    def stride8_logits(self, image: np.ndarray) -> np.ndarray:
        """(L, h, w) float32 network scores of the padded image (what evaluation saves):
        ``model(x)``, for MSc the train nets' stride-8 sum (:meth:`logits` is the test net)."""
        img = self._check(image)
        h, w = img.shape[:2]
        rgb = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].to(self.device)
        x = pad_input(to_model_input(rgb), padded_size(h, w, self.pad_to))
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
        img = self._check(image)
        full = getattr(self.model, "image_scores", None)
        if full is None:
            scores = torch.from_numpy(self.stride8_logits(img))
            return upsample_logits(scores, img.shape[:2]).numpy()
        h, w = img.shape[:2]
        rgb = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].to(self.device)
        out = full(pad_input(to_model_input(rgb), padded_size(h, w, self.pad_to)))
        return out[0, :, :h, :w].float().cpu().numpy()

    def predict(self, image: np.ndarray, use_crf: bool = True) -> np.ndarray:
        """(H, W) uint8 label map: the argmax of :meth:`logits`, after the CRF if the
        predictor has one and ``use_crf``."""
        return crf_labels(image, self.logits(image), self.crf if use_crf else None)
