"""The volume CRF in PyTorch: batched, on any device, differentiable.

The model of :mod:`deeplab.crf.volume` (positions ``(x dx, y dy, z dz)`` in mm over
theta_alpha / theta_gamma, intensities times ``channel_scale`` over theta_beta) run by the
image CRF's torch machinery (:mod:`deeplab.crf.torch_backend`): the same lattices, the
same mean-field step and its gradients (unary, w1, w2, compatibility), and on CPU float32
tensors without gradients the numba backend's fused inference. Marginals agree with the
numba backend to float32 rounding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)

from deeplab.crf.params import CRFParams
from deeplab.crf.torch_backend import (
    ImageKernels,
    KernelTerm,
    Weight,
    _as_tensor,
    _check_compat,
    _check_params,
    _compiled,
    _count,
    _fused_inference_applies,
    _kernel_used,
    _normalisation,
    _run_mean_field,
    _softmax,
    _weight,
)
from deeplab.crf.torch_cpu import (
    build_compiled_lattice,
    compiled_mean_field,
    compiled_softmax,
    pad_labels,
)
from deeplab.crf.torch_lattice import build_lattice
from deeplab.crf.unary import PROB_FLOOR
from deeplab.crf.volume import check_channel_scale, check_spacing, check_volume_memory

log = logging.getLogger(__name__)

__all__ = ["dense_crf_3d", "mean_field_3d", "volume_features"]

Callback = Callable[[int, torch.Tensor], None]


def _float_maps_5d(x: object, name: str) -> torch.Tensor:
    """(B, L, D, H, W) real maps as float32 (float64 kept), >= 2 labels, finite."""
    t = _as_tensor(x, name)
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name}: expected real numbers, got dtype {t.dtype}")
    if t.dtype != torch.float64:
        t = t.to(torch.float32)
    if t.dim() != 5:
        raise ValueError(f"{name}: expected a (B, L, D, H, W) tensor, got shape {tuple(t.shape)}")
    if t.shape[1] < 2:
        raise ValueError(f"{name}: need at least 2 labels, got {t.shape[1]}")
    if min(t.shape[2:]) == 0 or t.shape[0] == 0:
        raise ValueError(f"{name}: empty maps of shape {tuple(t.shape)}")
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        raise ValueError(f"{name}: contains {int((~finite).sum())} NaN or infinite values")
    return t


def _check_volumes(volumes: object, maps_shape: torch.Size) -> torch.Tensor:
    """(B, C, D, H, W) (or (B, D, H, W): one channel) real, finite intensities matching
    (B, L, D, H, W) maps."""
    v = _as_tensor(volumes, "volumes")
    if v.is_complex():
        raise TypeError(f"volumes: expected real intensities, got dtype {v.dtype}")
    if v.dim() == 4:
        v = v[:, None]
    b, _, d, h, w = maps_shape
    if v.dim() != 5 or v.shape[0] != b or tuple(v.shape[2:]) != (d, h, w):
        raise ValueError(
            f"volumes: shape {tuple(v.shape)} does not match the label maps "
            f"{tuple(maps_shape)}: expected ({b}, C, {d}, {h}, {w})"
        )
    if v.shape[1] == 0 or v.shape[1] > 16:
        raise ValueError(f"volumes: expected 1 to 16 intensity channels, got {v.shape[1]}")
    if v.is_floating_point():
        finite = torch.isfinite(v)
        if not bool(finite.all()):
            raise ValueError(f"volumes: contain {int((~finite).sum())} NaN or infinite values")
    return v


def _positions(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], theta: float, dev
) -> torch.Tensor:
    """(D H W, 3) float32 ``(x dx, y dy, z dz) / theta``, each float32 of a float64 value,
    as :func:`deeplab.crf.volume.volume_spatial_features`."""
    d, h, w = shape
    dz, dy, dx = spacing
    f64 = torch.float64
    xs = (torch.arange(w, dtype=f64, device=dev) * dx / theta).to(torch.float32)
    ys = (torch.arange(h, dtype=f64, device=dev) * dy / theta).to(torch.float32)
    zs = (torch.arange(d, dtype=f64, device=dev) * dz / theta).to(torch.float32)
    grid = torch.meshgrid(zs, ys, xs, indexing="ij")
    return torch.stack([grid[2].reshape(-1), grid[1].reshape(-1), grid[0].reshape(-1)], 1)


def volume_features(
    volumes: torch.Tensor,
    spacing: tuple[float, float, float],
    theta_alpha: float,
    theta_beta: float,
    channel_scale: tuple[float, ...],
) -> torch.Tensor:
    """(B, D H W, 3 + C) float32 bilateral features of (B, C, D, H, W) volumes, as
    :func:`deeplab.crf.volume.volume_bilateral_features` computes them."""
    b, c, d, h, w = volumes.shape
    pos = _positions((d, h, w), spacing, theta_alpha, volumes.device)
    cols = [pos[None].expand(b, -1, -1)]
    for ch in range(c):
        x = volumes[:, ch].reshape(b, d * h * w, 1).to(torch.float64)
        cols.append((x * channel_scale[ch] / theta_beta).to(torch.float32))
    return torch.cat(cols, 2)


def mean_field_3d(
    volumes: torch.Tensor,
    unary: torch.Tensor,
    *,
    w1: Weight,
    w2: Weight,
    theta_alpha: float,
    theta_beta: float,
    theta_gamma: float,
    iterations: int,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    channel_scale: float | Sequence[float] | None = None,
    normalization: str = "after",
    compat: torch.Tensor | None = None,
    log_marginals: bool = False,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Mean-field marginals (B, L, D, H, W) of the volume CRF, differentiable.

    volumes: (B, C, D, H, W) or (B, D, H, W) intensities, any real dtype (the lattices are
    built from them; no gradient). unary: (B, L, D, H, W) energies ``-log P``. spacing,
    channel_scale and the thetas: as :func:`deeplab.crf.volume.dense_crf_3d`. w1, w2:
    floats >= 0 (0 drops the kernel) or 0-d tensors. compat: optional (L, L). Gradients
    flow to unary, tensor w1 / w2 and compat. log_marginals: return ``log Q``.
    callback(it, q): after each update, q (B, L, D, H, W) detached.
    """
    u = _float_maps_5d(unary, "unary")
    return _solve(
        volumes,
        -u,
        w1,
        w2,
        (theta_alpha, theta_beta, theta_gamma),
        check_spacing(spacing),
        channel_scale,
        iterations,
        normalization,
        compat,
        log_marginals,
        callback,
    )


