"""The dense CRF on images: DeepLab's post-processing (Chen et al. 2015, section 4).

Pixel i of an (H, W) image is point ``y * W + x``; the bilateral kernel of eq. (3) uses
the features ``(x/theta_alpha, y/theta_alpha, r/theta_beta, g/theta_beta, b/theta_beta)``
and the spatial kernel ``(x/theta_gamma, y/theta_gamma)``, exactly as pydensecrf's
``addPairwiseBilateral`` and ``addPairwiseGaussian``.

Every entry point takes ``(image, maps, params=None, *, ...)``: the image, the per-label
maps (probabilities, logits, energies or a label map), then :class:`CRFParams`. Numpy in,
numpy out; a torch tensor in (or ``backend="torch"``) runs :mod:`deeplab.crf.torch_backend`
and returns a tensor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast, overload

import numpy as np

from deeplab.crf import kernels
from deeplab.crf._callbacks import reshaped
from deeplab.crf.kernel_cache import add_cached_kernel
from deeplab.crf.meanfield import DenseCRF, padded_width
from deeplab.crf.params import CRFParams, check_params
from deeplab.crf.threads import adapted_threads, thread_shares
from deeplab.crf.unary import channel_to_label, unary_from_labels, unary_from_logits
from deeplab.crf.validation import (
    BACKENDS,
    check_backend,
    check_compat,
    check_image,
    check_label_maps,
    is_tensor,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "BACKENDS",
    "ImageCRF",
    "add_image_kernels",
    "available_memory",
    "bilateral_features",
    "check_memory",
    "dense_crf",
    "dense_crf_from_labels",
    "dense_crf_from_logits",
    "dense_crf_from_unary",
    "estimate_memory",
    "spatial_features",
]

log = logging.getLogger(__name__)

# Peak bytes of the CPU backend, fitted to measurements (4000x3000, 21 labels: 4.9 GiB
# measured, 6.0 GiB estimated):
# per pixel and label (probabilities, their log, the output), per pixel and padded label
# (-U), per pixel (lattice corners, folded weights, features) and per lattice row and
# padded label (values, scratch, and one private buffer per thread share: the fused Potts
# pass needs only two value buffers, but label-compatibility matrices and step-by-step
# inference scatter into private copies); lattices rarely have more rows than 0.2 per
# pixel. The estimate errs on the high side.
_PER_PIXEL_LABEL = 8
_PER_PIXEL_WIDTH = 4
_PER_PIXEL = 200
_ROWS_PER_PIXEL = 0.2
_NO_IMAGE = np.zeros((1, 1, 3), np.uint8)  # spatial features read no colours


def spatial_features(height: int, width: int, theta: float) -> np.ndarray:
    """(H*W, 2) float32 features (x/theta, y/theta) in row-major pixel order."""
    out = np.empty((height * width, 2), np.float32)
    if out.size:
        kernels.image_features(_NO_IMAGE, width, np.float32(theta), np.float32(1.0), out)
    return out


def bilateral_features(image: np.ndarray, theta_alpha: float, theta_beta: float) -> np.ndarray:
    """(H*W, 5) float32 features (x/theta_alpha, y/theta_alpha, rgb/theta_beta)."""
    img = np.ascontiguousarray(image)
    h, w = img.shape[:2]
    out = np.empty((h * w, 5), np.float32)
    if out.size:
        kernels.image_features(img, w, np.float32(theta_alpha), np.float32(theta_beta), out)
    return out


def estimate_memory(height: int, width: int, num_labels: int) -> int:
    """Approximate peak bytes of the CPU CRF on an image of this size."""
    n = height * width
    w = padded_width(num_labels)
    rows = _ROWS_PER_PIXEL * n * w * 4 * (2 + thread_shares())
    return int(n * (num_labels * _PER_PIXEL_LABEL + w * _PER_PIXEL_WIDTH + _PER_PIXEL) + rows)


def available_memory() -> int | None:
    """Bytes the system can still give this process (Linux MemAvailable), if known."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_memory(height: int, width: int, num_labels: int) -> None:
    """Refuse, with the figures, an input the CPU backend could not hold in memory; being
    killed by the system half-way helps nobody."""
    need = estimate_memory(height, width, num_labels)
    have = available_memory()
    if have is not None and need > have:
        raise MemoryError(
            f"the CRF on a {width}x{height} image with {num_labels} labels needs about "
            f"{need / 2**30:.1f} GiB, only {have / 2**30:.1f} GiB is available; downscale "
            "the image or use fewer labels"
        )


def _check_memory_of(maps: object) -> None:
    """:func:`check_memory` from the shape of (L, H, W) maps alone: before any float32 or
    contiguous copy of an input that is already too large is made."""
    shape = np.shape(maps)  # type: ignore[call-overload]  # anything with a shape, or none
    if len(shape) == 3 and all(isinstance(n, int | np.integer) and n > 0 for n in shape):
        check_memory(int(shape[1]), int(shape[2]), int(shape[0]))


