"""deeplab.crf.pydensecrf.utils against pydensecrf.utils on the same inputs."""

from __future__ import annotations

import numpy as np
import pytest

import deeplab.crf.pydensecrf.utils as ours

from ..helpers import load_labels, load_rgb, smooth_logits, softmax

ref = pytest.importorskip("pydensecrf.utils")


@pytest.mark.parametrize("zero_unsure", [True, False])
@pytest.mark.parametrize("gt_prob", [0.5, 0.7, 0.95])
def test_unary_from_labels(zero_unsure: bool, gt_prob: float) -> None:
    rng = np.random.default_rng(0)
    n_labels = 5
    top = n_labels if zero_unsure else n_labels - 1
    labels = rng.integers(0, top + 1, (17, 23))
    got = ours.unary_from_labels(labels, n_labels, gt_prob, zero_unsure)
    want = ref.unary_from_labels(labels, n_labels, gt_prob, zero_unsure)
    assert got.dtype == np.float32 and got.shape == (n_labels, 17 * 23)
    np.testing.assert_array_equal(got, want)


def test_unary_from_labels_on_a_photo_annotation(shared_data) -> None:
    labels = load_labels(shared_data / "crf_examples" / "anno3.png").astype(np.int64)
    n = int(labels.max())
    np.testing.assert_array_equal(
        ours.unary_from_labels(labels, n, gt_prob=0.7),
        ref.unary_from_labels(labels, n, gt_prob=0.7),
    )


def test_unary_from_labels_uint8_labels() -> None:
    """pydensecrf's ``labels - 1`` wraps uint8 zeros to 255 (IndexError); ours does not."""
    labels = np.array([[0, 1, 2], [3, 0, 1]], np.uint8)
    with pytest.raises(IndexError):
        ref.unary_from_labels(labels, 3, 0.7)
    np.testing.assert_array_equal(
        ours.unary_from_labels(labels, 3, 0.7),
        ref.unary_from_labels(labels.astype(np.int64), 3, 0.7),
    )


def test_compute_unary_is_deprecated_unary_from_labels() -> None:
    labels = np.array([0, 1, 2, 2, 1])
    with pytest.warns(DeprecationWarning, match="unary_from_labels"):
        got = ours.compute_unary(labels, 2)
    np.testing.assert_array_equal(got, ref.unary_from_labels(labels, 2, 0.5))


@pytest.mark.parametrize("clip", [1e-5, 0.01, None])
@pytest.mark.parametrize("scale", [None, 0.8, 1.0])
def test_unary_from_softmax(scale: float | None, clip: float | None) -> None:
    sm = softmax(smooth_logits(4, 16, 24, seed=1, scale=6.0))
    sm[0, :2, :3] = 0.0  # exact zeros: clipped, or +inf energies without clipping
    got = ours.unary_from_softmax(sm, scale=scale, clip=clip)
    with np.errstate(divide="ignore"):  # pydensecrf takes log(0) without a guard
        want = ref.unary_from_softmax(sm, scale=scale, clip=clip)
    assert got.dtype == np.float32 and got.shape == (4, 16 * 24)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert np.array_equal(np.isinf(got), np.isinf(want))


def test_unary_from_softmax_accepts_float16_and_float64() -> None:
    sm = softmax(smooth_logits(3, 8, 8, seed=2))
    want = ref.unary_from_softmax(sm.astype(np.float64))
    np.testing.assert_allclose(ours.unary_from_softmax(sm.astype(np.float64)), want, rtol=1e-6)
    # float16 is rounded once on input; pydensecrf would also compute the log in float16.
    np.testing.assert_allclose(
        ours.unary_from_softmax(sm.astype(np.float16)),
        ref.unary_from_softmax(sm.astype(np.float16).astype(np.float64)),
        rtol=1e-6,
    )


def test_softmax_to_unary_is_deprecated() -> None:
    sm = softmax(smooth_logits(3, 8, 8, seed=3))
    for gt in (1, 0.6):
        with pytest.warns(DeprecationWarning, match="unary_from_softmax"):
            got = ours.softmax_to_unary(sm, GT_PROB=gt)
        np.testing.assert_allclose(got, ref.softmax_to_unary(sm, GT_PROB=gt), rtol=1e-6)


@pytest.mark.parametrize(
    ("sdims", "shape"), [((3, 3), (20, 30)), ((2.5, 7), (11, 13)), ((1, 2, 3), (4, 5, 6))]
)
def test_create_pairwise_gaussian(sdims, shape) -> None:
    got = ours.create_pairwise_gaussian(sdims, shape)
    want = ref.create_pairwise_gaussian(sdims, shape)
    assert got.dtype == np.float32 and got.shape == want.shape == (len(shape), np.prod(shape))
    np.testing.assert_array_equal(got, want)


def test_create_pairwise_bilateral_rgb_photo(shared_data) -> None:
    img = load_rgb(shared_data / "crf_examples" / "im1.png")
    for schan in (13, (13, 11, 9), 4.5):
        got = ours.create_pairwise_bilateral(sdims=(80, 60), schan=schan, img=img, chdim=2)
        want = ref.create_pairwise_bilateral(sdims=(80, 60), schan=schan, img=img, chdim=2)
        assert got.dtype == np.float32 and got.shape == (5, img.shape[0] * img.shape[1])
        np.testing.assert_array_equal(got, want)


def test_create_pairwise_bilateral_other_layouts() -> None:
    rng = np.random.default_rng(4)
    gray = rng.integers(0, 256, (12, 9)).astype(np.uint8)
    np.testing.assert_array_equal(
        ours.create_pairwise_bilateral((3, 4), 10, gray, chdim=-1),
        ref.create_pairwise_bilateral((3, 4), 10, gray, chdim=-1),
    )
    channels_first = rng.uniform(0, 1, (4, 7, 6))  # float, channel axis 0, 4 channels
    for schan in (0.1, (0.1, 0.2, 0.3, 0.4)):
        np.testing.assert_array_equal(
            ours.create_pairwise_bilateral((2, 3), schan, channels_first, chdim=0),
            ref.create_pairwise_bilateral((2, 3), schan, channels_first, chdim=0),
        )
    volume = rng.integers(0, 256, (5, 6, 7, 2)).astype(np.uint8)
    np.testing.assert_array_equal(
        ours.create_pairwise_bilateral((1, 2, 3), (5, 6), volume, chdim=3),
        ref.create_pairwise_bilateral((1, 2, 3), (5, 6), volume, chdim=3),
    )
