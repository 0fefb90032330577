"""The dense CRF on volumes: the model against pydensecrf2's generic DenseCRF, both
backends, gradients, and the errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from deeplab.crf import CRFParams, dense_crf_3d, estimate_volume_memory
from deeplab.crf import volume as volume_mod

SHAPE = (10, 14, 12)
PARAMS = CRFParams(w1=5, theta_alpha=6, theta_beta=20, w2=3, theta_gamma=2, iterations=5)


def noisy_ball(
    shape: tuple[int, int, int] = SHAPE, channels: int = 2, labels: int = 2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A (D, H, W, C) volume of a bright ball in noise, noisy (L, D, H, W) probabilities
    of it (label 1 inside; with more labels, the outside split in bands) and the truth."""
    rng = np.random.default_rng(seed)
    d, h, w = shape
    z, y, x = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    ball = ((2 * z - d) ** 2 + (y - h / 2) ** 2 + (x - w / 2) ** 2) < (0.35 * h) ** 2
    intensities = [
        ball * 100.0 * (1 - 1.5 * c) + rng.normal(size=shape) * 10 for c in range(channels)
    ]
    vol = np.stack(intensities, -1).astype(np.float32)
    truth = np.where(ball, 1, 0)
    if labels > 2:
        truth = np.where(ball, 1, np.where(x < w // 2, 0, 2 + (y % (labels - 2))))
    logits = np.eye(labels)[truth].transpose(3, 0, 1, 2) * 1.5
    logits = logits + rng.normal(size=logits.shape) * 0.8
    e = np.exp(logits - logits.max(0))
    return vol, (e / e.sum(0)).astype(np.float32), truth


def test_noisy_ball_helper_shapes() -> None:
    vol, p, truth = noisy_ball(labels=5)
    assert vol.shape == (*SHAPE, 2) and p.shape == (5, *SHAPE) and truth.shape == SHAPE


# -- the model, against pydensecrf2's generic DenseCRF ---------------------------------------


def reference_features(
    vol: np.ndarray, spacing: tuple[float, float, float], theta_pos: float, theta_int, scale
) -> np.ndarray:
    """(d, N) features as the docs define them, built here independently of the module."""
    d, h, w = vol.shape[:3]
    z, y, x = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    cols = [x * spacing[2], y * spacing[1], z * spacing[0]]
    feats = [(c.astype(np.float64) / theta_pos).astype(np.float32).reshape(-1) for c in cols]
    if theta_int is not None:
        for ch in range(vol.shape[3]):
            v = vol[..., ch].astype(np.float64) * scale[ch] / theta_int
            feats.append(v.astype(np.float32).reshape(-1))
    return np.ascontiguousarray(np.stack(feats))


def pydensecrf_reference(vol, p, params, spacing, scale) -> np.ndarray:
    dcrf = pytest.importorskip("pydensecrf.densecrf")
    norm = {"after": dcrf.NORMALIZE_AFTER, "symmetric": dcrf.NORMALIZE_SYMMETRIC}
    n_lab = p.shape[0]
    crf = dcrf.DenseCRF(int(np.prod(p.shape[1:])), n_lab)
    unary = -np.log(np.maximum(p.reshape(n_lab, -1), 1e-8))
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseEnergy(
        reference_features(vol, spacing, params.theta_gamma, None, None),
        compat=params.w2,
        kernel=dcrf.DIAG_KERNEL,
        normalization=norm[params.normalization],
    )
    crf.addPairwiseEnergy(
        reference_features(vol, spacing, params.theta_alpha, params.theta_beta, scale),
        compat=params.w1,
        kernel=dcrf.DIAG_KERNEL,
        normalization=norm[params.normalization],
    )
    return np.array(crf.inference(params.iterations)).reshape(p.shape)


@pytest.mark.parametrize("normalization", ["after", "symmetric"])
@pytest.mark.parametrize(
    ("channels", "labels", "spacing", "scale"),
    [
        (1, 2, (1.0, 1.0, 1.0), (1.0,)),
        (2, 2, (2.5, 0.8, 0.8), (1.0, 1.0)),
        (2, 5, (3.0, 1.0, 0.7), (1.0, 0.25)),
    ],
)
def test_matches_pydensecrf_generic(normalization, channels, labels, spacing, scale) -> None:
    vol, p, _ = noisy_ball(channels=channels, labels=labels)
    params = PARAMS.replace(normalization=normalization)
    q = dense_crf_3d(vol, p, params, spacing=spacing, channel_scale=scale)
    q_ref = pydensecrf_reference(vol, p, params, spacing, scale)
    assert q.shape == p.shape and q.dtype == np.float32
    agreement = float((q.argmax(0) == q_ref.argmax(0)).mean())
    assert agreement >= 0.999, f"label agreement {agreement:.6f}"
    assert float(np.abs(q - q_ref).max()) <= 1e-3


def test_refines_a_noisy_segmentation() -> None:
    vol, p, truth = noisy_ball(channels=1)
    q = dense_crf_3d(vol, p, PARAMS.replace(iterations=10), spacing=(2.0, 1.0, 1.0))
    before = float((p.argmax(0) == truth).mean())
    after = float((q.argmax(0) == truth).mean())
    assert after > before + 0.02, (before, after)
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-5)


def test_spacing_is_in_physical_units() -> None:
    """Twice the voxel size and twice theta_alpha / theta_gamma: the same features."""
    vol, p, _ = noisy_ball(channels=1)
    q1 = dense_crf_3d(vol, p, PARAMS, spacing=(1.5, 1.0, 0.5))
    q2 = dense_crf_3d(
        vol,
        p,
        PARAMS.replace(theta_alpha=2 * PARAMS.theta_alpha, theta_gamma=2 * PARAMS.theta_gamma),
        spacing=(3.0, 2.0, 1.0),
    )
    np.testing.assert_allclose(q1, q2, atol=1e-5)
    # A different spacing is a different model.
    q3 = dense_crf_3d(vol, p, PARAMS, spacing=(6.0, 1.0, 0.5))
    assert float(np.abs(q3 - q1).max()) > 1e-3


def test_channel_scale_and_dtype() -> None:
    """theta_beta is in intensity units after the scaling; integer volumes are read as
    their values."""
    vol, p, _ = noisy_ball(channels=1)
    ints = np.round(vol).astype(np.int16)
    q1 = dense_crf_3d(ints, p, PARAMS, channel_scale=0.5)
    q2 = dense_crf_3d(ints.astype(np.float64), p, PARAMS.replace(theta_beta=40))
    np.testing.assert_allclose(q1, q2, atol=1e-5)
    q3 = dense_crf_3d(ints[..., 0], p, PARAMS.replace(theta_beta=40))  # (D, H, W)
    np.testing.assert_allclose(q3, q2, atol=1e-6)


def test_compat_matrix_and_callback() -> None:
    vol, p, _ = noisy_ball(labels=3)
    seen: list[tuple[int, tuple[int, ...]]] = []
    potts = dense_crf_3d(vol, p, PARAMS, compat=1.0 - np.eye(3, dtype=np.float32))
    q = dense_crf_3d(vol, p, PARAMS, callback=lambda it, qq: seen.append((it, qq.shape)))
    np.testing.assert_allclose(potts, q, atol=1e-5)
    assert seen == [(i, p.shape) for i in range(PARAMS.iterations)]


# -- bad input: clear errors, never a crash -----------------------------------------------------


def test_bad_volumes() -> None:
    vol, p, _ = noisy_ball(channels=1)
    with pytest.raises(ValueError, match=r"volume: expected a \(D, H, W\).*shape \(10, 14\)"):
        dense_crf_3d(vol[:, :, 0, 0], p)
    with pytest.raises(ValueError, match="volume: expected"):
        dense_crf_3d(vol[None, None], p)
    bad = vol.copy()
    bad[1, 2, 3, 0] = np.nan
    bad[2, 2, 3, 0] = np.inf
    with pytest.raises(ValueError, match="volume: contains 2 NaN or infinite intensities"):
        dense_crf_3d(bad, p)
    with pytest.raises(TypeError, match="volume: expected real intensities"):
        dense_crf_3d(vol.astype(np.complex64), p)
    with pytest.raises(ValueError, match="empty volume"):
        dense_crf_3d(np.zeros((0, 14, 12)), np.zeros((2, 0, 14, 12), np.float32))


def test_bad_probs() -> None:
    vol, p, _ = noisy_ball(channels=1)
    with pytest.raises(ValueError, match=r"probs: shape \(2, 10, 14, 11\) does not match"):
        dense_crf_3d(vol, p[..., :11])
    with pytest.raises(ValueError, match=r"probs: expected \(L, D, H, W\)"):
        dense_crf_3d(vol, p[0])
    with pytest.raises(ValueError, match="at least 2 labels"):
        dense_crf_3d(vol, p[:1])
    with pytest.raises(ValueError, match="probs: contains 1 negative"):
        neg = p.copy()
        neg[0, 0, 0, 0] = -0.5
        dense_crf_3d(vol, neg)
    with pytest.raises(ValueError, match="probs: contains 1 NaN"):
        nan = p.copy()
        nan[1, 0, 0, 0] = np.nan
        dense_crf_3d(vol, nan)


@pytest.mark.parametrize(
    ("spacing", "message"),
    [
        ((1.0, 0.0, 1.0), r"spacing\[1\] must be a finite number > 0"),
        ((1.0, 1.0, -2.0), r"spacing\[2\] must be a finite number > 0"),
        ((1.0, float("nan"), 1.0), r"spacing\[1\]"),
        ((1.0, 1.0), "expected three voxel sizes"),
        ("1,1,1", "expected three voxel sizes"),
    ],
)
def test_bad_spacing(spacing, message) -> None:
    vol, p, _ = noisy_ball(channels=1)
    with pytest.raises(ValueError, match=message):
        dense_crf_3d(vol, p, spacing=spacing)


def test_bad_channel_scale() -> None:
    vol, p, _ = noisy_ball(channels=2)
    with pytest.raises(ValueError, match=r"one factor per intensity channel \(2\), got 3"):
        dense_crf_3d(vol, p, channel_scale=[1, 2, 3])
    with pytest.raises(ValueError, match=r"channel_scale\[1\] must be a finite number > 0"):
        dense_crf_3d(vol, p, channel_scale=[1, 0])


def test_oversized_volume_is_refused_before_allocating(monkeypatch) -> None:
    # Broadcast views take no memory: any copy of them would need 32 GB.
    vol = np.broadcast_to(np.float32(0), (2000, 2000, 2000))
    p = np.broadcast_to(np.float32(0.5), (2, 2000, 2000, 2000))
    with pytest.raises(ValueError, match="more than the lattice can index"):
        dense_crf_3d(vol, p)
    monkeypatch.setattr(volume_mod, "available_memory", lambda: 2**30)
    vol = np.broadcast_to(np.float32(0), (256, 256, 256))
    p = np.broadcast_to(np.float32(0.5), (5, 256, 256, 256))
    with pytest.raises(MemoryError, match=r"256x256x256 volume with 5 labels.*needs about"):
        dense_crf_3d(vol, p)


def test_memory_estimate_grows_with_size() -> None:
    small = estimate_volume_memory((64, 64, 64), 2, 1)
    assert estimate_volume_memory((128, 64, 64), 2, 1) == pytest.approx(2 * small, rel=1e-6)
    assert estimate_volume_memory((64, 64, 64), 5, 2) > small
