"""Shared inputs and checks for the pydensecrf drop-in tests."""

from __future__ import annotations

import numpy as np

from ..helpers import smooth_logits


def scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8: a few flat coloured rectangles plus noise, so colour edges exist."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.float64) + rng.uniform(0, 255, 3)
    for _ in range(6):
        y0, x0 = rng.integers(0, height - 4), rng.integers(0, width - 4)
        y1, x1 = rng.integers(y0 + 2, height + 1), rng.integers(x0 + 2, width + 1)
        img[y0:y1, x0:x1] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def random_unary(num_labels: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(L, H*W) float32 energies -logits of smooth, network-like scores."""
    return -smooth_logits(num_labels, height, width, seed=seed).reshape(num_labels, -1)


def compat_pair(form: str, num_labels: int, weight: float, seed: int = 0) -> tuple[object, object]:
    """(ours, reference) versions of one compatibility: the reference needs float32
    C-contiguous arrays, ours gets float64 and strided ones to exercise the conversion."""
    if form == "scalar":
        return weight, weight
    rng = np.random.default_rng(seed)
    if form == "vector":
        # DiagonalCompatibility: the message is -v K Q, so negative weights smooth.
        v = -weight * rng.uniform(0.5, 1.5, num_labels)
        return v[::-1].copy()[::-1], v.astype(np.float32)
    if form == "matrix":
        # Potts-like costs plus an asymmetric part that pydensecrf symmetrises away.
        m = weight * (1.0 - np.eye(num_labels)) + rng.uniform(-0.5, 0.5, (num_labels,) * 2)
        return np.asfortranarray(m), np.ascontiguousarray(m, dtype=np.float32)
    raise ValueError(form)


def assert_agree(q: object, q_ref: object, *, prob_tol: float = 1e-3) -> None:
    """pydensecrf agreement: >= 99.9% equal labels and probabilities within prob_tol."""
    a, b = np.asarray(q), np.array(q_ref)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert a.dtype == np.float32
    agreement = float((a.argmax(0) == b.argmax(0)).mean())
    max_diff = float(np.abs(a - b).max())
    assert agreement >= 0.999, f"label agreement {agreement:.6f}"
    assert max_diff <= prob_tol, f"max |Q - Q_ref| = {max_diff:.2e}"