def add_spatial_kernel(
    crf: DenseCRF,
    height: int,
    width: int,
    theta_gamma: float,
    compat: float | np.ndarray,
    normalization: str,
) -> None:
    """Add the spatial kernel of an H x W image (kept for the next image of this size,
    see :mod:`deeplab.crf.kernel_cache`)."""
    theta = float(theta_gamma)
    add_cached_kernel(
        crf,
        ("image spatial", height, width, theta),
        lambda: spatial_features(height, width, theta),
        compat,
        normalization,
    )


def add_image_kernels(
    crf: DenseCRF,
    image: np.ndarray,
    params: CRFParams,
    compat: np.ndarray | None = None,
) -> DenseCRF:
    """Add DeepLab's spatial and bilateral kernels for an (H, W, 3) uint8 image to ``crf``."""
    h, w = image.shape[:2]
    # With a compatibility matrix mu, kernel m costs w_m * mu; Potts is mu = [l != l'].
    c1 = params.w1 if compat is None else params.w1 * compat
    c2 = params.w2 if compat is None else params.w2 * compat
    if params.w2 > 0:
        add_spatial_kernel(crf, h, w, params.theta_gamma, c2, params.normalization)
    if params.w1 > 0:
        crf.add_kernel(
            bilateral_features(image, params.theta_alpha, params.theta_beta),
            c1,
            params.normalization,
        )
    return crf


def _run(
    crf_for: Callable[[np.ndarray], DenseCRF],
    maps: object,
    name: str,
    image: object,
    params: CRFParams | None,
    compat: object,
    callback: Callable[[int, np.ndarray], None] | None,
) -> np.ndarray:
    """Shared body of the numba entry points: checks, kernels, inference; (L, H, W) out."""
    params = check_params(params)
    _check_memory_of(maps)
    img = check_image(image)
    h, w = img.shape[:2]
    arr = check_label_maps(maps, name, (h, w), finite=False)
    num_labels = arr.shape[0]
    check_memory(h, w, num_labels)
    mu = check_compat(compat, num_labels)
    cb = reshaped(callback, (num_labels, h, w))
    with adapted_threads():
        crf = add_image_kernels(crf_for(arr.reshape(num_labels, h * w)), img, params, mu)
        q = crf.inference(params.iterations, callback=cb)
    return q.reshape(num_labels, h, w)


class ImageCRF(Protocol):
    """The entry points' signature: ``f(image, maps, params=None, *, compat=None,
    callback=None, backend="auto")``, ``maps`` being the probabilities, logits or unary
    (positional: each function has its own name for them). Numpy arrays give an array,
    a tensor of maps (or ``backend="torch"``) a tensor on the maps' device."""

    @overload
    def __call__(
        self,
        image: np.ndarray,
        maps: np.ndarray,
        /,
        params: CRFParams | None = None,
        *,
        compat: np.ndarray | None = None,
        callback: Callable[[int, np.ndarray], None] | None = None,
        backend: Literal["auto", "numba"] = "auto",
    ) -> np.ndarray: ...

    @overload
    def __call__(
        self,
        image: np.ndarray | torch.Tensor,
        maps: torch.Tensor,
        /,
        params: CRFParams | None = None,
        *,
        compat: np.ndarray | torch.Tensor | None = None,
        callback: Callable[[int, torch.Tensor], None] | None = None,
        backend: Literal["auto", "torch"] = "auto",
    ) -> torch.Tensor: ...

    @overload
    def __call__(
        self,
        image: object,
        maps: object,
        /,
        params: CRFParams | None = None,
        *,
        compat: object = None,
        callback: Callable[[int, Any], None] | None = None,
        backend: str = "auto",
    ) -> np.ndarray | torch.Tensor: ...


def _entry_point(fn: Callable[..., np.ndarray | torch.Tensor]) -> ImageCRF:
    # The function itself, unchanged (its signature and docstring are what help() shows);
    # type checkers see ImageCRF's overloads instead.
    return cast(ImageCRF, fn)


@_entry_point
def dense_crf_from_unary(
    image: object,
    unary: object,
    params: CRFParams | None = None,
    *,
    compat: object = None,
    callback: Callable[[int, Any], None] | None = None,
    backend: str = "auto",
) -> np.ndarray | torch.Tensor:
    """Mean-field marginals (L, H, W) float32 from energies ``unary = -log P`` (L, H, W).

    image: (H, W, 3) uint8 RGB. params: :class:`CRFParams` (default ``deeplab-largefov``).
    compat: optional (L, L) label compatibility mu (default Potts, mu = [l != l']).
    callback(it, q): after each iteration, q the (L, H, W) marginals (a copy).
    backend: see :data:`BACKENDS`; the torch backend returns a tensor on the unary's device.
    """
    if check_backend(backend, image, unary) == "torch":
        from deeplab.crf import torch_backend

        return torch_backend.dense_crf_from_unary(
            image, unary, params, compat=compat, callback=callback
        )
    return _run(DenseCRF, unary, "unary", image, params, compat, callback)


