"""A drop-in replacement for ``pydensecrf.utils``: unaries and pairwise features.

Same functions, argument order, defaults, shapes and values as pydensecrf's, with clear
ValueError/TypeError messages where pydensecrf would raise an IndexError, an assertion
(which ``python -O`` removes) or silently return features of the wrong size.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Sequence

import numpy as np

from deeplab.crf.pydensecrf._checks import check_scales, integer, real_numbers
from deeplab.crf.validation import check_finite

__all__ = [
    "compute_unary",
    "create_pairwise_bilateral",
    "create_pairwise_gaussian",
    "softmax_to_unary",
    "unary_from_labels",
    "unary_from_softmax",
]


def _positive_scales(values: object, count: int | None, name: str) -> list[np.float32]:
    """Standard deviations as float32 (pydensecrf divides float32 features by them)."""
    if isinstance(values, str):
        raise TypeError(f"{name}: expected numbers, got {values!r}")
    arr = real_numbers(values, name).astype(np.float64)
    if arr.ndim != 1 or (count is not None and arr.shape[0] != count):
        want = "a sequence" if count is None else f"{count} values"
        raise ValueError(f"{name}: expected {want}, got {values!r}")
    check_scales(arr, name, values)
    return [np.float32(v) for v in arr]


def _scaled_grid(shape: tuple[int, ...], sdims: object) -> np.ndarray:
    """(len(shape), *shape) float32 index grids divided by sdims (ij order)."""
    scales = _positive_scales(sdims, len(shape), "sdims")
    grid = np.indices(shape, dtype=np.float32)
    for axis, s in enumerate(scales):
        grid[axis] /= s
    return grid


def unary_from_labels(
    labels: np.ndarray, n_labels: int, gt_prob: float, zero_unsure: bool = True
) -> np.ndarray:
    """pydensecrf's ``unary_from_labels``: (n_labels, N) float32 energies from a label map.

    Each pixel's label gets probability ``gt_prob`` and the others share the rest. With
    ``zero_unsure``, 0 means "unknown" (uniform) and labels 1..n_labels map to channels
    0..n_labels-1; otherwise labels 0..n_labels-1 are the channels.
    """
    num = integer(n_labels, "n_labels")
    if num < 2:
        raise ValueError(f"n_labels: need at least 2 labels, got {num}")
    if not isinstance(gt_prob, float | int | np.floating) or not 0.0 < float(gt_prob) < 1.0:
        raise ValueError(f"gt_prob: must be a number in (0, 1), got {gt_prob!r}")
    lab = np.asarray(labels)
    if not np.issubdtype(lab.dtype, np.integer):
        raise TypeError(f"labels: expected an integer label map, got dtype {lab.dtype}")
    # int64 first: with uint8 labels, pydensecrf's ``labels - 1`` wraps 0 to 255.
    flat = lab.reshape(-1).astype(np.int64)
    unsure = bool(zero_unsure)
    top = num if unsure else num - 1
    bad = (flat < 0) | (flat > top)
    if bad.any():
        vals = np.unique(flat[bad])[:10].tolist()
        allowed = f"0 (unknown) and 1..{num}" if unsure else f"0..{num - 1}"
        raise ValueError(
            f"labels: values {vals} are outside the {num} labels (allowed: {allowed}, "
            f"zero_unsure={unsure})"
        )
    # pydensecrf's float expressions: for Python numbers the float32 values agree exactly.
    wrong = -np.log((1.0 - gt_prob) / (num - 1))
    right = -np.log(gt_prob)
    unary = np.full((num, flat.size), wrong, dtype=np.float32)
    known = flat != 0 if unsure else np.ones(flat.size, bool)
    channel = flat - 1 if unsure else flat
    idx = np.flatnonzero(known)
    unary[channel[idx], idx] = right
    if unsure:
        unary[:, ~known] = -np.log(1.0 / num)
    return unary


def compute_unary(labels: np.ndarray, M: int, GT_PROB: float = 0.5) -> np.ndarray:
    """pydensecrf's deprecated ``compute_unary``; use :func:`unary_from_labels`."""
    warnings.warn(
        "compute_unary is deprecated, use unary_from_labels instead",
        DeprecationWarning,
        stacklevel=2,
    )
    return unary_from_labels(labels, M, GT_PROB)


