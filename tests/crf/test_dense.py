"""The image API: entry points, input conversions and clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest

from deeplab.crf import (
    CRFParams,
    dense_crf,
    dense_crf_from_labels,
    dense_crf_from_logits,
    dense_crf_from_unary,
    unary_from_labels,
)

from .helpers import smooth_logits, softmax

H, W, L = 40, 50, 4
FAST = CRFParams(iterations=3)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.zeros((H, W, 3), np.uint8)
    img[:, : W // 2] = (200, 40, 40)
    img[:, W // 2 :] = (30, 30, 220)
    return np.clip(img + rng.integers(-10, 10, size=img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def probs() -> np.ndarray:
    return softmax(smooth_logits(L, H, W, seed=3))


def test_entry_points_agree(image: np.ndarray, probs: np.ndarray) -> None:
    q = dense_crf(image, probs, FAST)
    assert q.shape == (L, H, W) and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-5)
    np.testing.assert_allclose(dense_crf_from_unary(image, -np.log(probs), FAST), q, atol=1e-6)
    np.testing.assert_allclose(
        dense_crf_from_logits(image, np.log(probs) + 5.0, FAST), q, atol=1e-5
    )


def test_zero_pairwise_weights_give_exactly_the_input(image: np.ndarray, probs: np.ndarray) -> None:
    q = dense_crf(image, probs, CRFParams(w1=0, w2=0))
    np.testing.assert_allclose(q, probs, atol=1e-6)


def test_crf_snaps_labels_to_the_colour_edge(image: np.ndarray) -> None:
    # Coarse labels whose boundary is 6 px off the colour edge; the CRF moves it back.
    labels = np.zeros((H, W), np.int64)
    labels[:, W // 2 + 6 :] = 1
    unary = unary_from_labels(labels, 2, confidence=0.6)
    q = dense_crf_from_unary(image, unary, CRFParams.preset("deeplab"))
    truth = np.zeros((H, W), np.int64)
    truth[:, W // 2 :] = 1
    assert (q.argmax(0) == truth).mean() > (labels == truth).mean()


def test_refine_labels_with_unknown(image: np.ndarray) -> None:
    labels = np.zeros((H, W), np.uint8)  # 0 = unknown
    labels[5:35, 3:10] = 1
    labels[5:35, 40:47] = 2
    q, refined = dense_crf_from_labels(image, labels, params=FAST, unknown=0)
    assert q.shape == (2, H, W)
    assert set(np.unique(refined)) <= {1, 2}
    assert (refined[:, : W // 2 - 3] == 1).mean() > 0.9
    assert (refined[:, W // 2 + 3 :] == 2).mean() > 0.9


def test_callback_sees_every_iteration(image: np.ndarray, probs: np.ndarray) -> None:
    seen: list[np.ndarray] = []
    q = dense_crf(image, probs, FAST, callback=lambda it, qi: seen.append(qi))
    assert len(seen) == 3 and seen[-1].shape == (L, H, W)
    np.testing.assert_allclose(seen[-1], q, atol=1e-7)


def test_compat_matrix_potts_equals_default(image: np.ndarray, probs: np.ndarray) -> None:
    potts = 1.0 - np.eye(L, dtype=np.float32)
    np.testing.assert_allclose(
        dense_crf(image, probs, FAST, compat=potts), dense_crf(image, probs, FAST), atol=1e-5
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_other_float_types_give_the_float32_answer(image, probs, dtype) -> None:
    ref = dense_crf(image, probs.astype(dtype).astype(np.float32), FAST)
    np.testing.assert_allclose(dense_crf(image, probs.astype(dtype), FAST), ref, atol=1e-6)


def test_non_contiguous_inputs(image: np.ndarray, probs: np.ndarray) -> None:
    ref = dense_crf(image, probs, FAST)
    img_nc = np.asfortranarray(image)
    probs_nc = np.ascontiguousarray(np.swapaxes(probs, 1, 2)).swapaxes(1, 2)
    assert not probs_nc.flags.c_contiguous
    np.testing.assert_allclose(dense_crf(img_nc, probs_nc, FAST), ref, atol=1e-6)


def test_grayscale_image_is_replicated(image: np.ndarray, probs: np.ndarray) -> None:
    gray = image[..., 0]
    q = dense_crf(gray, probs, FAST)
    np.testing.assert_allclose(q, dense_crf(np.repeat(gray[..., None], 3, 2), probs, FAST))


BAD_INPUTS = [
    ("probs shape", lambda img, p: (img, p[:, :-1]), ValueError, "does not match the image"),
    ("nan", lambda img, p: (img, np.where(p > 0.5, np.nan, p)), ValueError, "NaN"),
    ("inf", lambda img, p: (img, np.where(p > 0.5, np.inf, p)), ValueError, "infinite"),
    ("negative", lambda img, p: (img, p - 0.5), ValueError, "negative"),
    ("one label", lambda img, p: (img, p[:1]), ValueError, "at least 2 labels"),
    ("float image", lambda img, p: (img.astype(np.float32), p), TypeError, "uint8"),
    ("rgba", lambda img, p: (np.dstack([img, img[..., :1]]), p), ValueError, "RGBA"),
    ("2 channels", lambda img, p: (img[..., :2], p), ValueError, r"\(H, W, 3\)"),
    ("empty", lambda img, p: (img[:0], p[:, :0]), ValueError, "empty"),
    ("probs 2-D", lambda img, p: (img, p[0]), ValueError, "expected"),
    ("strings", lambda img, p: (img, p.astype(str)), TypeError, "dtype"),
]


@pytest.mark.parametrize(
    ("name", "make", "exc", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_input_raises_clear_errors(image, probs, name, make, exc, message) -> None:
    img, p = make(image, probs)
    with pytest.raises(exc, match=message):
        dense_crf(img, p, FAST)


def test_tiny_sigmas_are_refused_not_overflowed(image: np.ndarray, probs: np.ndarray) -> None:
    # pydensecrf's int16 lattice keys wrap around here and it crashes.
    with pytest.raises(ValueError, match="too small"):
        dense_crf(image, probs, CRFParams(theta_alpha=1e-6))
    # Small but representable sigmas work and make the kernel (nearly) the identity.
    q = dense_crf(image, probs, CRFParams(theta_alpha=0.01, theta_gamma=0.01, iterations=2))
    assert np.isfinite(q).all()


def test_bad_label_maps(image: np.ndarray) -> None:
    with pytest.raises(TypeError, match="integer"):
        dense_crf_from_labels(image, np.zeros((H, W), np.float32))
    with pytest.raises(ValueError, match="every pixel is unknown"):
        dense_crf_from_labels(image, np.zeros((H, W), np.uint8), unknown=0)
    with pytest.raises(ValueError, match="outside"):
        dense_crf_from_labels(image, np.full((H, W), 7, np.uint8), num_labels=3)
    with pytest.raises(ValueError, match="confidence"):
        dense_crf_from_labels(image, np.ones((H, W), np.uint8), confidence=1.0)


def test_inputs_too_large_for_memory_are_refused(monkeypatch, image, probs) -> None:
    from deeplab.crf import dense

    monkeypatch.setattr(dense, "available_memory", lambda: 1000)
    with pytest.raises(MemoryError, match="GiB"):
        dense_crf(image, probs, FAST)


def test_memory_estimate_grows_linearly() -> None:
    from deeplab.crf import estimate_memory

    small, big = estimate_memory(100, 100, 21), estimate_memory(1000, 1000, 21)
    assert 90 * small < big < 110 * small
    assert estimate_memory(3000, 4000, 21) < 8 * 2**30


@pytest.mark.parametrize(("theta_alpha", "theta_beta"), [(121.0, 5.0), (3.3, 0.7), (80.0, 13.0)])
def test_image_features_are_numpys_float32_divisions(theta_alpha, theta_beta) -> None:
    """The lattice is built from these values: they must be exactly pydensecrf's
    (position or colour as float32, divided by the float32 theta)."""
    from deeplab.crf import bilateral_features, spatial_features

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    ys, xs = np.mgrid[0:37, 0:53]
    pos = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32) / np.float32(theta_alpha)
    col = image.reshape(-1, 3).astype(np.float32) / np.float32(theta_beta)
    np.testing.assert_array_equal(spatial_features(37, 53, theta_alpha), pos)
    np.testing.assert_array_equal(
        bilateral_features(image, theta_alpha, theta_beta), np.concatenate([pos, col], 1)
    )
    assert spatial_features(0, 5, 3.0).shape == (0, 2)
