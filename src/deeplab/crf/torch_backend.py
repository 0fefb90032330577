"""The dense CRF in PyTorch: batched, on any device, differentiable (SPEC section 4).

The same model and inference as the CPU backend (:mod:`deeplab.crf.dense`): DeepLab's
spatial kernel ``w2 exp(-|p_i-p_j|^2 / 2 theta_gamma^2)`` and bilateral kernel
``w1 exp(-|p_i-p_j|^2 / 2 theta_alpha^2 - |I_i-I_j|^2 / 2 theta_beta^2)``, mean field from
``softmax(-U)`` without damping, the filter over the permutohedral lattice of
:mod:`deeplab.crf.torch_lattice` (the CPU lattice, vertex for vertex). Marginals agree with
the CPU backend to float32 rounding.

Three entry points:

- :func:`dense_crf`, :func:`dense_crf_from_unary`, :func:`dense_crf_from_logits`: one
  image, the CPU API's arguments as tensors; reached from :func:`deeplab.crf.dense_crf`
  with ``backend="torch"`` or automatically for tensor inputs.
- :func:`mean_field`: batches (B, 3, H, W) / (B, L, H, W), differentiable with respect to
  the unaries, the kernel weights and a label-compatibility matrix.
- :class:`DenseCRF`: the CRF as an ``nn.Module`` with learnable w1, w2 and compatibility,
  for end-to-end training (Zheng et al. 2015, "CRF as RNN", trains the same model).

Gradients: the lattice filter is a custom autograd function whose backward is the adjoint
filter (blur axes reversed), so a backward pass costs about what the forward pass does
and stores, per iteration, only the marginals and messages autograd needs anyway.

CPU float32 tensors take the compiled path (:mod:`deeplab.crf.torch_cpu`): the numba
kernels build and filter the same lattices, differentiably; without gradients, each image
runs the numba backend's fused mean field. Other devices and float64 run the torch lattice.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)
from torch import nn

from deeplab.crf.params import NORMALIZATIONS, CRFParams
from deeplab.crf.torch_cpu import (
    CompiledLattice,
    build_compiled_lattice,
    compiled_mean_field,
    compiled_softmax,
    pad_labels,
)
from deeplab.crf.torch_lattice import TorchLattice, build_lattice, lattice_filter
from deeplab.crf.unary import PROB_FLOOR

log = logging.getLogger(__name__)

__all__ = [
    "DenseCRF",
    "ImageKernels",
    "build_image_kernels",
    "dense_crf",
    "dense_crf_from_logits",
    "dense_crf_from_unary",
    "mean_field",
]

Weight = float | torch.Tensor
Callback = Callable[[int, torch.Tensor], None]
Lattice = TorchLattice | CompiledLattice

# CPU float32 tensors go through the compiled kernels (deeplab.crf.torch_cpu); False sends
# them through the generic torch lattice, as every other device and dtype (tests compare).
_COMPILED_CPU = True
# Largest kernel weight (times compatibility) the compiled inference accepts, as the numba
# backend (deeplab.crf.meanfield.MAX_COMPAT); larger ones take the generic path.
_MAX_COMPILED_WEIGHT = 1e6


def _compiled(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether maps of this device and dtype are filtered by the compiled CPU kernels."""
    return _COMPILED_CPU and device.type == "cpu" and dtype == torch.float32


# -- input checks ------------------------------------------------------------------------


def _as_tensor(x: object, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise TypeError(f"{name}: expected a real numeric array, got dtype {x.dtype}")
        return torch.from_numpy(np.ascontiguousarray(x))
    raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")


def _float_maps(x: object, name: str, ndim: int) -> torch.Tensor:
    """Per-label maps as a float tensor (float64 stays float64, other reals become
    float32), checked for rank, at least 2 labels and finiteness."""
    t = _as_tensor(x, name)
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name}: expected real numbers, got dtype {t.dtype}")
    if t.dtype != torch.float64:
        t = t.to(torch.float32)
    if t.dim() != ndim:
        want = "(L, H, W)" if ndim == 3 else "(B, L, H, W)"
        raise ValueError(f"{name}: expected a {want} tensor, got shape {tuple(t.shape)}")
    if t.shape[-3] < 2:
        raise ValueError(f"{name}: need at least 2 labels, got {t.shape[-3]}")
    if t.shape[-1] == 0 or t.shape[-2] == 0:
        raise ValueError(f"{name}: empty maps of shape {tuple(t.shape)}")
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"{name}: contains {bad} NaN or infinite values")
    return t