def _solve(
    volumes: object,
    neg_unary: torch.Tensor,
    w1: Weight,
    w2: Weight,
    thetas: tuple[float, float, float],
    spacing: tuple[float, float, float],
    channel_scale: object,
    iterations: int,
    normalization: str,
    compat: object,
    log_marginals: bool,
    callback: Callback | None,
) -> torch.Tensor:
    """mean_field_3d on checked (B, L, D, H, W) maps ``-U``."""
    vols = _check_volumes(volumes, neg_unary.shape)
    if vols.device != neg_unary.device:
        raise ValueError(f"volumes on {vols.device} but the label maps on {neg_unary.device}")
    b, n_lab, d, h, w = neg_unary.shape
    c = vols.shape[1]
    scale = check_channel_scale(channel_scale, c)
    n_iter = _count(iterations)
    if neg_unary.device.type == "cpu":
        check_volume_memory((b * d, h, w), n_lab, c)
    mu = _check_compat(compat, n_lab, neg_unary)
    theta_alpha, theta_beta, theta_gamma = thetas
    use_w1, use_w2 = _kernel_used(w1, "w1"), _kernel_used(w2, "w2")
    dev = neg_unary.device
    with torch.no_grad():
        spatial = _positions((d, h, w), spacing, theta_gamma, dev) if use_w2 else None
        bilateral = (
            volume_features(vols, spacing, theta_alpha, theta_beta, scale) if use_w1 else None
        )
    if _fused_inference_applies(neg_unary, w1, w2, mu, log_marginals, callback):
        with torch.no_grad():
            q = compiled_mean_field(
                neg_unary.reshape(b, n_lab, d * h, w),
                spatial,
                bilateral,
                float(w1),
                float(w2),
                mu,
                n_iter,
                normalization,
            )
        return q.reshape(b, n_lab, d, h, w)
    kernels = _build_kernels(spatial, bilateral, b, normalization, neg_unary.dtype, dev)
    # The image machinery runs (B, L, D H, W) maps; the callback sees them as volumes.
    cb = None
    if callback is not None:

        def cb(it: int, q: torch.Tensor) -> None:
            callback(it, q.reshape(b, n_lab, d, h, w))

    points = neg_unary.permute(0, 2, 3, 4, 1).reshape(b * d * h * w, n_lab)
    softmax = _softmax
    if _compiled(dev, neg_unary.dtype):
        # Padded labels (energy -1e30, probability 0) let the kernels run whole vectors.
        points, mu = pad_labels(points, mu)
        softmax = compiled_softmax
    energy = _run_mean_field(
        points,
        kernels,
        _weight(w1, neg_unary),
        _weight(w2, neg_unary),
        mu,
        n_iter,
        cb,
        softmax,
        n_lab,
    )[:, :n_lab]
    out = F.log_softmax(energy, 1) if log_marginals else F.softmax(energy, 1)
    return out.reshape(b, d, h, w, n_lab).permute(0, 4, 1, 2, 3).contiguous()


