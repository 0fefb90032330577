"""The dense CRF in PyTorch: batched, on any device, differentiable (Chen et al. 2015,
section 4; Krähenbühl & Koltun 2011 for the mean field and the lattice).

The same model and inference as the numba backend (:mod:`deeplab.crf.dense`): DeepLab's
spatial kernel ``w2 exp(-|p_i-p_j|^2 / 2 theta_gamma^2)`` and bilateral kernel
``w1 exp(-|p_i-p_j|^2 / 2 theta_alpha^2 - |I_i-I_j|^2 / 2 theta_beta^2)`` (eq. 3), mean
field from ``softmax(-U)`` without damping, run by :mod:`deeplab.crf.torch_meanfield`.
Marginals agree with the numba backend to float32 rounding.

Three entry points, all differentiable with respect to the maps (gradients flow when they
require grad); the functions take ``(images, maps, params=None, *, ...)``:

- :func:`dense_crf`, :func:`dense_crf_from_unary`, :func:`dense_crf_from_logits`: one
  image, the numba API's arguments as tensors; reached from :func:`deeplab.crf.dense_crf`
  with ``backend="torch"`` or automatically for tensor inputs. Gradients reach the
  probabilities / unary / logits and a tensor ``compat``.
- :func:`mean_field`: batches (B, 3, H, W) / (B, L, H, W); gradients also reach tensor
  weights ``w1`` / ``w2``.
- :class:`DenseCRF`: the CRF as an ``nn.Module`` with learnable w1, w2 and compatibility,
  for end-to-end training (Zheng et al. 2015, "CRF as RNN", trains the same model).

No gradient reaches the images: they only give the kernels' features, and the lattice
built from those is not differentiated.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)
from torch import nn

from deeplab.crf._callbacks import reshaped
from deeplab.crf.params import CRFParams, check_params
from deeplab.crf.torch_meanfield import (
    Callback,
    Kernels,
    Weight,
    as_tensor,
    build_kernels,
    float_maps,
    solve,
    with_overrides,
)
from deeplab.crf.unary import PROB_FLOOR
from deeplab.crf.validation import (
    check_finite,
    check_iterations,
    check_maps_match,
    check_no_negatives,
    image_layout,
)

log = logging.getLogger(__name__)

__all__ = [
    "DenseCRF",
    "build_image_kernels",
    "dense_crf",
    "dense_crf_from_logits",
    "dense_crf_from_unary",
    "mean_field",
]


# -- images ----------------------------------------------------------------------------


def _check_images(images: object, maps_shape: Sequence[int]) -> torch.Tensor:
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
    check_finite(images, "images")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0 or hi > 255:
        raise ValueError(
            f"images: values must be RGB in 0..255, got {lo:.3g}..{hi:.3g}; undo the "
            "network's mean subtraction (and BGR order) before the CRF"
        )
    if hi <= 1.0:
        log.warning("images: all values <= 1; the CRF expects RGB in 0..255, not 0..1")
    return images


def _positions(height: int, width: int, theta: float, device: torch.device) -> torch.Tensor:
    """(H W, 2) float32 (x / theta, y / theta), row-major, as ``dense.spatial_features``."""
    t = torch.tensor(theta, dtype=torch.float32, device=device)
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32),
        torch.arange(width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([xs.reshape(-1) / t, ys.reshape(-1) / t], 1)


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
) -> Kernels:
    """Lattices and normalisations of DeepLab's kernels for (B, 3, H, W) RGB 0..255 images.

    Features are exactly the numba backend's (``dense.bilateral_features``); each image
    gets its own lattice (disjoint blocks of one), the spatial one shared by copying.
    float32 on the CPU: lattices of the compiled kernels (:mod:`deeplab.crf.torch_cpu`).
    """
    b, _, h, w = images.shape
    with torch.no_grad():
        pos = _positions(h, w, theta_gamma, images.device) if spatial else None
        bil = _bilateral_features(images, theta_alpha, theta_beta) if bilateral else None
    return build_kernels(pos, bil, b, normalization, dtype)


# -- mean field ---------------------------------------------------------------------------


def _solve_images(
    images: object,
    neg_unary: torch.Tensor,
    params: CRFParams,
    w1: Weight,
    w2: Weight,
    compat: object,
    log_marginals: bool,
    callback: Callback | None,
) -> torch.Tensor:
    """Marginals (B, L, H, W) of checked maps ``-U`` (B, L, H, W): the images' kernels
    (thetas, iterations and normalisation from ``params``), :func:`torch_meanfield.solve`."""
    imgs = _check_images(images, neg_unary.shape)
    if imgs.device != neg_unary.device:
        raise ValueError(f"images on {imgs.device} but the label maps on {neg_unary.device}")
    b, n_lab, h, w = neg_unary.shape
    q = solve(
        neg_unary.reshape(b, n_lab, h * w),
        lambda: _positions(h, w, params.theta_gamma, imgs.device),
        lambda: _bilateral_features(imgs, params.theta_alpha, params.theta_beta),
        w1=w1,
        w2=w2,
        compat=compat,
        iterations=params.iterations,
        normalization=params.normalization,
        log_marginals=log_marginals,
        callback=reshaped(callback, (b, n_lab, h, w)),
    )
    return q.reshape(b, n_lab, h, w).contiguous()


def mean_field(
    images: torch.Tensor,
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
    compat: torch.Tensor | None = None,
    log_marginals: bool = False,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Mean-field marginals (B, L, H, W) of the dense CRF (paper section 4), differentiable.

    images: (B, 3, H, W) RGB, uint8 or float in 0..255 (the lattice is built from them;
    no gradient). unary: (B, L, H, W) energies ``-log P`` (or ``-logits``), float32 or
    float64. params: :class:`CRFParams` (default ``deeplab-largefov``); any of its fields
    given as a keyword replaces it. w1, w2: bilateral / spatial weights, floats >= 0 (0
    drops the kernel) or 0-d tensors (used as given). compat: optional (L, L) label
    compatibility mu (default Potts). log_marginals: return ``log Q`` (a log-softmax, for
    an NLL loss) instead of Q. callback(it, q): after each update, q (B, L, H, W) detached.
    Gradients flow to unary, tensor w1 / w2 and compat.
    """
    u = float_maps(unary, "unary", "(B, L, H, W)")
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
    return _solve_images(images, -u, p, w1_, w2_, compat, log_marginals, callback)


