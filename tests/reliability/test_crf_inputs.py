"""The CRF API at its edges: sigmas from 1e-6 to 1e6, weights up to 1e6, 1 x 1 images,
one label, NaN and infinities, odd dtypes. Each call ends in a clear error or in valid
marginals (finite, in [0, 1], summing to 1 at every pixel)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import deeplab.crf.pydensecrf as dcrf
from deeplab.crf import (
    CRFParams,
    DenseCRF,
    PermutohedralLattice,
    dense_crf,
    dense_crf_from_labels,
    dense_crf_from_logits,
    dense_crf_from_unary,
)

SIGMAS = (1e-6, 1e-3, 1.0, 1e3, 1e6)
WEIGHTS = (0.0, 1.0, 1e3, 1e6)


def _valid(q: np.ndarray, labels: int, pixels: int) -> None:
    assert q.dtype == np.float32 and q.shape[0] == labels and q.size == labels * pixels
    assert np.isfinite(q).all() and q.min() >= 0 and q.max() <= 1 + 1e-5
    np.testing.assert_allclose(q.reshape(labels, -1).sum(0), 1, atol=1e-3)


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    probs = rng.dirichlet(np.ones(3), size=(6, 7)).transpose(2, 0, 1).astype(np.float32)
    return image, probs


@pytest.mark.parametrize("normalization", ["after", "symmetric", "none"])
def test_extreme_sigmas_and_weights(scene, normalization: str) -> None:
    image, probs = scene
    outcomes = {"valid": 0, "refused": 0}
    for sigma, spatial, weight in itertools.product(SIGMAS, SIGMAS, WEIGHTS):
        params = CRFParams(
            w1=weight,
            theta_alpha=spatial,
            theta_beta=sigma,
            w2=weight,
            theta_gamma=spatial,
            iterations=3,
            normalization=normalization,
        )
        try:
            q = dense_crf(image, probs, params)
        except ValueError as exc:
            # Only features too fine for float32 lattice keys may be refused.
            assert "standard deviation is too small" in str(exc), exc
            assert min(sigma, spatial) <= 1e-3
            outcomes["refused"] += 1
            continue
        _valid(q, 3, 42)
        outcomes["valid"] += 1
    assert outcomes["valid"] > outcomes["refused"] > 0


def test_weights_past_the_supported_range_are_refused(scene) -> None:
    image, probs = scene
    with pytest.raises(ValueError, match="within"):
        dense_crf(image, probs, CRFParams(w1=1e7))
    with pytest.raises(ValueError, match="w1 must be a finite number >= 0"):
        CRFParams(w1=-1)
    with pytest.raises(ValueError, match="theta_beta must be a finite number > 0"):
        CRFParams(theta_beta=float("nan"))


@pytest.mark.parametrize(
    "entry", [dense_crf, dense_crf_from_logits, dense_crf_from_unary], ids=lambda f: f.__name__
)
def test_one_by_one_images(entry) -> None:
    image = np.array([[[10, 200, 30]]], np.uint8)
    q = entry(image, np.array([[[0.2]], [[0.8]]], np.float32), CRFParams(iterations=5))
    _valid(q, 2, 1)
    q, labels = dense_crf_from_labels(image, np.array([[1]]), num_labels=2)
    _valid(q, 2, 1)
    assert labels.tolist() == [[1]]


def test_one_label() -> None:
    image = np.zeros((3, 3, 3), np.uint8)
    with pytest.raises(ValueError, match="at least 2 labels"):
        dense_crf(image, np.ones((1, 3, 3), np.float32))
    # The general CRF and the pydensecrf drop-in take one label: certainty everywhere.
    crf = DenseCRF(np.zeros((1, 9), np.float32))
    crf.add_kernel(np.arange(9, dtype=np.float32)[:, None], 3.0)
    np.testing.assert_array_equal(crf.inference(4), np.ones((1, 9), np.float32))
    d = dcrf.DenseCRF2D(3, 3, 1)
    d.setUnaryEnergy(np.zeros((1, 9), np.float32))
    d.addPairwiseBilateral(sxy=5, srgb=10, rgbim=image, compat=4)
    np.testing.assert_array_equal(np.asarray(d.inference(3)), np.ones((1, 9), np.float32))


@pytest.mark.parametrize(
    ("entry", "bad", "message"),
    [
        (dense_crf, np.nan, "NaN"),
        (dense_crf, np.inf, "NaN or infinite"),
        (dense_crf, -0.5, "negative"),
        (dense_crf_from_logits, np.nan, "NaN"),
        (dense_crf_from_logits, -np.inf, "NaN or infinite"),
        (dense_crf_from_unary, np.nan, "NaN"),
        (dense_crf_from_unary, np.inf, "NaN or infinite"),
    ],
)
def test_nan_and_infinities_in_the_maps(scene, entry, bad: float, message: str) -> None:
    image, probs = scene
    maps = probs.copy()
    maps[1, 2, 3] = bad
    with pytest.raises(ValueError, match=message):
        entry(image, maps)


def test_nan_in_features_and_unaries_of_the_general_api() -> None:
    feats = np.zeros((4, 2), np.float32)
    feats[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"features.*NaN"):
        PermutohedralLattice(feats)
    with pytest.raises(ValueError, match=r"unary.*NaN"):
        DenseCRF(np.array([[0.0, np.nan], [1.0, 1.0]]))
    d = dcrf.DenseCRF(2, 2)
    with pytest.raises(ValueError, match="NaN"):
        d.setUnaryEnergy(np.array([[0.0, np.nan], [1.0, 1.0]], np.float32))
    # +inf energy is probability 0, as in pydensecrf: valid marginals.
    d.setUnaryEnergy(np.array([[0.0, np.inf], [1.0, 1.0]], np.float32))
    d.addPairwiseEnergy(np.zeros((1, 2), np.float32), compat=1.0)
    _valid(np.asarray(d.inference(2)), 2, 2)


@pytest.mark.parametrize(
    ("image", "error", "message"),
    [
        (np.zeros((4, 4, 3), np.float32), TypeError, "expected dtype uint8"),
        (np.zeros((4, 4, 3), np.int16), TypeError, "expected dtype uint8"),
        (np.zeros((4, 4, 3), bool), TypeError, "expected dtype uint8"),
        (np.zeros((4, 4, 4), np.uint8), ValueError, "RGBA"),
        (np.zeros((4, 4, 2), np.uint8), ValueError, r"expected shape \(H, W, 3\)"),
        (np.zeros((0, 4, 3), np.uint8), ValueError, "does not match|empty"),
        (np.zeros((4, 5, 3), np.uint8), ValueError, "does not match the image"),
    ],
)
def test_image_dtypes_and_shapes(image: np.ndarray, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        dense_crf(image, np.full((2, 4, 4), 0.5, np.float32))


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32, np.uint8])
def test_any_real_map_dtype_is_read_as_float32(scene, dtype) -> None:
    image, probs = scene
    maps = (probs * 100).astype(dtype) if np.dtype(dtype).kind in "iu" else probs.astype(dtype)
    _valid(dense_crf(image, maps, CRFParams(iterations=2)), 3, 42)


@pytest.mark.parametrize(
    ("maps", "error"),
    [
        (np.zeros((2, 6, 7), complex), TypeError),
        (np.zeros((2, 6, 7), object), TypeError),
        (np.zeros((6, 7), np.float32), ValueError),
        ("probabilities", TypeError),
    ],
)
def test_maps_that_are_not_real_arrays(scene, maps: object, error: type) -> None:
    image, _ = scene
    with pytest.raises(error):
        dense_crf(image, maps)
