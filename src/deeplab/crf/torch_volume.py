"""The volume CRF in PyTorch: batched, on any device, differentiable.

The model of :mod:`deeplab.crf.volume` (positions ``(x dx, y dy, z dz)`` in mm over
theta_alpha / theta_gamma, intensities times ``channel_scale`` over theta_beta; Chen et
al. 2015, eq. 3, in three dimensions) run by the image CRF's torch driver
(:mod:`deeplab.crf.torch_meanfield`): the same lattices, the same mean-field step and its
gradients (unary, w1, w2, compatibility), and on CPU float32 tensors without gradients
the numba backend's fused inference. Marginals agree with the numba backend to float32
rounding. No gradient reaches the volumes: they only place the lattice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from deeplab.crf._callbacks import reshaped
from deeplab.crf.params import CRFParams, check_params
from deeplab.crf.torch_meanfield import (
    Callback,
    Weight,
    as_tensor,
    float_maps,
    solve,
    with_overrides,
)
from deeplab.crf.unary import PROB_FLOOR
from deeplab.crf.validation import (
    check_channels,
    check_finite,
    check_maps_match,
    check_no_negatives,
    check_rank,
)
from deeplab.crf.volume import check_channel_scale, check_spacing, check_volume_memory

log = logging.getLogger(__name__)

__all__ = ["dense_crf_3d", "mean_field_3d", "volume_features"]

Spacing = tuple[float, float, float]


def _check_volumes(volumes: object, maps_shape: Sequence[int]) -> torch.Tensor:
    """(B, C, D, H, W) (or (B, D, H, W): one channel) real, finite intensities matching
    (B, L, D, H, W) maps."""
    v = as_tensor(volumes, "volumes")
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
    check_channels(v.shape[1], v.shape, "volumes", "(B, C, D, H, W)")
    if v.is_floating_point():
        check_finite(v, "volumes", verb="contain")
    return v


def _positions(
    shape: tuple[int, int, int], spacing: Spacing, theta: float, dev: torch.device
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
    spacing: Spacing,
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


def _solve_volumes(
    volumes: object,
    neg_unary: torch.Tensor,
    params: CRFParams,
    w1: Weight,
    w2: Weight,
    spacing: Spacing,
    channel_scale: object,
    compat: object,
    log_marginals: bool,
    callback: Callback | None,
) -> torch.Tensor:
    """Marginals (B, L, D, H, W) of checked maps ``-U`` (B, L, D, H, W): the volumes'
    kernels (thetas, iterations and normalisation from ``params``) and
    :func:`deeplab.crf.torch_meanfield.solve`."""
    vols = _check_volumes(volumes, neg_unary.shape)
    if vols.device != neg_unary.device:
        raise ValueError(f"volumes on {vols.device} but the label maps on {neg_unary.device}")
    b, n_lab, d, h, w = neg_unary.shape
    c = vols.shape[1]
    scale = check_channel_scale(channel_scale, c)
    if neg_unary.device.type == "cpu":
        check_volume_memory((b * d, h, w), n_lab, c)
    q = solve(
        neg_unary.reshape(b, n_lab, d * h * w),
        lambda: _positions((d, h, w), spacing, params.theta_gamma, vols.device),
        lambda: volume_features(vols, spacing, params.theta_alpha, params.theta_beta, scale),
        w1=w1,
        w2=w2,
        compat=compat,
        iterations=params.iterations,
        normalization=params.normalization,
        log_marginals=log_marginals,
        callback=reshaped(callback, (b, n_lab, d, h, w)),
    )
    return q.reshape(b, n_lab, d, h, w).contiguous()


def mean_field_3d(
    volumes: torch.Tensor,
    unary: torch.Tensor,
    params: CRFParams | None = None,
    *,
    w1: Weight | None = None,
    w2: Weight | None = None,
    theta_alpha: float | None = None,
    theta_beta: float | None = None,
    theta_gamma: float | None = None,
    iterations: int | None = None,
    normalization: str | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    channel_scale: float | Sequence[float] | None = None,
    compat: torch.Tensor | None = None,
    log_marginals: bool = False,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Mean-field marginals (B, L, D, H, W) of the volume CRF, differentiable.

    volumes: (B, C, D, H, W) or (B, D, H, W) intensities, any real dtype (the lattices are
    built from them; no gradient). unary: (B, L, D, H, W) energies ``-log P``. params:
    :class:`CRFParams` (default ``deeplab-largefov``); any of its fields given as a keyword
    replaces it. spacing, channel_scale and the thetas: as
    :func:`deeplab.crf.volume.dense_crf_3d`. w1, w2: floats >= 0 (0 drops the kernel) or
    0-d tensors. compat: optional (L, L). Gradients flow to unary, tensor w1 / w2 and
    compat. log_marginals: return ``log Q``. callback(it, q): after each update, q
    (B, L, D, H, W) detached.
    """
    u = float_maps(unary, "unary", "(B, L, D, H, W)")
    p, w1_, w2_ = with_overrides(
        params,
        w1,
        w2,
        theta_alpha=theta_alpha,
        theta_beta=theta_beta,
        theta_gamma=theta_gamma,
        iterations=iterations,
        normalization=normalization,
    )
    sp = check_spacing(spacing)
    return _solve_volumes(
        volumes, -u, p, w1_, w2_, sp, channel_scale, compat, log_marginals, callback
    )


def dense_crf_3d(
    volume: object,
    probs: object,
    params: CRFParams | None = None,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    channel_scale: float | Sequence[float] | None = None,
    compat: object = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """One volume: :func:`deeplab.crf.volume.dense_crf_3d`'s arguments as tensors (or
    arrays); marginals (L, D, H, W) on the probabilities' device, differentiable in the
    probabilities (where above 1e-8) and a tensor ``compat``."""
    p_ = check_params(params)
    p = as_tensor(probs, "probs")
    check_rank(p.shape, 4, "probs", "(L, D, H, W) probabilities")
    v = as_tensor(volume, "volume")
    if v.dim() == 3:
        v = v[..., None]
    check_rank(v.shape, 4, "volume", "a (D, H, W) or (D, H, W, C) volume")
    check_maps_match(p.shape, v.shape[:3], "probs", "volume")
    if p.device.type == "cpu" and min(p.shape) > 0:
        # Before any float copy of an input that is already too large.
        d, h, w, c = v.shape
        check_volume_memory((d, h, w), p.shape[0], c)
    p = float_maps(p[None], "probs", "(B, L, D, H, W)")
    check_no_negatives(p, "probs")
    q = _solve_volumes(
        v.permute(3, 0, 1, 2)[None].to(p.device),
        torch.log(p.clamp_min(PROB_FLOOR)),
        p_,
        p_.w1,
        p_.w2,
        check_spacing(spacing),
        channel_scale,
        compat,
        False,
        reshaped(callback, p.shape[1:]),
    )
    return q[0]