# -- the single-image API (the numba backend's signatures) -----------------------------------


def _run_single(
    image: object,
    neg_unary_maps: torch.Tensor,
    params: CRFParams | None,
    compat: object,
    callback: Callback | None,
) -> torch.Tensor:
    """(L, H, W) marginals of one (H, W, 3) image and its (L, H, W) maps ``-U``."""
    p = check_params(params)
    img = image_layout(as_tensor(image, "image"))
    check_maps_match(neg_unary_maps.shape, img.shape[:2], "label maps", "image")
    images = img.permute(2, 0, 1)[None].to(neg_unary_maps.device)
    q = _solve_images(
        images,
        neg_unary_maps[None],
        p,
        p.w1,
        p.w2,
        compat,
        False,
        reshaped(callback, neg_unary_maps.shape),
    )
    return q[0]


def dense_crf_from_unary(
    image: object,
    unary: object,
    params: CRFParams | None = None,
    *,
    compat: object = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Marginals (L, H, W) from energies ``-log P`` (L, H, W), on the unary's device.

    image: (H, W, 3) uint8 RGB (tensor or array; moved to the unary's device). The
    arguments are :func:`deeplab.crf.dense_crf_from_unary`'s; tensors in and out, float32
    (float64 for float64 input). Differentiable in the unary and a tensor ``compat``.
    """
    u = float_maps(unary, "unary", "(L, H, W)")
    return _run_single(image, -u, params, compat, callback)


def dense_crf(
    image: object,
    probs: object,
    params: CRFParams | None = None,
    *,
    compat: object = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Refine class probabilities (L, H, W) of an (H, W, 3) uint8 RGB image; unary
    ``-log max(P, 1e-8)`` (paper section 4). Returns marginals (L, H, W), differentiable
    in the probabilities (where above 1e-8) and a tensor ``compat``."""
    p = float_maps(probs, "probs", "(L, H, W)")
    check_no_negatives(p, "probs")
    log_p = torch.log(p.clamp_min(PROB_FLOOR))
    return _run_single(image, log_p, params, compat, callback)


def dense_crf_from_logits(
    image: object,
    logits: object,
    params: CRFParams | None = None,
    *,
    compat: object = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """As :func:`dense_crf` for unnormalised scores (L, H, W): unary ``-logits``;
    differentiable in the logits and a tensor ``compat``."""
    z = float_maps(logits, "logits", "(L, H, W)")
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

    compat: torch.Tensor | None

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
        self.iterations = check_iterations(p.iterations if iterations is None else iterations)
        self.train_iterations = check_iterations(
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
            raw = (self.get_parameter("raw_w1"), self.get_parameter("raw_w2"))
            return F.softplus(raw[0]), F.softplus(raw[1])
        return self.get_buffer("w1"), self.get_buffer("w2")

    def _thetas(self) -> tuple[float, float, float]:
        """(theta_alpha, theta_beta, theta_gamma) from the buffers."""
        names = ("theta_alpha", "theta_beta", "theta_gamma")
        alpha, beta, gamma = (float(self.get_buffer(name)) for name in names)
        return alpha, beta, gamma

    def to_params(self) -> CRFParams:
        """The current weights and settings as :class:`CRFParams` (for the CPU API)."""
        w1, w2 = (float(w.detach()) for w in self.kernel_weights())
        alpha, beta, gamma = self._thetas()
        return CRFParams(
            w1=w1,
            w2=w2,
            theta_alpha=alpha,
            theta_beta=beta,
            theta_gamma=gamma,
            iterations=self.iterations,
            normalization=self.normalization,
        )

    def extra_repr(self) -> str:
        w1, w2 = (float(w.detach()) for w in self.kernel_weights())
        compat = "potts" if self.compat is None else "matrix"
        if isinstance(self.compat, nn.Parameter):
            compat = "learned"
        alpha, beta, gamma = self._thetas()
        return (
            f"w1={w1:.4g}, w2={w2:.4g}, theta_alpha={alpha:g}, "
            f"theta_beta={beta:g}, theta_gamma={gamma:g}, "
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
        scores = logits if unary is None else unary
        if scores is None or (logits is not None and unary is not None):
            raise ValueError("pass exactly one of logits or unary=")
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
        u = float_maps(scores, "unary" if sign > 0 else "logits", "(B, L, H, W)")
        w1, w2 = self.kernel_weights()
        alpha, beta, gamma = self._thetas()
        params = CRFParams(
            theta_alpha=alpha,
            theta_beta=beta,
            theta_gamma=gamma,
            iterations=n_iter,
            normalization=self.normalization,
        )
        return _solve_images(images, -sign * u, params, w1, w2, self.compat, log, None)

    def _lists(
        self,
        images: list[torch.Tensor],
        scores: list[torch.Tensor],
        sign: float,
        n_iter: int,
        log: bool,
    ) -> list[torch.Tensor]:
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (img, s) in enumerate(zip(images, scores, strict=True)):
            if not isinstance(img, torch.Tensor) or img.dim() != 3:
                raise ValueError(f"images[{i}]: expected a (3, H, W) tensor")
            if not isinstance(s, torch.Tensor) or s.dim() != 3:
                raise ValueError(f"scores[{i}]: expected an (L, H, W) tensor")
            groups.setdefault(tuple(img.shape[1:]), []).append(i)
        out: dict[int, torch.Tensor] = {}
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
        return [out[i] for i in range(len(images))]
