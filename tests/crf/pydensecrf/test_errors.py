"""Bad input: a clear ValueError/TypeError naming the problem, where pydensecrf would
crash, assert, or silently compute something else."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import deeplab.crf.pydensecrf as dcrf
from deeplab.crf.pydensecrf import utils

H, W, L = 6, 8, 3


def ready() -> dcrf.DenseCRF2D:
    d = dcrf.DenseCRF2D(W, H, L)
    d.setUnaryEnergy(np.zeros((L, H * W), np.float32))
    return d


def image() -> np.ndarray:
    return np.zeros((H, W, 3), np.uint8)


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        ((0, 3), ValueError, "nvar"),
        ((-5, 3), ValueError, "nvar"),
        ((10, 0), ValueError, "nlabels"),
        ((10.5, 3), TypeError, "nvar"),
        (("10", 3), TypeError, "nvar"),
        ((True, 3), TypeError, "nvar"),
    ],
)
def test_bad_sizes(args, exc, match) -> None:
    with pytest.raises(exc, match=match):
        dcrf.DenseCRF(*args)


def test_bad_image_sizes() -> None:
    with pytest.raises(ValueError, match="width"):
        dcrf.DenseCRF2D(0, 5, 2)
    with pytest.raises(ValueError, match="height"):
        dcrf.DenseCRF2D(5, -1, 2)
    assert dcrf.DenseCRF2D(5.0, 4, 2)._nvar == 20  # integral floats, as pydensecrf's int cast


@pytest.mark.parametrize(
    ("unary", "exc", "match"),
    [
        (np.zeros((H * W, L), np.float32), ValueError, r"Bad shape for unary.*\(3, 48\)"),
        (np.zeros(L * H * W, np.float32), ValueError, "2-D"),
        (np.zeros((L, H, W), np.float32), ValueError, "2-D"),
        (np.full((L, H * W), np.nan, np.float32), ValueError, "NaN"),
        (np.full((L, H * W), -np.inf), ValueError, "-inf"),
        (np.full((L, H * W), np.inf), ValueError, "every label"),
        (np.full((L, H * W), "a"), TypeError, "numeric"),
        (np.zeros((L, H * W), complex), TypeError, "numeric"),
    ],
)
def test_bad_unary(unary, exc, match) -> None:
    d = dcrf.DenseCRF2D(W, H, L)
    with pytest.raises(exc, match=match):
        d.setUnaryEnergy(unary)


def test_bad_logistic_unary() -> None:
    d = dcrf.DenseCRF(10, 2)
    with pytest.raises(ValueError, match="cannot be multiplied"):
        d.setUnaryEnergy(np.zeros((2, 4)), np.zeros((5, 10)))
    with pytest.raises(ValueError, match="Bad shape for unary"):
        d.setUnaryEnergy(np.zeros((2, 4)), np.zeros((4, 9)))
    with pytest.raises(TypeError, match="ConstUnary"):
        d.setUnary(np.zeros((2, 10)))
    with pytest.raises(ValueError, match=r"Bad shape for ConstUnary energy.*\(2, 10\)"):
        d.setUnary(dcrf.ConstUnary(np.zeros((3, 10))))


@pytest.mark.parametrize("call", ["inference", "startInference", "stepInference", "klDivergence"])
def test_inference_before_set_unary(call: str) -> None:
    """pydensecrf silently runs with an all-zero unary instead."""
    d = dcrf.DenseCRF2D(W, H, L)
    d.addPairwiseGaussian(sxy=3, compat=3)
    args = {
        "inference": (5,),
        "startInference": (),
        "stepInference": (np.full((L, H * W), 1 / L, np.float32), None, None),
        "klDivergence": (np.full((L, H * W), 1 / L, np.float32),),
    }[call]
    with pytest.raises(ValueError, match=f"{call}: no unary energy set; call setUnaryEnergy"):
        getattr(d, call)(*args)


@pytest.mark.parametrize(
    ("n", "exc"), [(-1, ValueError), (2.5, TypeError), ("5", TypeError), (None, TypeError)]
)
def test_bad_iterations(n, exc) -> None:
    with pytest.raises(exc, match="niter"):
        ready().inference(n)


@pytest.mark.parametrize(
    ("features", "exc", "match"),
    [
        (np.zeros((2, H * W - 1), np.float32), ValueError, r"Bad shape for pairwise.*\(d, 48\)"),
        (np.zeros((H * W, 2), np.float32), ValueError, "Bad shape for pairwise"),
        (np.zeros(H * W, np.float32), ValueError, "Bad shape for pairwise"),
        (np.zeros((0, H * W), np.float32), ValueError, "d >= 1"),
        (np.full((2, H * W), np.nan), ValueError, "NaN"),
        (np.full((2, H * W), "x"), TypeError, "numeric"),
        # A standard deviation far too small for the features' range.
        (np.arange(2 * H * W).reshape(2, -1) * 1e9, ValueError, "standard deviation"),
    ],
)
def test_bad_features(features, exc, match) -> None:
    with pytest.raises(exc, match=match):
        ready().addPairwiseEnergy(features, compat=3)


@pytest.mark.parametrize(
    ("compat", "exc", "match"),
    [
        (np.ones(L + 1), ValueError, r"one weight per label.*\(3,\)"),
        (np.ones((L, L + 1)), ValueError, r"\(3, 3\)"),
        (np.ones((L, L, L)), ValueError, "vector or a matrix"),
        (float("nan"), ValueError, "NaN"),
        (np.array([1.0, np.inf, 1.0]), ValueError, "NaN or infinite"),
        ("potts", TypeError, "compat"),
        (None, TypeError, "compat"),
    ],
)
def test_bad_compat(compat, exc, match) -> None:
    with pytest.raises(exc, match=match):
        ready().addPairwiseGaussian(sxy=3, compat=compat)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"kernel": 7}, ValueError, "CONST_KERNEL, DIAG_KERNEL or FULL_KERNEL"),
        ({"kernel": -1}, ValueError, "CONST_KERNEL"),
        ({"kernel": "diag"}, TypeError, "kernel"),
        ({"normalization": 4}, ValueError, "NORMALIZE_SYMMETRIC"),
        ({"normalization": "symmetric"}, TypeError, "normalization"),
    ],
)
def test_bad_kernel_and_normalization(kwargs, exc, match) -> None:
    d = ready()
    with pytest.raises(exc, match=match):
        d.addPairwiseGaussian(sxy=3, compat=3, **kwargs)
    assert d._kernels == []  # nothing half-added


@pytest.mark.parametrize(
    ("sxy", "srgb", "match"),
    [
        (0, 13, "sxy.*> 0"),
        (-3, 13, "sxy.*> 0"),
        ((3, 0), 13, "sxy"),
        (float("nan"), 13, "sxy"),
        ((3, 3, 3), 13, "sxy: expected a number or 2 numbers"),
        (3, (13, 13), "srgb: expected a number or 3 numbers"),
        (3, 0.0, "srgb.*> 0"),
        (3, (13, -1, 13), "srgb"),
        (3, float("inf"), "srgb"),
    ],
)
def test_bad_sigmas(sxy, srgb, match) -> None:
    d = ready()
    with pytest.raises(ValueError, match=match):
        d.addPairwiseBilateral(sxy=sxy, srgb=srgb, rgbim=image(), compat=5)
    if "sxy" in match:
        with pytest.raises(ValueError, match=match):
            d.addPairwiseGaussian(sxy=sxy, compat=3)


@pytest.mark.parametrize(
    ("img", "exc", "match"),
    [
        (np.zeros((W, H, 3), np.uint8), ValueError, r"does not match.*\(6, 8, 3\)"),
        (np.zeros((H + 1, W, 3), np.uint8), ValueError, "does not match"),
        (np.zeros((H, W), np.uint8), ValueError, r"\(height, width, 3\)"),
        (np.zeros((H, W, 4), np.uint8), ValueError, "RGB"),
        (np.zeros((H, W, 3), np.float32), TypeError, "uint8"),
        (np.zeros((H, W, 3), np.int64), TypeError, "uint8"),
        (np.zeros((H, W, 3), bool), TypeError, "uint8"),
    ],
)
def test_bad_image(img, exc, match) -> None:
    with pytest.raises(exc, match=match):
        ready().addPairwiseBilateral(sxy=80, srgb=13, rgbim=img, compat=10)


def test_bad_step_inference_q() -> None:
    d = ready()
    q, tmp1, tmp2 = d.startInference()
    with pytest.raises(ValueError, match=r"Q: expected shape \(3, 48\)"):
        d.stepInference(q.T, tmp1, tmp2)
    with pytest.raises(TypeError, match="updated in place"):
        d.stepInference(q.tolist(), tmp1, tmp2)
    with pytest.raises(TypeError, match="float"):
        d.stepInference(np.zeros((L, H * W), np.int32), tmp1, tmp2)
    ro = q.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        d.stepInference(ro, tmp1, tmp2)
    bad = q.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        d.stepInference(bad, tmp1, tmp2)


def test_bad_kl_divergence_q() -> None:
    d = ready()
    with pytest.raises(ValueError, match=r"klDivergence: Q: expected shape \(3, 48\)"):
        d.klDivergence(np.zeros((H * W, L)))
    with pytest.raises(ValueError, match="NaN"):
        d.klDivergence(np.full((L, H * W), np.nan))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"labels": np.array([0, 1, 4]), "n_labels": 3}, ValueError, r"values \[4\]"),
        (
            {"labels": np.array([0, 1, 3]), "n_labels": 3, "zero_unsure": False},
            ValueError,
            r"values \[3\].*0\.\.2",
        ),
        ({"labels": np.array([-1, 1, 2]), "n_labels": 3}, ValueError, r"values \[-1\]"),
        ({"labels": np.array([0.0, 1.0]), "n_labels": 3}, TypeError, "integer label map"),
        ({"labels": np.array([0, 1]), "n_labels": 1}, ValueError, "at least 2"),
        ({"labels": np.array([0, 1]), "n_labels": 2.0}, TypeError, "n_labels"),
        ({"labels": np.array([0, 1]), "n_labels": 2, "gt_prob": 1.0}, ValueError, "gt_prob"),
        ({"labels": np.array([0, 1]), "n_labels": 2, "gt_prob": 0}, ValueError, "gt_prob"),
        ({"labels": np.array([0, 1]), "n_labels": 2, "gt_prob": "0.7"}, ValueError, "gt_prob"),
    ],
)
def test_bad_unary_from_labels(kwargs, exc, match) -> None:
    kwargs = {"gt_prob": 0.7, **kwargs}
    with pytest.raises(exc, match=match):
        utils.unary_from_labels(**kwargs)


def test_bad_unary_from_softmax() -> None:
    sm = np.full((3, 4, 4), 1 / 3)
    with pytest.raises(ValueError, match="scale"):
        utils.unary_from_softmax(sm, scale=0)
    with pytest.raises(ValueError, match="scale"):
        utils.unary_from_softmax(sm, scale=1.5)
    with pytest.raises(ValueError, match="clip"):
        utils.unary_from_softmax(sm, clip=2.0)
    with pytest.raises(ValueError, match="NaN"):
        utils.unary_from_softmax(np.full((3, 2), np.nan))
    neg = sm.copy()
    neg[0, 0, 0] = -0.1
    with pytest.raises(ValueError, match="negative probabilities"):
        utils.unary_from_softmax(neg, clip=None)
    assert np.isfinite(utils.unary_from_softmax(neg)).all()  # clipping takes care of it
    with pytest.raises(ValueError, match="shape"):
        utils.unary_from_softmax(np.float32(0.5))


def test_bad_pairwise_feature_utils() -> None:
    with pytest.raises(ValueError, match="sdims: expected 2 values"):
        utils.create_pairwise_gaussian(sdims=(3,), shape=(4, 5))
    with pytest.raises(ValueError, match="> 0"):
        utils.create_pairwise_gaussian(sdims=(3, 0), shape=(4, 5))
    with pytest.raises(ValueError, match="positive sizes"):
        utils.create_pairwise_gaussian(sdims=(3, 3), shape=(4, 0))
    rgb = np.zeros((4, 5, 3), np.uint8)
    # pydensecrf's chdim=-1 means "no channel axis": it silently returns (4, 60) features.
    with pytest.raises(ValueError, match="chdim=-1 means the image has no channel axis"):
        utils.create_pairwise_bilateral(sdims=(3, 3), schan=13, img=rgb)
    with pytest.raises(ValueError, match="schan: expected 3 values"):
        utils.create_pairwise_bilateral(sdims=(3, 3), schan=(13, 13), img=rgb, chdim=2)
    with pytest.raises(ValueError, match="chdim: axis 3 is out of range"):
        utils.create_pairwise_bilateral(sdims=(3, 3), schan=13, img=rgb, chdim=3)
    with pytest.raises(ValueError, match="NaN"):
        utils.create_pairwise_bilateral(sdims=(3, 3), schan=1, img=np.full((4, 5), np.nan))
    with pytest.raises(TypeError, match="numeric"):
        utils.create_pairwise_bilateral(sdims=(3, 3), schan=1, img=np.full((4, 5), "a"))


def test_imports_neither_torch_nor_the_networks() -> None:
    code = (
        "import sys, deeplab.crf.pydensecrf, deeplab.crf.pydensecrf.densecrf, "
        "deeplab.crf.pydensecrf.utils; "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('torch.', "
        "'deeplab.models'))]; print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_sizes_beyond_memory_are_refused_before_anything_is_allocated() -> None:
    with pytest.raises(MemoryError, match="GiB"):
        dcrf.DenseCRF2D(200_000, 100_000, 21)
    with pytest.raises(MemoryError, match="GiB"):
        dcrf.DenseCRF(10**10, 2)
    dcrf.DenseCRF2D(640, 480, 21)  # an ordinary size is fine