@_entry_point
def dense_crf(
    image: object,
    probs: object,
    params: CRFParams | None = None,
    *,
    compat: object = None,
    callback: Callable[[int, Any], None] | None = None,
    backend: str = "auto",
) -> np.ndarray | torch.Tensor:
    """Refine class probabilities (L, H, W) of an (H, W, 3) uint8 RGB image.

    Returns the CRF marginals (L, H, W) float32; the label map is ``q.argmax(0)``.
    Unary energies are ``-log P`` (paper section 4). The other arguments are
    :func:`dense_crf_from_unary`'s.
    """
    if check_backend(backend, image, probs) == "torch":
        from deeplab.crf import torch_backend

        return torch_backend.dense_crf(image, probs, params, compat=compat, callback=callback)
    return _run(DenseCRF.from_probabilities, probs, "probs", image, params, compat, callback)


@_entry_point
def dense_crf_from_logits(
    image: object,
    logits: object,
    params: CRFParams | None = None,
    *,
    compat: object = None,
    callback: Callable[[int, Any], None] | None = None,
    backend: str = "auto",
) -> np.ndarray | torch.Tensor:
    """As :func:`dense_crf` for unnormalised scores (L, H, W), e.g. a network's output:
    unary ``-logits``."""
    if check_backend(backend, image, logits) == "torch":
        from deeplab.crf import torch_backend

        return torch_backend.dense_crf_from_logits(
            image, logits, params, compat=compat, callback=callback
        )
    _check_memory_of(logits)
    return _run(DenseCRF, unary_from_logits(logits), "unary", image, params, compat, callback)


@overload
def dense_crf_from_labels(
    image: np.ndarray,
    labels: np.ndarray,
    params: CRFParams | None = None,
    *,
    num_labels: int | None = None,
    confidence: float = 0.7,
    unknown: int | None = None,
    compat: np.ndarray | None = None,
    callback: Callable[[int, np.ndarray], None] | None = None,
    backend: Literal["auto", "numba"] = "auto",
) -> tuple[np.ndarray, np.ndarray]: ...


@overload
def dense_crf_from_labels(
    image: object,
    labels: np.ndarray,
    params: CRFParams | None = None,
    *,
    num_labels: int | None = None,
    confidence: float = 0.7,
    unknown: int | None = None,
    compat: object = None,
    callback: Callable[[int, Any], None] | None = None,
    backend: str = "auto",
) -> tuple[np.ndarray | torch.Tensor, np.ndarray]: ...


def dense_crf_from_labels(
    image: object,
    labels: np.ndarray,
    params: CRFParams | None = None,
    *,
    num_labels: int | None = None,
    confidence: float = 0.7,
    unknown: int | None = None,
    compat: object = None,
    callback: Callable[[int, Any], None] | None = None,
    backend: str = "auto",
) -> tuple[np.ndarray | torch.Tensor, np.ndarray]:
    """Refine a coarse (H, W) label map; pixels equal to ``unknown`` are left to the CRF.

    num_labels defaults to the number of distinct known values' range; confidence is the
    probability given to each known pixel's label (:func:`~deeplab.crf.unary_from_labels`).
    The other arguments are :func:`dense_crf_from_unary`'s. Returns (marginals (L, H, W)
    float32, refined label map (H, W) int64 in the input's values).
    """
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels: expected an (H, W) label map, got shape {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise TypeError(f"labels: expected an integer label map, got dtype {lab.dtype}")
    if num_labels is None:
        known = lab if unknown is None else lab[lab != unknown]
        if known.size == 0:
            raise ValueError("labels: every pixel is unknown; nothing to propagate")
        top = int(known.max())
        num_labels = top if unknown is not None and top > unknown else top + 1
        num_labels = max(num_labels, 2)
    # One label value of 2**28 asks for 2**28 unary channels: refuse before allocating.
    if isinstance(num_labels, int | np.integer):  # anything else: unary_from_labels says
        check_memory(lab.shape[0], lab.shape[1], int(num_labels))
    u = unary_from_labels(lab, num_labels, confidence=confidence, unknown=unknown)
    q = dense_crf_from_unary(image, u, params, compat=compat, callback=callback, backend=backend)
    best = q.argmax(0)
    best_np = best.cpu().numpy() if is_tensor(best) else np.asarray(best)
    return q, channel_to_label(best_np, unknown).astype(np.int64)
