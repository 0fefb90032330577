"""Agreement with the reference implementation, pydensecrf2 (Chen et al. 2015, section 4).

Requirement: label agreement >= 99.9% and max |Q - Q_ref| <= 1e-3 for normalisation
"after" and "symmetric" and every preset, on the real photos and on VOC-sized inputs.
"""

from __future__ import annotations

import numpy as np
import pytest

from deeplab.crf import CRFParams, dense_crf_from_unary, unary_from_labels

from .helpers import black_index, load_labels, load_rgb, smooth_logits

dcrf = pytest.importorskip("pydensecrf.densecrf")

NORM = {
    "after": dcrf.NORMALIZE_AFTER,
    "symmetric": dcrf.NORMALIZE_SYMMETRIC,
    "before": dcrf.NORMALIZE_BEFORE,
    "none": dcrf.NO_NORMALIZATION,
}


def reference(image: np.ndarray, unary: np.ndarray, p: CRFParams) -> np.ndarray:
    num_labels, h, w = unary.shape
    d = dcrf.DenseCRF2D(w, h, num_labels)
    d.setUnaryEnergy(np.ascontiguousarray(unary.reshape(num_labels, -1), dtype=np.float32))
    d.addPairwiseGaussian(sxy=p.theta_gamma, compat=p.w2, normalization=NORM[p.normalization])
    d.addPairwiseBilateral(
        sxy=p.theta_alpha,
        srgb=p.theta_beta,
        rgbim=np.ascontiguousarray(image),
        compat=p.w1,
        normalization=NORM[p.normalization],
    )
    return np.array(d.inference(p.iterations)).reshape(num_labels, h, w)


def assert_agree(q: np.ndarray, q_ref: np.ndarray) -> None:
    agreement = float((q.argmax(0) == q_ref.argmax(0)).mean())
    max_diff = float(np.abs(q - q_ref).max())
    assert agreement >= 0.999, f"label agreement {agreement:.6f}"
    assert max_diff <= 1e-3, f"max |Q - Q_ref| = {max_diff:.2e}"


PARAM_CASES = [
    pytest.param(CRFParams.preset(name).replace(normalization=norm), id=f"{name}-{norm}")
    for name in CRFParams.preset_names()
    for norm in ("after", "symmetric")
]


@pytest.mark.parametrize("params", PARAM_CASES)
@pytest.mark.parametrize("photo", [1, 2, 3])
def test_photos_with_coarse_labels(shared_data, photo: int, params: CRFParams) -> None:
    image = load_rgb(shared_data / "crf_examples" / f"im{photo}.png")
    anno = shared_data / "crf_examples" / f"anno{photo}.png"
    labels = load_labels(anno)
    n = int(labels.max())  # every value but the black "unknown" one is a label
    unary = unary_from_labels(labels, n, confidence=0.7, unknown=black_index(anno))
    q = dense_crf_from_unary(image, unary, params)
    assert q.dtype == np.float32 and q.shape == unary.shape
    assert_agree(q, reference(image, unary, params))


@pytest.mark.parametrize("params", PARAM_CASES)
def test_voc_sized_21_labels(shared_data, params: CRFParams) -> None:
    image = load_rgb(shared_data / "voc_mini/VOC2012/JPEGImages/2007_000033.jpg")
    h, w = image.shape[:2]
    unary = -smooth_logits(21, h, w, seed=1)
    q = dense_crf_from_unary(image, unary, params)
    assert_agree(q, reference(image, unary, params))


@pytest.mark.parametrize("norm", ["before", "none"])
def test_other_normalisations(shared_data, norm: str) -> None:
    image = load_rgb(shared_data / "crf_examples" / "im2.png")
    h, w = image.shape[:2]
    unary = -smooth_logits(5, h, w, seed=2)
    # Unnormalised kernels sum to thousands of pixels: small weights keep Q well-conditioned.
    scale = 1e-3 if norm == "none" else 1.0
    params = CRFParams(w1=4 * scale, w2=3 * scale, normalization=norm)
    q = dense_crf_from_unary(image, unary, params)
    assert_agree(q, reference(image, unary, params))
