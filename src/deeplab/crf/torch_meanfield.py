"""Mean-field inference in PyTorch over N points per item with DeepLab's two kernels: the
one driver behind the torch image API (:mod:`deeplab.crf.torch_backend`) and the torch
volume API (:mod:`deeplab.crf.torch_volume`).

The model is Chen et al. 2015, section 4, eq. (1)-(3): a spatial kernel of weight w2 and
a bilateral kernel of weight w1, Potts or an (L, L) label compatibility mu. Inference is
Krähenbühl & Koltun's (2011) mean field from ``softmax(-U)`` without damping, each kernel
a Gaussian filter over the permutohedral lattice (:mod:`deeplab.crf.torch_lattice`, or on
CPU float32 the compiled lattice of :mod:`deeplab.crf.torch_cpu`).

Gradients: the lattice filter is a custom autograd function whose backward is the adjoint
filter (blur axes reversed), so a backward pass costs about what the forward pass does and
stores, per iteration, only the marginals and messages autograd needs anyway. They flow to
the unary, tensor weights w1 / w2 and the compatibility; never to the features (images or
volumes), which only place the lattice. CPU float32 inference that needs no gradient runs
the numba backend's fused mean field instead (numba is imported then, not before).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)

from deeplab.crf.params import CRFParams, check_params
from deeplab.crf.torch_cpu import (
    CompiledLattice,
    build_compiled_lattice,
    compiled_mean_field,
    compiled_softmax,
    pad_labels,
)
from deeplab.crf.torch_lattice import TorchLattice, build_lattice, lattice_filter
from deeplab.crf.validation import (
    check_finite,
    check_iterations,
    check_nonempty,
    check_nonnegative,
    check_normalization,
    check_num_labels,
    check_rank,
    check_square,
    real_array,
)

log = logging.getLogger(__name__)

__all__ = [
    "Callback",
    "KernelTerm",
    "Kernels",
    "Weight",
    "as_tensor",
    "build_kernels",
    "float_maps",
    "solve",
]

Weight = float | torch.Tensor
Callback = Callable[[int, torch.Tensor], None]
Lattice = TorchLattice | CompiledLattice
Features = Callable[[], torch.Tensor]

# CPU float32 tensors go through the compiled kernels (deeplab.crf.torch_cpu); False sends
# them through the generic torch lattice, as every other device and dtype (tests compare).
_COMPILED_CPU = True
# Largest kernel weight (times compatibility) the compiled inference accepts, as the numba
# backend (deeplab.crf.meanfield.MAX_COMPAT); larger ones take the generic path.
_MAX_COMPILED_WEIGHT = 1e6


def compiled(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether maps of this device and dtype are filtered by the compiled CPU kernels."""
    return _COMPILED_CPU and device.type == "cpu" and dtype == torch.float32


# -- input checks ------------------------------------------------------------------------


def as_tensor(x: object, name: str) -> torch.Tensor:
    """A tensor as it is, a real numpy array as a tensor sharing its memory."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(real_array(x, name)))
    raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")


def float_maps(x: object, name: str, layout: str) -> torch.Tensor:
    """Per-label maps of the given ``layout`` ("(B, L, H, W)"...) as a float tensor
    (float64 stays float64, other reals become float32), checked for rank, at least 2
    labels, emptiness and finiteness."""
    t = as_tensor(x, name)
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name}: expected real numbers, got dtype {t.dtype}")
    if t.dtype != torch.float64:
        t = t.to(torch.float32)
    axes = layout.strip("()").split(", ")
    check_rank(t.shape, len(axes), name, f"a {layout} tensor")
    check_num_labels(t.shape[axes.index("L")], name)
    check_nonempty(t.shape, name)
    check_finite(t, name)
    return t


def with_overrides(
    params: CRFParams | None,
    w1: Weight | None,
    w2: Weight | None,
    **fields: float | int | str | None,
) -> tuple[CRFParams, Weight, Weight]:
    """``params`` (default ``deeplab-largefov``) with the keyword fields a caller gave (None:
    keep), and the weights to run: tensors or floats given, else the parameters' own."""
    p = check_params(params).replace(**fields)
    return p, p.w1 if w1 is None else w1, p.w2 if w2 is None else w2


def kernel_used(w: Weight, name: str) -> bool:
    """Whether a kernel of weight ``w`` runs: a tensor always does (its gradient is
    wanted), a float when > 0."""
    if isinstance(w, torch.Tensor):
        if w.numel() != 1:
            raise ValueError(f"{name}: expected a scalar weight, got shape {tuple(w.shape)}")
        return True
    return check_nonnegative(w, name) > 0


def _weight(w: Weight, like: torch.Tensor) -> Weight:
    if isinstance(w, torch.Tensor):
        return w.reshape(()).to(dtype=like.dtype, device=like.device)
    return float(w)


def _compat(compat: object, num_labels: int, like: torch.Tensor) -> torch.Tensor | None:
    """The (L, L) compatibility mu in the maps' dtype and device, or None (Potts)."""
    if compat is None:
        return None
    c = as_tensor(compat, "compat")
    check_square(c.shape, num_labels, "compat")
    if not c.is_floating_point():
        raise TypeError(f"compat: expected a floating point matrix, got {c.dtype}")
    check_finite(c, "compat")
    return c.to(dtype=like.dtype, device=like.device)


# -- kernels ---------------------------------------------------------------------------


