"""pydensecrf's classic example, run unchanged through both modules on the shared photos."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

import deeplab.crf.pydensecrf as ours
import deeplab.crf.pydensecrf.utils as our_utils

from ..helpers import load_rgb
from .common import assert_agree

ref = pytest.importorskip("pydensecrf.densecrf")
ref_utils = pytest.importorskip("pydensecrf.utils")


def classic_demo(
    dcrf: ModuleType, utils: ModuleType, img: np.ndarray, anno_rgb: np.ndarray, use_2d: bool
) -> dict[str, object]:
    """pydensecrf's examples/inference.py: the coarse annotation's colours are the labels,
    black means unknown; 5 mean-field iterations, then the same by hand with the KL."""
    anno_rgb = anno_rgb.astype(np.uint32)
    anno_lbl = anno_rgb[:, :, 0] + (anno_rgb[:, :, 1] << 8) + (anno_rgb[:, :, 2] << 16)
    colors, labels = np.unique(anno_lbl, return_inverse=True)
    HAS_UNK = 0 in colors
    n_labels = len(set(labels.flat)) - int(HAS_UNK)

    if use_2d:
        d = dcrf.DenseCRF2D(img.shape[1], img.shape[0], n_labels)
        U = utils.unary_from_labels(labels, n_labels, gt_prob=0.7, zero_unsure=HAS_UNK)
        d.setUnaryEnergy(U)
        d.addPairwiseGaussian(sxy=3, compat=3)
        d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=img, compat=10)
    else:
        d = dcrf.DenseCRF(img.shape[1] * img.shape[0], n_labels)
        U = utils.unary_from_labels(labels, n_labels, gt_prob=0.7, zero_unsure=HAS_UNK)
        d.setUnaryEnergy(U)
        feats = utils.create_pairwise_gaussian(sdims=(3, 3), shape=img.shape[:2])
        d.addPairwiseEnergy(
            feats, compat=3, kernel=dcrf.DIAG_KERNEL, normalization=dcrf.NORMALIZE_SYMMETRIC
        )
        feats = utils.create_pairwise_bilateral(
            sdims=(80, 80), schan=(13, 13, 13), img=img, chdim=2
        )
        d.addPairwiseEnergy(
            feats, compat=10, kernel=dcrf.DIAG_KERNEL, normalization=dcrf.NORMALIZE_SYMMETRIC
        )

    Q = d.inference(5)
    MAP = np.argmax(Q, axis=0)

    kls = []
    Q2, tmp1, tmp2 = d.startInference()
    for _ in range(5):
        kls.append(d.klDivergence(Q2))
        d.stepInference(Q2, tmp1, tmp2)
    return {
        "n_labels": n_labels,
        "unknown": HAS_UNK,
        "Q": np.array(Q),
        "MAP": MAP.reshape(img.shape[:2]),
        "Q_steps": np.array(Q2),
        "kl": kls,
    }


# The DenseCRF2D flow on every photo; the generic DenseCRF + utils flow on one by default.
DEMO_CASES = [
    pytest.param(
        photo,
        use_2d,
        id=f"im{photo}-{'DenseCRF2D' if use_2d else 'DenseCRF+utils'}",
        marks=[] if use_2d or photo == 1 else [pytest.mark.slow],
    )
    for photo in (1, 2, 3)
    for use_2d in (True, False)
]


@pytest.mark.parametrize(("photo", "use_2d"), DEMO_CASES)
def test_classic_demo_matches_pydensecrf(shared_data, photo: int, use_2d: bool) -> None:
    folder = shared_data / "crf_examples"
    img = load_rgb(folder / f"im{photo}.png")
    anno = load_rgb(folder / f"anno{photo}.png")
    got = classic_demo(ours, our_utils, img, anno, use_2d)
    want = classic_demo(ref, ref_utils, img, anno, use_2d)
    assert got["unknown"] and got["n_labels"] == want["n_labels"] >= 2
    assert_agree(got["Q"], want["Q"])
    assert_agree(got["Q_steps"], want["Q_steps"])
    assert float((got["MAP"] == want["MAP"]).mean()) >= 0.999
    np.testing.assert_allclose(got["Q_steps"], got["Q"], atol=1e-6)
    np.testing.assert_allclose(got["kl"], want["kl"], rtol=1e-4)
    # The CRF did real work: it labelled the unknown pixels and moved away from the unary.
    assert len(np.unique(got["MAP"])) == got["n_labels"]
    assert got["kl"][-1] < got["kl"][0]
