"""The dense CRF on volumes (CT, MRI, microscopy): the image CRF's model in three dimensions.

Voxel (z, y, x) of a (D, H, W) volume is point ``(z * H + y) * W + x``. With the voxel
spacing ``(dz, dy, dx)`` in physical units (mm), its position is ``p = (x dx, y dy, z dz)``
and the two kernels of the image CRF (Chen et al. 2015, section 4, eq. 3) become

- bilateral, weight w1: features ``(p / theta_alpha, s_c I_c / theta_beta)`` for every
  intensity channel c (``channel_scale`` s_c, default 1);
- spatial, weight w2: features ``p / theta_gamma``.

theta_alpha and theta_gamma are therefore in millimetres (whatever unit the spacing is
in), so anisotropic voxels are handled, and theta_beta is in the volume's own intensity
units after the per-channel scaling (Hounsfield units for a CT, raw values for a
microscope stack). Each feature is ``float32(float64 value / theta)``; the features go
through the image CRF's lattice and mean field (:class:`~deeplab.crf.meanfield.DenseCRF`)
unchanged: numba kernels, thread adaptation, checks. ``backend="torch"`` runs
:mod:`deeplab.crf.torch_volume` (batched, any device, differentiable).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from deeplab.crf._callbacks import reshaped
from deeplab.crf.dense import available_memory
from deeplab.crf.kernel_cache import add_cached_kernel
from deeplab.crf.meanfield import DenseCRF, padded_width
from deeplab.crf.params import CRFParams, check_params
from deeplab.crf.threads import adapted_threads, thread_shares
from deeplab.crf.validation import (
    as_float32_2d,
    check_backend,
    check_channels,
    check_compat,
    check_finite,
    check_maps_match,
    check_nonempty,
    check_num_labels,
    check_positive,
    check_rank,
    real_array,
)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

__all__ = [
    "check_volume_memory",
    "dense_crf_3d",
    "estimate_volume_memory",
    "volume_bilateral_features",
    "volume_spatial_features",
]

Spacing = tuple[float, float, float]

# Peak bytes of the CPU backend per voxel: per label (the probabilities, their log, the
# marginals out), per padded label (-U), per lattice column (the two kernels' corners and
# weights, the fused plan, the build's scratch) and per lattice row and padded label
# (values, scratch, one private buffer per thread share, which matrix compatibilities and
# step-by-step inference use; the fused Potts pass needs two). Fitted to peaks measured on
# two-channel volumes (2 threads): smooth ones, 0.25-0.5 lattice rows per voxel, peak about
# half the estimate; noise four times theta_beta, 2.5 rows per voxel, peak about the
# estimate.
_PER_VOXEL_LABEL = 12
_PER_VOXEL_WIDTH = 4
_PER_COLUMN = 40
_PER_VOXEL = 64
_ROWS_PER_VOXEL = 1.0
# Lattice vertex indices are int32: points x corners must stay below this.
_MAX_CORNERS = 2**31 - 1


def check_spacing(spacing: object, name: str = "spacing") -> Spacing:
    """Three finite voxel sizes > 0, (dz, dy, dx)."""
    if isinstance(spacing, str | bytes) or not isinstance(spacing, Sequence | np.ndarray):
        raise ValueError(f"{name}: expected three voxel sizes (dz, dy, dx), got {spacing!r}")
    values = list(spacing)
    if len(values) != 3:
        raise ValueError(
            f"{name}: expected three voxel sizes (dz, dy, dx), got {len(values)}: {spacing!r}"
        )
    dz, dy, dx = (check_positive(v, f"{name}[{i}]") for i, v in enumerate(values))
    return dz, dy, dx


def check_channel_scale(scale: object, channels: int) -> tuple[float, ...]:
    """Per-channel intensity factors: None (all 1), one number, or one per channel."""
    if scale is None:
        return (1.0,) * channels
    boxed = np.asarray(scale, dtype=object)
    if boxed.ndim == 0:
        return (check_positive(boxed.item(), "channel_scale"),) * channels
    values = list(boxed.reshape(-1))
    if len(values) != channels:
        raise ValueError(
            f"channel_scale: expected one factor per intensity channel ({channels}), "
            f"got {len(values)}"
        )
    return tuple(check_positive(v, f"channel_scale[{i}]") for i, v in enumerate(values))


def check_volume(volume: object, name: str = "volume") -> np.ndarray:
    """(D, H, W) or (D, H, W, C) real intensities, returned as (D, H, W, C); any dtype and
    range, finite. Torch tensors are read through numpy."""
    arr = real_array(volume, name, "real intensities")
    if arr.ndim == 3:
        arr = arr[..., None]
    check_rank(arr.shape, 4, name, "a (D, H, W) or (D, H, W, C) volume")
    check_nonempty(arr.shape, name, "volume")
    check_channels(arr.shape[3], arr.shape, name, "(D, H, W, C)")
    if np.issubdtype(arr.dtype, np.floating):
        check_finite(arr, name, "intensities")
    return arr


def volume_spatial_features(
    shape: tuple[int, int, int], spacing: Spacing, theta: float
) -> np.ndarray:
    """(D*H*W, 3) float32 positions ``(x dx, y dy, z dz) / theta`` in voxel order."""
    d, h, w = (int(n) for n in shape)
    out = np.empty((d, h, w, 3), np.float32)
    _fill_positions(out, spacing, theta)
    return out.reshape(d * h * w, 3)


def _fill_positions(out: np.ndarray, spacing: Spacing, theta: float) -> None:
    """out (D, H, W, >=3): columns 0..2 = (x dx, y dy, z dz) / theta, float32 of float64."""
    d, h, w = out.shape[:3]
    dz, dy, dx = spacing
    # Each coordinate along its own axis, broadcast over the other two.
    out[..., 0] = (np.arange(w, dtype=np.float64) * dx / theta).astype(np.float32)
    out[..., 1] = (np.arange(h, dtype=np.float64) * dy / theta).astype(np.float32)[:, None]
    out[..., 2] = (np.arange(d, dtype=np.float64) * dz / theta).astype(np.float32)[:, None, None]


def volume_bilateral_features(
    volume: np.ndarray,
    spacing: Spacing,
    theta_alpha: float,
    theta_beta: float,
    channel_scale: object = None,
) -> np.ndarray:
    """(D*H*W, 3 + C) float32 features ``(x dx, y dy, z dz) / theta_alpha`` then
    ``s_c I_c / theta_beta`` for a (D, H, W) or (D, H, W, C) volume."""
    vol = check_volume(volume)
    d, h, w, c = vol.shape
    scale = check_channel_scale(channel_scale, c)
    out = np.empty((d, h, w, 3 + c), np.float32)
    _fill_positions(out, check_spacing(spacing), theta_alpha)
    # Slab by slab: the float64 intermediate of a whole 256^3 volume would be 134 MB.
    step = max(1, (1 << 22) // max(1, h * w))
    for ch in range(c):
        for z0 in range(0, d, step):
            slab = vol[z0 : z0 + step, :, :, ch].astype(np.float64)
            out[z0 : z0 + step, :, :, 3 + ch] = (slab * scale[ch] / theta_beta).astype(np.float32)
    return out.reshape(d * h * w, 3 + c)


def estimate_volume_memory(shape: tuple[int, int, int], num_labels: int, channels: int = 1) -> int:
    """Approximate peak bytes of the CPU CRF on a (D, H, W) volume with ``channels``
    intensity channels and ``num_labels`` labels (both kernels)."""
    n = math.prod(int(s) for s in shape)
    w = padded_width(num_labels)
    columns = (3 + channels + 1) + (3 + 1)
    rows = _ROWS_PER_VOXEL * n * w * 4 * (2 + thread_shares())
    per_voxel = (
        num_labels * _PER_VOXEL_LABEL + w * _PER_VOXEL_WIDTH + columns * _PER_COLUMN + _PER_VOXEL
    )
    return int(n * per_voxel + rows)


def check_volume_memory(shape: tuple[int, int, int], num_labels: int, channels: int = 1) -> None:
    """Refuse, with the figures, a volume the CPU backend could not hold (or index)."""
    d, h, w = (int(s) for s in shape)
    n = d * h * w
    corners = n * (3 + channels + 1)
    if corners > _MAX_CORNERS:
        raise ValueError(
            f"volume: {d}x{h}x{w} = {n} voxels with {channels} channel(s) is more than the "
            f"lattice can index ({_MAX_CORNERS // (3 + channels + 1)} voxels); crop or "
            "downsample the volume"
        )
    need = estimate_volume_memory((d, h, w), num_labels, channels)
    have = available_memory()
    if have is not None and need > have:
        raise MemoryError(
            f"the CRF on a {d}x{h}x{w} volume with {num_labels} labels and {channels} "
            f"channel(s) needs about {need / 2**30:.1f} GiB, only {have / 2**30:.1f} GiB is "
            "available; crop or downsample the volume or use fewer labels"
        )


def _check_memory_of(volume: object, probs: object) -> None:
    """:func:`check_volume_memory` from the shapes alone, before any copy is made."""
    pshape = np.shape(probs)  # type: ignore[call-overload]  # anything with a shape
    vshape = np.shape(volume)  # type: ignore[call-overload]
    ok = all(isinstance(n, int | np.integer) and n > 0 for n in (*pshape, *vshape))
    if ok and len(pshape) == 4 and len(vshape) in (3, 4):
        channels = int(vshape[3]) if len(vshape) == 4 else 1
        d, h, w = (int(n) for n in pshape[1:])
        check_volume_memory((d, h, w), int(pshape[0]), channels)


def check_volume_probs(probs: object, shape: tuple[int, int, int]) -> np.ndarray:
    """(L, D, H, W) probabilities matching the volume, at least 2 labels, as (L, N) float32
    (finiteness and signs are checked by :meth:`DenseCRF.from_probabilities`)."""
    p = real_array(probs, "probs")
    d, h, w = shape
    check_rank(p.shape, 4, "probs", f"(L, D, H, W) = (L, {d}, {h}, {w}) probabilities")
    check_maps_match(p.shape, shape, "probs", "volume")
    check_num_labels(p.shape[0], "probs")
    return as_float32_2d(p.reshape(p.shape[0], -1), "probs", finite=False)


@overload
def dense_crf_3d(
    volume: np.ndarray,
    probs: np.ndarray,
    params: CRFParams | None = None,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    channel_scale: float | Sequence[float] | None = None,
    compat: np.ndarray | None = None,
    callback: Callable[[int, np.ndarray], None] | None = None,
    backend: Literal["auto", "numba"] = "auto",
) -> np.ndarray: ...


@overload
def dense_crf_3d(
    volume: np.ndarray | torch.Tensor,
    probs: torch.Tensor,
    params: CRFParams | None = None,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    channel_scale: float | Sequence[float] | None = None,
    compat: np.ndarray | torch.Tensor | None = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
    backend: Literal["auto", "torch"] = "auto",
) -> torch.Tensor: ...


@overload
def dense_crf_3d(
    volume: object,
    probs: object,
    params: CRFParams | None = None,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    channel_scale: float | Sequence[float] | None = None,
    compat: object = None,
    callback: Callable[[int, Any], None] | None = None,
    backend: str = "auto",
) -> np.ndarray | torch.Tensor: ...


def dense_crf_3d(
    volume: object,
    probs: object,
    params: CRFParams | None = None,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    channel_scale: float | Sequence[float] | None = None,
    compat: object = None,
    callback: Callable[[int, Any], None] | None = None,
    backend: str = "auto",
) -> np.ndarray | torch.Tensor:
    """Refine class probabilities (L, D, H, W) of a volume with the dense CRF.

    volume: (D, H, W) or (D, H, W, C) intensities, any real dtype and range, finite.
    params: :class:`CRFParams` (default ``deeplab-largefov``, tuned for photos: set the
    thetas for your data); theta_alpha, theta_gamma in the spacing's unit (mm),
    theta_beta in intensity units after ``channel_scale`` (one factor, or one per
    channel; default 1). spacing: voxel size (dz, dy, dx). compat: optional (L, L) label
    compatibility (default Potts). callback(it, q): after each update, (L, D, H, W) copy.
    backend: "numba", "torch" or "auto" (torch for tensor inputs); torch returns a tensor
    on the probabilities' device. Returns the marginals (L, D, H, W) float32; labels are
    ``q.argmax(0)``. Unary ``-log max(P, 1e-8)`` as for images (paper section 4).
    """
    params = check_params(params)
    sp = check_spacing(spacing)
    if check_backend(backend, volume, probs) == "torch":
        from deeplab.crf import torch_volume

        return torch_volume.dense_crf_3d(
            volume,
            probs,
            params,
            spacing=sp,
            channel_scale=channel_scale,
            compat=compat,
            callback=callback,
        )
    _check_memory_of(volume, probs)
    vol = check_volume(volume)
    d, h, w, c = vol.shape
    p = check_volume_probs(probs, (d, h, w))
    num_labels = p.shape[0]
    check_volume_memory((d, h, w), num_labels, c)
    scale = check_channel_scale(channel_scale, c)
    mu = check_compat(compat, num_labels)
    cb = reshaped(callback, (num_labels, d, h, w))
    with adapted_threads():
        crf = DenseCRF.from_probabilities(p)
        del p
        add_volume_kernels(crf, vol, params, sp, scale, mu)
        q = crf.inference(params.iterations, callback=cb)
    log.debug("volume CRF: %dx%dx%d, %d channel(s), %d labels", d, h, w, c, num_labels)
    return q.reshape(num_labels, d, h, w)


def add_volume_kernels(
    crf: DenseCRF,
    volume: np.ndarray,
    params: CRFParams,
    spacing: Spacing,
    channel_scale: tuple[float, ...],
    compat: np.ndarray | None = None,
) -> DenseCRF:
    """Add the spatial and bilateral kernels of a checked (D, H, W, C) volume to ``crf``."""
    # With a compatibility matrix mu, kernel m costs w_m * mu; Potts is mu = [l != l'].
    c1 = params.w1 if compat is None else params.w1 * compat
    c2 = params.w2 if compat is None else params.w2 * compat
    if params.w2 > 0:
        shape = volume.shape[:3]
        theta = float(params.theta_gamma)
        add_cached_kernel(
            crf,
            ("volume spatial", shape, tuple(spacing), theta),
            lambda: volume_spatial_features(shape, spacing, theta),
            c2,
            params.normalization,
        )
    if params.w1 > 0:
        feats = volume_bilateral_features(
            volume, spacing, params.theta_alpha, params.theta_beta, channel_scale
        )
        crf.add_kernel(feats, c1, params.normalization)
    return crf