@dataclass
class KernelTerm:
    """One Gaussian kernel over a batch's P = B N points: its lattice and the per-point
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
class Kernels:
    """DeepLab's two kernels for a batch of B items of N points (None: left out)."""

    spatial: KernelTerm | None
    bilateral: KernelTerm | None
    batch: int


def _normalisation(
    lattice: Lattice, normalization: str, dtype: torch.dtype
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if check_normalization(normalization) == "none":
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


def build_kernels(
    spatial: torch.Tensor | None,
    bilateral: torch.Tensor | None,
    batch: int,
    normalization: str,
    dtype: torch.dtype,
) -> Kernels:
    """Lattices and normalisations of the spatial kernel over (N, d_s) features, shared
    by the B items (built once, repeated), and of the bilateral kernel over (B, N, d_b)
    features, each item's lattice its own. Features are already divided by the thetas."""
    spatial_term = bilateral_term = None
    with torch.no_grad():
        if spatial is not None:
            build = build_compiled_lattice if compiled(spatial.device, dtype) else build_lattice
            lat = build(spatial)
            before, after = _normalisation(lat, normalization, dtype)
            if batch > 1:
                lat = lat.repeat(batch)
                before = None if before is None else before.repeat(batch, 1)
                after = None if after is None else after.repeat(batch, 1)
            spatial_term = KernelTerm(lat, before, after)
        if bilateral is not None:
            build = build_compiled_lattice if compiled(bilateral.device, dtype) else build_lattice
            lat = build(bilateral)
            bilateral_term = KernelTerm(lat, *_normalisation(lat, normalization, dtype))
    return Kernels(spatial_term, bilateral_term, batch)


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
            # Scaling f in place would overwrite what the weight's gradient needs; without
            # any gradient to keep (no_grad, or inputs that need none) it saves a copy.
            tracked = torch.is_grad_enabled() and (f.requires_grad or coef.requires_grad)
            msg = f * coef if tracked else f.mul_(coef)
        else:
            # In place: msg itself is saved by no backward function, f and coef are.
            msg.addcmul_(f, coef)
    if msg is None:
        return neg_unary
    if compat is None:
        return msg.add_(neg_unary)
    return neg_unary - msg @ compat.transpose(0, 1)


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
    if not compiled(neg_unary.device, neg_unary.dtype) or log_marginals or callback is not None:
        return False
    tensors = [t for t in (neg_unary, w1, w2, mu) if isinstance(t, torch.Tensor)]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    scale = 1.0 if mu is None else float(mu.abs().max())
    return max(abs(float(w1)), abs(float(w2))) * scale <= _MAX_COMPILED_WEIGHT


def _softmax(energy: torch.Tensor) -> torch.Tensor:
    return F.softmax(energy, 1)


def solve(
    neg_unary: torch.Tensor,
    spatial_features: Features,
    bilateral_features: Features,
    *,
    w1: Weight,
    w2: Weight,
    compat: object,
    iterations: int,
    normalization: str,
    log_marginals: bool,
    callback: Callback | None,
) -> torch.Tensor:
    """Marginals (B, L, N) (``log Q`` with ``log_marginals``) of checked energies ``-U``
    (B, L, N) after ``iterations`` mean-field updates (paper section 4, eq. 2-3).

    spatial_features() -> (N, d_s), bilateral_features() -> (B, N, d_b): the kernels'
    features divided by their thetas, computed only for a kernel that runs. w1, w2:
    floats >= 0 (0 drops the kernel) or 0-d tensors. compat: optional (L, L) mu.
    callback(it, q): after each update, q (B, L, N) detached.
    """
    b, n_lab, n = neg_unary.shape
    n_iter = check_iterations(iterations)
    norm = check_normalization(normalization)
    mu = _compat(compat, n_lab, neg_unary)
    use_w1, use_w2 = kernel_used(w1, "w1"), kernel_used(w2, "w2")
    with torch.no_grad():
        spatial = spatial_features() if use_w2 else None
        bilateral = bilateral_features() if use_w1 else None
    if _fused_inference_applies(neg_unary, w1, w2, mu, log_marginals, callback):
        with torch.no_grad():
            return compiled_mean_field(
                neg_unary, spatial, bilateral, float(w1), float(w2), mu, n_iter, norm
            )
    kernels = build_kernels(spatial, bilateral, b, norm, neg_unary.dtype)
    points, softmax = neg_unary.permute(0, 2, 1).reshape(b * n, n_lab), _softmax
    if compiled(neg_unary.device, neg_unary.dtype):
        # Padded labels (energy -1e30, probability 0) let the kernels run whole vectors.
        points, mu = pad_labels(points, mu)
        softmax = compiled_softmax
    terms = [
        (term, term.coefficient(_weight(w, neg_unary), points))
        for term, w in ((kernels.spatial, w2), (kernels.bilateral, w1))
        if term is not None
    ]
    energy = points
    for it in range(n_iter):
        energy = _energy_step(points, softmax(energy), terms, mu)
        if callback is not None:
            q = F.softmax(energy.detach()[:, :n_lab], 1)
            callback(it, q.reshape(b, n, n_lab).permute(0, 2, 1))
    energy = energy[:, :n_lab]
    out = F.log_softmax(energy, 1) if log_marginals else F.softmax(energy, 1)
    return out.reshape(b, n, n_lab).permute(0, 2, 1)