def _build_kernels(
    spatial: torch.Tensor | None,
    bilateral: torch.Tensor | None,
    batch: int,
    normalization: str,
    dtype: torch.dtype,
    dev: torch.device,
) -> ImageKernels:
    """Lattices and normalisations of both kernels, the spatial one built once and
    repeated over the batch; each volume's bilateral lattice is its own."""
    build = build_compiled_lattice if _compiled(dev, dtype) else build_lattice
    spatial_term = bilateral_term = None
    n = 0
    with torch.no_grad():
        if spatial is not None:
            n = spatial.shape[0]
            lat = build(spatial)
            scales = _normalisation(lat, normalization, dtype)
            if batch > 1:
                lat = lat.repeat(batch)
                scales = tuple(None if s is None else s.repeat(batch, 1) for s in scales)
            spatial_term = KernelTerm(lat, *scales)
        if bilateral is not None:
            n = bilateral.shape[1]
            lat = build(bilateral)
            bilateral_term = KernelTerm(lat, *_normalisation(lat, normalization, dtype))
    # Height x width of the flattened maps: what the callback's reshape needs.
    return ImageKernels(spatial_term, bilateral_term, batch, n, 1)


def dense_crf_3d(
    volume: object,
    probs: object,
    params: CRFParams | None = None,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    channel_scale: float | Sequence[float] | None = None,
    compat: object = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """One volume: :func:`deeplab.crf.volume.dense_crf_3d`'s arguments as tensors (or
    arrays); marginals (L, D, H, W) on the probabilities' device. Not differentiable: see
    :func:`mean_field_3d`."""
    params = _check_params(params)
    p = _as_tensor(probs, "probs")
    if p.dim() != 4:
        raise ValueError(f"probs: expected (L, D, H, W) probabilities, got shape {tuple(p.shape)}")
    v = _as_tensor(volume, "volume")
    if v.dim() == 3:
        v = v[..., None]
    if v.dim() != 4:
        raise ValueError(
            f"volume: expected a (D, H, W) or (D, H, W, C) volume, got shape {tuple(v.shape)}"
        )
    if tuple(v.shape[:3]) != tuple(p.shape[1:]):
        raise ValueError(
            f"probs: shape {tuple(p.shape)} does not match the volume "
            f"{tuple(v.shape[:3])}: expected (L, {v.shape[0]}, {v.shape[1]}, {v.shape[2]})"
        )
    if p.device.type == "cpu" and min(p.shape) > 0:
        # Before any float copy of an input that is already too large.
        check_volume_memory(tuple(v.shape[:3]), p.shape[0], v.shape[3])
    p = _float_maps_5d(p[None], "probs")
    if bool((p < 0).any()):
        raise ValueError(f"probs: contains {int((p < 0).sum())} negative values")
    v = v.permute(3, 0, 1, 2)[None].to(p.device)
    cb = None
    if callback is not None:

        def cb(it: int, q: torch.Tensor) -> None:
            callback(it, q[0].clone())

    with torch.no_grad():
        q = _solve(
            v,
            torch.log(p.clamp_min(PROB_FLOOR)),
            params.w1,
            params.w2,
            (params.theta_alpha, params.theta_beta, params.theta_gamma),
            check_spacing(spacing),
            channel_scale,
            params.iterations,
            params.normalization,
            compat,
            False,
            cb,
        )
    return q[0].contiguous()