def _check_images(images: torch.Tensor, maps_shape: torch.Size) -> torch.Tensor:
    """(B, 3, H, W) uint8 or float in 0..255 matching (B, L, H, W) maps."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images: expected a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected (B, 3, H, W) RGB, got shape {tuple(images.shape)}")
    b, _, h, w = maps_shape
    if images.shape[0] != b or tuple(images.shape[2:]) != (h, w):
        raise ValueError(
            f"images: shape {tuple(images.shape)} does not match the label maps "
            f"{tuple(maps_shape)}: expected ({b}, 3, {h}, {w})"
        )
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise TypeError(f"images: expected uint8 or floating point RGB, got {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images: contain NaN or infinite values")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0 or hi > 255:
        raise ValueError(
            f"images: values must be RGB in 0..255, got {lo:.3g}..{hi:.3g}; undo the "
            "network's mean subtraction (and BGR order) before the CRF"
        )
    if hi <= 1.0:
        log.warning("images: all values <= 1; the CRF expects RGB in 0..255, not 0..1")
    return images


def _check_params(params: CRFParams | None) -> CRFParams:
    params = CRFParams() if params is None else params
    if not isinstance(params, CRFParams):
        raise TypeError(f"params: expected CRFParams, got {type(params).__name__}")
    return params


def _single_image(image: object, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 RGB (or grayscale (H, W) / (H, W, 1)) -> (1, 3, H, W) on device,
    with the CPU API's rules (:func:`deeplab.crf.validation.check_image`)."""
    t = _as_tensor(image, "image")
    if t.dtype != torch.uint8:
        raise TypeError(
            f"image: expected dtype uint8 (H, W, 3) RGB, got {t.dtype}; convert with "
            "x.clamp(0, 255).to(torch.uint8) after scaling to 0..255"
        )
    if t.dim() == 2:
        t = t[:, :, None]
    if t.dim() == 3 and t.shape[2] == 1:
        t = t.expand(-1, -1, 3)
    elif t.dim() == 3 and t.shape[2] == 4:
        raise ValueError(
            "image: got 4 channels (RGBA?), expected (H, W, 3) RGB; drop or composite the "
            "alpha channel first, e.g. image[..., :3]"
        )
    if t.dim() != 3 or t.shape[2] != 3:
        raise ValueError(f"image: expected shape (H, W, 3), got {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"image: empty image of shape {tuple(t.shape)}")
    return t.permute(2, 0, 1)[None].to(device)


# -- kernels ---------------------------------------------------------------------------


@dataclass
class KernelTerm:
    """One Gaussian kernel over a batch's P = B H W points: its lattice and the per-point
    normalisation factors (P, 1) applied before / after filtering (None: not used)."""

    lattice: Lattice
    in_scale: torch.Tensor | None
    out_scale: torch.Tensor | None

    def filtered(self, q: torch.Tensor) -> torch.Tensor:
        """``K (in_scale q)`` for (P, L) marginals, differentiable in q; the caller applies
        out_scale (folded into the kernel weight, one multiply fewer per iteration)."""
        x = q if self.in_scale is None else q * self.in_scale
        return lattice_filter(x, self.lattice)

    def coefficient(self, w: Weight, like: torch.Tensor) -> torch.Tensor:
        """The weight times out_scale: (P, 1), or a 0-d tensor without out_scale."""
        if not isinstance(w, torch.Tensor):
            w = torch.tensor(w, dtype=like.dtype, device=like.device)
        return w if self.out_scale is None else self.out_scale * w


@dataclass
class ImageKernels:
    """DeepLab's two kernels for a batch of B same-sized images (None: kernel left out)."""

    spatial: KernelTerm | None
    bilateral: KernelTerm | None
    batch: int
    height: int
    width: int


def _normalisation(
    lattice: Lattice, normalization: str, dtype: torch.dtype
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if normalization == "none":
        return None, None
    ones = torch.ones((lattice.num_points, 1), dtype=dtype, device=lattice.device)
    # K 1 is at least alpha times the point's own weight, but keep the reference's epsilon;
    # the division runs in double as on the CPU backend.
    k1 = lattice.filter(ones).to(torch.float64) + 1e-20
    if normalization == "symmetric":
        s = k1.rsqrt().to(dtype)
        return s, s
    s = k1.reciprocal().to(dtype)
    return (s, None) if normalization == "before" else (None, s)


def _positions(height: int, width: int, theta: float, device: torch.device) -> torch.Tensor:
    """(H W, 2) float32 (x / theta, y / theta), row-major, as ``dense.spatial_features``."""
    t = torch.tensor(theta, dtype=torch.float32, device=device)
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32),
        torch.arange(width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([xs.reshape(-1) / t, ys.reshape(-1) / t], 1)


def build_image_kernels(
    images: torch.Tensor,
    *,
    theta_alpha: float,
    theta_beta: float,
    theta_gamma: float,
    normalization: str = "after",
    dtype: torch.dtype = torch.float32,
    spatial: bool = True,
    bilateral: bool = True,
) -> ImageKernels:
    """Lattices and normalisations of DeepLab's kernels for (B, 3, H, W) RGB 0..255 images.

    Features are exactly the CPU backend's (``dense.bilateral_features``); each image gets
    its own lattice (disjoint blocks of one), the spatial one shared by copying. float32 on
    the CPU: lattices of the compiled kernels (:mod:`deeplab.crf.torch_cpu`).
    """
    b, _, h, w = images.shape
    dev = images.device
    build = build_compiled_lattice if _compiled(dev, dtype) else build_lattice
    spatial_term = bilateral_term = None
    with torch.no_grad():
        if spatial:
            lat = build(_positions(h, w, theta_gamma, dev))
            scales = _normalisation(lat, normalization, dtype)
            if b > 1:
                lat = lat.repeat(b)
                scales = tuple(None if s is None else s.repeat(b, 1) for s in scales)
            spatial_term = KernelTerm(lat, *scales)
        if bilateral:
            lat = build(_bilateral_features(images, theta_alpha, theta_beta))
            bilateral_term = KernelTerm(lat, *_normalisation(lat, normalization, dtype))
    return ImageKernels(spatial_term, bilateral_term, b, h, w)


def _bilateral_features(
    images: torch.Tensor, theta_alpha: float, theta_beta: float
) -> torch.Tensor:
    """(B, H W, 5) float32 (x, y) / theta_alpha, (r, g, b) / theta_beta of (B, 3, H, W)."""
    b, _, h, w = images.shape
    dev = images.device
    pos = _positions(h, w, theta_alpha, dev)
    tb = torch.tensor(theta_beta, dtype=torch.float32, device=dev)
    col = images.permute(0, 2, 3, 1).reshape(b, h * w, 3).to(torch.float32) / tb
    return torch.cat([pos[None].expand(b, -1, -1), col], 2)


# -- mean field ---------------------------------------------------------------------------


def _energy_step(
    neg_unary: torch.Tensor,
    q: torch.Tensor,
    terms: list[tuple[KernelTerm, torch.Tensor]],
    compat: torch.Tensor | None,
) -> torch.Tensor:
    """Energy (P, L) of one mean-field update: ``-U + sum_m w_m K_m Q`` (Potts) or
    ``-U - (sum_m w_m K_m Q) mu^T`` with a compatibility matrix mu (paper eq. 3).
    terms: each kernel with its coefficient (the weight times the output normalisation)."""
    msg = None
    for term, coef in terms:
        f = term.filtered(q)
        if msg is None:
            # Scaling f in place would overwrite what the weight's gradient needs.
            msg = f * coef if torch.is_grad_enabled() else f.mul_(coef)
        else:
            # In place: msg itself is saved by no backward function, f and coef are.
            msg.addcmul_(f, coef)
    if msg is None:
        return neg_unary
    if compat is None:
        return msg.add_(neg_unary)
    return neg_unary - msg @ compat.transpose(0, 1)


def _to_points(maps: torch.Tensor) -> torch.Tensor:
    """(B, L, H, W) -> point-major (B H W, L): every kernel row is one pixel's labels."""
    b, n_lab, h, w = maps.shape
    return maps.permute(0, 2, 3, 1).reshape(b * h * w, n_lab)


def _from_points(points: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
    return points.reshape(b, h, w, -1).permute(0, 3, 1, 2)


def mean_field(
    images: torch.Tensor,
    unary: torch.Tensor,
    *,
    w1: Weight,
    w2: Weight,
    theta_alpha: float,
    theta_beta: float,
    theta_gamma: float,
    iterations: int,
    normalization: str = "after",
    compat: torch.Tensor | None = None,
    log_marginals: bool = False,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Mean-field marginals (B, L, H, W) of the dense CRF (SPEC section 4), differentiable.

    images: (B, 3, H, W) RGB, uint8 or float in 0..255 (the lattice is built from them;
    no gradient). unary: (B, L, H, W) energies ``-log P`` (or ``-logits``), float32 or
    float64. w1, w2: bilateral / spatial weights, floats >= 0 (0 drops the kernel) or 0-d
    tensors (used as given). compat: optional (L, L) label compatibility mu (default Potts).
    log_marginals: return ``log Q`` (a log-softmax, for an NLL loss) instead of Q.
    callback(it, q): after each update, q (B, L, H, W) detached.
    Gradients flow to unary, tensor w1 / w2 and compat.
    """
    u = _float_maps(unary, "unary", 4)
    return _solve(
        images,
        -u,
        w1,
        w2,
        (theta_alpha, theta_beta, theta_gamma),
        iterations,
        normalization,
        compat,
        log_marginals,
        callback,
    )


def _solve(
    images: torch.Tensor,
    neg_unary: torch.Tensor,
    w1: Weight,
    w2: Weight,
    thetas: tuple[float, float, float],
    iterations: int,
    normalization: str,
    compat: object,
    log_marginals: bool,
    callback: Callback | None,
) -> torch.Tensor:
    """mean_field on checked (B, L, H, W) maps ``-U``."""
    images = _check_images(images, neg_unary.shape)
    if images.device != neg_unary.device:
        raise ValueError(f"images on {images.device} but the label maps on {neg_unary.device}")
    b, n_lab, h, w = neg_unary.shape
    n_iter = _count(iterations)
    mu = _check_compat(compat, n_lab, neg_unary)
    theta_alpha, theta_beta, theta_gamma = thetas
    use_w1, use_w2 = _kernel_used(w1, "w1"), _kernel_used(w2, "w2")
    if _fused_inference_applies(neg_unary, w1, w2, mu, log_marginals, callback):
        with torch.no_grad():
            return compiled_mean_field(
                neg_unary,
                _positions(h, w, theta_gamma, images.device) if use_w2 else None,
                _bilateral_features(images, theta_alpha, theta_beta) if use_w1 else None,
                float(w1),
                float(w2),
                mu,
                n_iter,
                normalization,
            )
    kernels = build_image_kernels(
        images,
        theta_alpha=theta_alpha,
        theta_beta=theta_beta,
        theta_gamma=theta_gamma,
        normalization=normalization,
        dtype=neg_unary.dtype,
        spatial=use_w2,
        bilateral=use_w1,
    )
    points, softmax = _to_points(neg_unary), _softmax
    if _compiled(neg_unary.device, neg_unary.dtype):
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
        callback,
        softmax,
        n_lab,
    )[:, :n_lab]
    out = F.log_softmax(energy, 1) if log_marginals else F.softmax(energy, 1)
    return _from_points(out, b, h, w).contiguous()


def _fused_inference_applies(
    neg_unary: torch.Tensor,
    w1: Weight,
    w2: Weight,
    mu: torch.Tensor | None,
    log_marginals: bool,
    callback: Callback | None,
) -> bool:
    """Whether the numba backend's fused inference can run this mean field: compiled CPU
    path, no gradient wanted, marginals (not their log) and no per-iteration callback."""
    if not _compiled(neg_unary.device, neg_unary.dtype) or log_marginals or callback is not None:
        return False
    tensors = [t for t in (neg_unary, w1, w2, mu) if isinstance(t, torch.Tensor)]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    scale = 1.0 if mu is None else float(mu.abs().max())
    return max(abs(float(w1)), abs(float(w2))) * scale <= _MAX_COMPILED_WEIGHT


def _run_mean_field(
    neg_unary: torch.Tensor,
    kernels: ImageKernels,
    w1: Weight,
    w2: Weight,
    compat: torch.Tensor | None,
    iterations: int,
    callback: Callback | None,
    softmax: Callable[[torch.Tensor], torch.Tensor],
    num_labels: int,
) -> torch.Tensor:
    """Final energies (P, W) after ``iterations`` updates from ``softmax(-U)``: the first
    ``num_labels`` columns are the labels', any others padding (energy -1e30), which the
    callback does not see."""
    terms = [
        (term, term.coefficient(w, neg_unary))
        for term, w in ((kernels.spatial, w2), (kernels.bilateral, w1))
        if term is not None
    ]
    energy = neg_unary
    for it in range(iterations):
        energy = _energy_step(neg_unary, softmax(energy), terms, compat)
        if callback is not None:
            q = F.softmax(energy.detach()[:, :num_labels], 1)
            callback(it, _from_points(q, kernels.batch, kernels.height, kernels.width))
    return energy


def _softmax(energy: torch.Tensor) -> torch.Tensor:
    return F.softmax(energy, 1)


def _kernel_used(w: Weight, name: str) -> bool:
    if isinstance(w, torch.Tensor):
        if w.numel() != 1:
            raise ValueError(f"{name}: expected a scalar weight, got shape {tuple(w.shape)}")
        return True
    v = float(w)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {w!r}")
    return v > 0


def _weight(w: Weight, like: torch.Tensor) -> Weight:
    if isinstance(w, torch.Tensor):
        return w.reshape(()).to(dtype=like.dtype, device=like.device)
    return float(w)


def _check_compat(compat: object, num_labels: int, like: torch.Tensor) -> torch.Tensor | None:
    if compat is None:
        return None
    c = _as_tensor(compat, "compat")
    if c.shape != (num_labels, num_labels):
        raise ValueError(
            f"compat: expected shape ({num_labels}, {num_labels}), got {tuple(c.shape)}"
        )
    if not c.is_floating_point():
        raise TypeError(f"compat: expected a floating point matrix, got {c.dtype}")
    if not bool(torch.isfinite(c).all()):
        raise ValueError("compat: contains NaN or infinite values")
    return c.to(dtype=like.dtype, device=like.device)


# -- the single-image API (the CPU backend's signatures) ------------------------------------


def _run_single(
    image: object,
    neg_unary_maps: torch.Tensor,
    params: CRFParams | None,
    compat: object,
    callback: Callable[[int, torch.Tensor], None] | None,
) -> torch.Tensor:
    params = _check_params(params)
    img = _single_image(image, neg_unary_maps.device)
    if tuple(img.shape[2:]) != tuple(neg_unary_maps.shape[1:]):
        h, w = img.shape[2:]
        raise ValueError(
            f"label maps: shape {tuple(neg_unary_maps.shape)} does not match the image: "
            f"expected (L, {h}, {w})"
        )
    cb = None
    if callback is not None:

        def cb(it: int, q: torch.Tensor) -> None:
            callback(it, q[0].clone())

    with torch.no_grad():
        q = _solve(
            img,
            neg_unary_maps[None],
            params.w1,
            params.w2,
            (params.theta_alpha, params.theta_beta, params.theta_gamma),
            params.iterations,
            params.normalization,
            compat,
            False,
            cb,
        )
    return q[0].contiguous()


def dense_crf_from_unary(
    image: object,
    unary: object,
    params: CRFParams | None = None,
    *,
    compat: object = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Marginals (L, H, W) from energies ``-log P`` (L, H, W), on the unary's device.

    image: (H, W, 3) uint8 RGB (tensor or array; moved to the unary's device). The
    arguments are :func:`deeplab.crf.dense_crf_from_unary`'s; tensors in and out, float32
    (float64 for float64 input). Not differentiable: see :func:`mean_field`.
    """
    u = _float_maps(unary, "unary", 3)
    return _run_single(image, -u, params, compat, callback)


def dense_crf(
    image: object,
    probs: object,
    params: CRFParams | None = None,
    *,
    compat: object = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Refine class probabilities (L, H, W) of an (H, W, 3) uint8 RGB image; unary
    ``-log max(P, 1e-8)`` (paper section 4.1). Returns marginals (L, H, W)."""
    p = _float_maps(probs, "probs", 3)
    if bool((p < 0).any()):
        raise ValueError(f"probs: contains {int((p < 0).sum())} negative values")
    log_p = torch.log(p.clamp_min(PROB_FLOOR))
    return _run_single(image, log_p, params, compat, callback)


def dense_crf_from_logits(
    image: object,
    logits: object,
    params: CRFParams | None = None,
    *,
    compat: object = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """As :func:`dense_crf` for unnormalised scores (L, H, W): unary ``-logits``."""
    z = _float_maps(logits, "logits", 3)
    return _run_single(image, z, params, compat, callback)


# -- the module -----------------------------------------------------------------------------


def _softplus_inverse(w: float) -> float:
    # log(exp(w) - 1), written to stay finite for large w.
    return w + math.log(-math.expm1(-w))


class DenseCRF(nn.Module):
    """The fully connected CRF as a layer: images and scores in, marginals out.

    Construct from :class:`CRFParams` or a preset name (default ``deeplab-largefov``).
    ``learn_weights``: w1, w2 are learnable, stored as ``raw_w1``/``raw_w2`` with
    ``w = softplus(raw)`` so they stay > 0 without clamping dead gradients (initial
    weights must then be > 0); otherwise fixed buffers ``w1``, ``w2``. The theta_* are
    fixed buffers. ``learn_compat`` adds a learnable (L, L) label compatibility ``compat``
    (needs ``num_labels``), initialised to Potts ``1 - I`` (the same model as no matrix:
    the constant it adds per pixel cancels), or to ``compat`` if given. ``iterations``
    (default: the params') runs at eval time, ``train_iterations`` (default: the same) in
    training mode.

    forward(images, logits=None, *, unary=None, iterations=None, log=False):

    - images: (B, 3, H, W) RGB, uint8 or float in 0..255 (the original photo, not the
      network's mean-subtracted BGR input: from that, ``(x + mean_bgr[:, None, None])
      .flip(1)`` with ``deeplab.data.MEAN_BGR``); no gradient.
    - logits: (B, L, H, W) network scores (unary ``-logits``), or ``unary=`` energies
      ``-log P``; float32 (or float64), on the images' device.
    - lists of (3, H, W) images and (L, H, W) scores of different sizes give a list of
      outputs; same-sized ones are batched together.
    - returns marginals Q (B, L, H, W), or ``log Q`` with ``log=True`` (for NLLLoss).
    """

    def __init__(
        self,
        params: CRFParams | str | None = None,
        *,
        num_labels: int | None = None,
        learn_weights: bool = True,
        learn_compat: bool = False,
        compat: torch.Tensor | None = None,
        iterations: int | None = None,
        train_iterations: int | None = None,
    ) -> None:
        super().__init__()
        p = CRFParams() if params is None else CRFParams.resolve(params)
        self.normalization = p.normalization
        self.iterations = _count(p.iterations if iterations is None else iterations)
        self.train_iterations = _count(
            self.iterations if train_iterations is None else train_iterations
        )
        for name in ("theta_alpha", "theta_beta", "theta_gamma"):
            self.register_buffer(name, torch.tensor(getattr(p, name), dtype=torch.float64))
        self.learn_weights = bool(learn_weights)
        for name in ("w1", "w2"):
            value = float(getattr(p, name))
            if self.learn_weights:
                if value <= 0:
                    raise ValueError(
                        f"{name} = {value}: learnable weights must start > 0 "
                        "(use learn_weights=False to switch a kernel off)"
                    )
                raw = torch.tensor(_softplus_inverse(value), dtype=torch.float32)
                self.register_parameter(f"raw_{name}", nn.Parameter(raw))
            else:
                self.register_buffer(name, torch.tensor(value, dtype=torch.float32))
        self.num_labels = num_labels
        if compat is None and learn_compat:
            if num_labels is None or int(num_labels) < 2:
                raise ValueError("learn_compat needs num_labels >= 2")
            compat = 1.0 - torch.eye(int(num_labels))
        if compat is not None:
            c = torch.as_tensor(compat, dtype=torch.float32).clone()
            if c.dim() != 2 or c.shape[0] != c.shape[1]:
                raise ValueError(f"compat: expected an (L, L) matrix, got {tuple(c.shape)}")
            if num_labels is not None and c.shape[0] != num_labels:
                raise ValueError(
                    f"compat: expected ({num_labels}, {num_labels}), got {tuple(c.shape)}"
                )
            self.num_labels = c.shape[0]
            if learn_compat:
                self.compat = nn.Parameter(c)
            else:
                self.register_buffer("compat", c)
        else:
            self.compat = None

    def kernel_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The effective (w1, w2) as 0-d tensors (differentiable when learnable)."""
        if self.learn_weights:
            return F.softplus(self.raw_w1), F.softplus(self.raw_w2)
        return self.w1, self.w2

    def to_params(self) -> CRFParams:
        """The current weights and settings as :class:`CRFParams` (for the CPU API)."""
        w1, w2 = (float(w.detach()) for w in self.kernel_weights())
        return CRFParams(
            w1=w1,
            w2=w2,
            theta_alpha=float(self.theta_alpha),
            theta_beta=float(self.theta_beta),
            theta_gamma=float(self.theta_gamma),
            iterations=self.iterations,
            normalization=self.normalization,
        )

    def extra_repr(self) -> str:
        w1, w2 = (float(w.detach()) for w in self.kernel_weights())
        compat = "potts" if self.compat is None else "matrix"
        if isinstance(self.compat, nn.Parameter):
            compat = "learned"
        return (
            f"w1={w1:.4g}, w2={w2:.4g}, theta_alpha={float(self.theta_alpha):g}, "
            f"theta_beta={float(self.theta_beta):g}, theta_gamma={float(self.theta_gamma):g}, "
            f"normalization={self.normalization!r}, iterations={self.iterations}, "
            f"train_iterations={self.train_iterations}, learn_weights={self.learn_weights}, "
            f"compat={compat}"
        )

    def forward(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        logits: torch.Tensor | Sequence[torch.Tensor] | None = None,
        *,
        unary: torch.Tensor | Sequence[torch.Tensor] | None = None,
        iterations: int | None = None,
        log: bool = False,
    ) -> torch.Tensor | list[torch.Tensor]:
        if (logits is None) == (unary is None):
            raise ValueError("pass exactly one of logits or unary=")
        scores = logits if unary is None else unary
        sign = -1.0 if unary is None else 1.0
        n_iter = iterations
        if n_iter is None:
            n_iter = self.train_iterations if self.training else self.iterations
        if isinstance(images, torch.Tensor):
            if not isinstance(scores, torch.Tensor):
                raise TypeError("images is a tensor: pass the scores as a tensor too")
            return self._batch(images, scores, sign, n_iter, log)
        if isinstance(scores, torch.Tensor) or len(images) != len(scores):
            raise ValueError("images and scores: expected two lists of the same length")
        return self._lists(list(images), list(scores), sign, n_iter, log)

    def _batch(
        self, images: torch.Tensor, scores: torch.Tensor, sign: float, n_iter: int, log: bool
    ) -> torch.Tensor:
        if (
            isinstance(scores, torch.Tensor)
            and scores.dim() == 4
            and self.num_labels is not None
            and scores.shape[1] != self.num_labels
        ):
            raise ValueError(
                f"scores: expected {self.num_labels} labels, got shape {tuple(scores.shape)}"
            )
        u = _float_maps(scores, "unary" if sign > 0 else "logits", 4)
        w1, w2 = self.kernel_weights()
        thetas = (float(self.theta_alpha), float(self.theta_beta), float(self.theta_gamma))
        return _solve(
            images, -sign * u, w1, w2, thetas, n_iter, self.normalization, self.compat, log, None
        )

    def _lists(
        self,
        images: list[torch.Tensor],
        scores: list[torch.Tensor],
        sign: float,
        n_iter: int,
        log: bool,
    ) -> list[torch.Tensor]:
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (img, s) in enumerate(zip(images, scores, strict=True)):
            if not isinstance(img, torch.Tensor) or img.dim() != 3:
                raise ValueError(f"images[{i}]: expected a (3, H, W) tensor")
            if not isinstance(s, torch.Tensor) or s.dim() != 3:
                raise ValueError(f"scores[{i}]: expected an (L, H, W) tensor")
            groups.setdefault(tuple(img.shape[1:]), []).append(i)
        out: list[torch.Tensor | None] = [None] * len(images)
        for idx in groups.values():
            q = self._batch(
                torch.stack([images[i] for i in idx]),
                torch.stack([scores[i] for i in idx]),
                sign,
                n_iter,
                log,
            )
            for k, i in enumerate(idx):
                out[i] = q[k]
        return out  # type: ignore[return-value]


def _count(n: int) -> int:
    if isinstance(n, bool) or int(n) != n or not 0 <= int(n) <= 1000:
        raise ValueError(f"iterations must be an integer in 0..1000, got {n!r}")
    return int(n)