def unary_from_softmax(
    sm: np.ndarray, scale: float | None = None, clip: float | None = 1e-5
) -> np.ndarray:
    """pydensecrf's ``unary_from_softmax``: (L, ...) probabilities -> (L, N) float32 -log P.

    scale: if given, in (0, 1]: P is mixed with the uniform distribution as
    ``scale * P + (1 - scale) / L``. clip: floor (and 1 as ceiling) applied before the log;
    None for no clipping (then a zero probability gives an infinite energy, which
    ``setUnaryEnergy`` accepts).
    """
    p = real_numbers(sm, "sm")
    if p.ndim < 1 or p.shape[0] < 1:
        raise ValueError(f"sm: expected (n_classes, ...) probabilities, got shape {p.shape}")
    if np.isnan(p).any():
        raise ValueError(f"sm: contains {int(np.isnan(p).sum())} NaN values")
    num_cls = p.shape[0]
    # float64 throughout: float16/float32 inputs lose nothing before the final cast.
    p = p.astype(np.float64)
    if scale is not None:
        if not isinstance(scale, float | int | np.floating) or not 0.0 < float(scale) <= 1.0:
            raise ValueError(f"scale: must be None or a number in (0, 1], got {scale!r}")
        p = float(scale) * p + (1.0 - float(scale)) / num_cls
    if clip is not None:
        if not isinstance(clip, float | int | np.floating) or not 0.0 <= float(clip) <= 1.0:
            raise ValueError(f"clip: must be None or a number in [0, 1], got {clip!r}")
        p = np.clip(p, float(clip), 1.0)
    if (p < 0).any():
        raise ValueError(
            f"sm: contains {int((p < 0).sum())} negative probabilities (their log is "
            "undefined); pass clip=... to clip them"
        )
    with np.errstate(divide="ignore"):
        energy = -np.log(p)
    return energy.reshape(num_cls, -1).astype(np.float32)


def softmax_to_unary(sm: np.ndarray, GT_PROB: float = 1) -> np.ndarray:
    """pydensecrf's deprecated ``softmax_to_unary``; use :func:`unary_from_softmax`."""
    warnings.warn(
        "softmax_to_unary is deprecated, use unary_from_softmax instead",
        DeprecationWarning,
        stacklevel=2,
    )
    return unary_from_softmax(sm, None if GT_PROB == 1 else GT_PROB, clip=None)


def create_pairwise_gaussian(sdims: Sequence[float], shape: Sequence[int]) -> np.ndarray:
    """pydensecrf's ``create_pairwise_gaussian``: (len(shape), N) float32 features, the
    index along each axis of ``shape`` divided by ``sdims`` (for an image: (y/sy, x/sx))."""
    dims = _shape(shape)
    grid = _scaled_grid(dims, sdims)
    return grid.reshape(len(dims), -1)


def create_pairwise_bilateral(
    sdims: Sequence[float], schan: float | Sequence[float], img: np.ndarray, chdim: int = -1
) -> np.ndarray:
    """pydensecrf's ``create_pairwise_bilateral``: (len(sdims) + C, N) float32 features,
    positions divided by ``sdims`` then channels divided by ``schan``.

    chdim: the channel axis of ``img`` (2 for an (H, W, 3) image); -1 means the image has
    no channel axis (one channel), as in pydensecrf, not "the last axis".
    """
    im = real_numbers(img, "img")
    if im.ndim < 1 or im.size == 0:
        raise ValueError(f"img: expected a non-empty image, got shape {im.shape}")
    axis = integer(chdim, "chdim")
    if axis == -1:
        chans = im[np.newaxis].astype(np.float32)
    else:
        if not -im.ndim <= axis < im.ndim:
            raise ValueError(f"chdim: axis {axis} is out of range for an image of shape {im.shape}")
        chans = np.moveaxis(im, axis, 0).astype(np.float32)
    check_finite(chans, "img")
    num_chans = chans.shape[0]
    if isinstance(schan, float | int | np.floating | np.integer) and not isinstance(schan, bool):
        chans /= _positive_scales([schan], 1, "schan")[0]
    else:
        for c, s in enumerate(_positive_scales(schan, num_chans, "schan")):
            chans[c] /= s
    spatial = chans.shape[1:]
    n_sdims = len(sdims) if isinstance(sdims, Sequence | np.ndarray) else -1
    if n_sdims != len(spatial):
        hint = (
            " (chdim=-1 means the image has no channel axis; pass chdim=2 for (H, W, C))"
            if axis == -1 and im.ndim == 3
            else ""
        )
        raise ValueError(
            f"sdims: {sdims!r} must give one standard deviation per spatial axis of the "
            f"image, {len(spatial)} for shape {im.shape} with chdim={axis}{hint}"
        )
    grid = _scaled_grid(spatial, sdims)
    feats = np.concatenate([grid, chans])
    return feats.reshape(feats.shape[0], -1)


def _shape(shape: object) -> tuple[int, ...]:
    try:
        dims = tuple(operator.index(s) for s in shape)  # type: ignore[attr-defined]
    except TypeError:
        raise TypeError(f"shape: expected a sequence of integers, got {shape!r}") from None
    if not dims or min(dims) < 1:
        raise ValueError(f"shape: expected positive sizes, got {shape!r}")
    return dims
