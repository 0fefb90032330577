"""deeplab.crf.pydensecrf.densecrf against pydensecrf2 on the same inputs."""

from __future__ import annotations

import numpy as np
import pytest

import deeplab.crf.pydensecrf as dcrf
import deeplab.crf.pydensecrf.densecrf as dcrf_module
from deeplab.crf.lattice import PermutohedralLattice

from ..helpers import load_rgb, smooth_logits
from .common import assert_agree, compat_pair, random_unary, scene

ref = pytest.importorskip("pydensecrf.densecrf")

H, W, L = 36, 48, 4
KERNELS = ["CONST_KERNEL", "DIAG_KERNEL", "FULL_KERNEL"]
NORMS = ["NO_NORMALIZATION", "NORMALIZE_BEFORE", "NORMALIZE_AFTER", "NORMALIZE_SYMMETRIC"]


def test_constants_match_pydensecrf() -> None:
    for name in [*KERNELS, *NORMS]:
        ours, theirs = getattr(dcrf, name), getattr(ref, name)
        assert int(ours) == int(theirs), name
        assert ours == theirs and type(ours).__name__ == type(theirs).__name__
        assert getattr(dcrf_module, name) is ours
    assert dcrf.DenseCRF2D is dcrf_module.DenseCRF2D


def build_2d(mod, image, unary, kernels, norm, compats):
    """A DenseCRF2D with a Gaussian and a bilateral kernel; kernels and compats are
    (gaussian, bilateral) pairs."""
    h, w = image.shape[:2]
    d = mod.DenseCRF2D(w, h, unary.shape[0])
    d.setUnaryEnergy(unary if mod is dcrf else np.ascontiguousarray(unary, np.float32))
    n = getattr(mod, norm)
    d.addPairwiseGaussian(
        sxy=(3, 2.5), compat=compats[0], kernel=getattr(mod, kernels[0]), normalization=n
    )
    d.addPairwiseBilateral(
        sxy=(12, 9),
        srgb=(13, 11, 9),
        rgbim=image,
        compat=compats[1],
        kernel=getattr(mod, kernels[1]),
        normalization=n,
    )
    return d


DIAG2 = ("DIAG_KERNEL", "DIAG_KERNEL")
FORMS = ["scalar", "vector", "matrix"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("norm", NORMS)
def test_random_inputs_every_kernel_normalisation_and_compat(norm, form) -> None:
    image = scene(H, W, seed=1)
    unary = random_unary(L, H, W, seed=2)
    # Unnormalised kernels sum to hundreds of pixels: small weights keep Q well-conditioned.
    scale = 2e-3 if norm == "NO_NORMALIZATION" else 1.0
    g_ours, g_ref = compat_pair(form, L, 3 * scale, seed=3)
    b_ours, b_ref = compat_pair(form, L, 5 * scale, seed=4)
    # Rotate the kernel types so that every type meets every compatibility form.
    i = FORMS.index(form)
    kernels = (KERNELS[i], KERNELS[(i + 1) % 3])
    q = build_2d(dcrf, image, unary, kernels, norm, (g_ours, b_ours)).inference(5)
    q_ref = build_2d(ref, image, unary, kernels, norm, (g_ref, b_ref)).inference(5)
    assert isinstance(q, np.ndarray) and q.shape == (L, H * W)
    assert_agree(q, q_ref)


def test_kernel_type_does_not_change_inference() -> None:
    """As in pydensecrf, the kernel type only says which parameters learning may change."""
    image = scene(H, W, seed=1)
    unary = random_unary(L, H, W, seed=2)
    runs = [
        build_2d(dcrf, image, unary, (k, k), "NORMALIZE_SYMMETRIC", (3, 5)).inference(3)
        for k in KERNELS
    ]
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])


# On a photo: one compatibility form per normalisation by default, all with -m slow.
PHOTO_CASES = [
    pytest.param(norm, form, marks=[] if (NORMS.index(norm) % 3) == i else [pytest.mark.slow])
    for norm in NORMS
    for i, form in enumerate(FORMS)
]


@pytest.mark.parametrize(("norm", "form"), PHOTO_CASES)
def test_photo_every_normalisation_and_compat(shared_data, norm, form) -> None:
    image = load_rgb(shared_data / "crf_examples" / "im2.png")
    h, w = image.shape[:2]
    unary = -smooth_logits(5, h, w, seed=5).reshape(5, -1)
    scale = 1e-3 if norm == "NO_NORMALIZATION" else 1.0
    g_ours, g_ref = compat_pair(form, 5, 3 * scale, seed=6)
    b_ours, b_ref = compat_pair(form, 5, 5 * scale, seed=7)
    q = build_2d(dcrf, image, unary, DIAG2, norm, (g_ours, b_ours)).inference(5)
    q_ref = build_2d(ref, image, unary, DIAG2, norm, (g_ref, b_ref)).inference(5)
    assert_agree(q, q_ref)


def test_generic_densecrf_with_own_features() -> None:
    """addPairwiseEnergy over 3-D features of scattered points, not an image."""
    rng = np.random.default_rng(8)
    n = 600
    pts = rng.uniform(0, 10, (3, n))
    feats = np.concatenate([pts, rng.uniform(0, 3, (1, n))])  # (d, N) float64
    unary = rng.normal(size=(3, n)) * 2
    runs = []
    for mod in (dcrf, ref):
        d = mod.DenseCRF(n, 3)
        d.setUnaryEnergy(unary if mod is dcrf else unary.astype(np.float32))
        f = feats if mod is dcrf else np.ascontiguousarray(feats, np.float32)
        d.addPairwiseEnergy(f, compat=2.0)
        d.addPairwiseEnergy(f[:3], compat=1.5, normalization=mod.NORMALIZE_AFTER)
        runs.append(d.inference(8))
    assert_agree(*runs)


def test_step_inference_updates_q_in_place_like_inference() -> None:
    image = scene(H, W, seed=9)
    unary = random_unary(L, H, W, seed=10)
    compats = ((3.0, 5.0), (3.0, 5.0))
    ours = build_2d(dcrf, image, unary, DIAG2, "NORMALIZE_SYMMETRIC", compats[0])
    theirs = build_2d(ref, image, unary, DIAG2, "NORMALIZE_SYMMETRIC", compats[1])
    q, tmp1, tmp2 = ours.startInference()
    q_ref, tmp1_ref, tmp2_ref = theirs.startInference()
    assert q.shape == np.array(q_ref).shape == (L, H * W)
    assert tmp1.shape == np.array(tmp1_ref).shape and tmp2.shape == np.array(tmp2_ref).shape
    assert_agree(q, q_ref, prob_tol=1e-6)
    same_object = q
    for it in range(6):
        kl, kl_ref = ours.klDivergence(q), theirs.klDivergence(q_ref)
        assert kl == pytest.approx(kl_ref, rel=1e-4), it
        assert ours.stepInference(q, tmp1, tmp2) is None
        theirs.stepInference(q_ref, tmp1_ref, tmp2_ref)
        assert_agree(q, q_ref)
    assert q is same_object
    np.testing.assert_allclose(q, ours.inference(6), rtol=0, atol=1e-6)
    # The marginals really moved: the loop did not leave Q at softmax(-U).
    assert np.abs(q - ours.startInference()[0]).max() > 0.05


def test_step_inference_into_float64_and_strided_q() -> None:
    image = scene(H, W, seed=11)
    unary = random_unary(L, H, W, seed=12)
    d = build_2d(dcrf, image, unary, DIAG2, "NORMALIZE_AFTER", (3.0, 4.0))
    q64 = np.array(d.startInference()[0], dtype=np.float64, order="C")
    big = np.zeros((2 * L, H * W), np.float32)
    strided = big[::2]
    strided[...] = d.startInference()[0]
    for _ in range(3):
        d.stepInference(q64, None, None)
        d.stepInference(strided, None, None)
    expected = d.inference(3)
    np.testing.assert_allclose(q64, expected, atol=1e-6)
    np.testing.assert_allclose(strided, expected, atol=1e-6)
    assert not big[1::2].any()


@pytest.mark.parametrize("form", ["scalar", "vector", "matrix"])
@pytest.mark.parametrize("norm", NORMS)
def test_kl_divergence_matches(norm, form) -> None:
    image = scene(H, W, seed=13)
    unary = random_unary(L, H, W, seed=14)
    scale = 2e-3 if norm == "NO_NORMALIZATION" else 1.0
    g_ours, g_ref = compat_pair(form, L, 3 * scale, seed=15)
    b_ours, b_ref = compat_pair(form, L, 5 * scale, seed=16)
    ours = build_2d(dcrf, image, unary, DIAG2, norm, (g_ours, b_ours))
    theirs = build_2d(ref, image, unary, DIAG2, norm, (g_ref, b_ref))
    q_ref, tmp1, tmp2 = theirs.startInference()
    for _ in range(3):
        theirs.stepInference(q_ref, tmp1, tmp2)
    # The same marginals for both: ours takes any (L, N) array, pydensecrf only its own.
    kl_ref = theirs.klDivergence(q_ref)
    assert ours.klDivergence(np.array(q_ref)) == pytest.approx(kl_ref, rel=1e-4)
    assert ours.klDivergence(np.array(q_ref, dtype=np.float64).tolist()) == pytest.approx(
        kl_ref, rel=1e-4
    )


def test_kl_divergence_has_no_half_factor() -> None:
    """The pairwise part of pydensecrf's KL is sum(Q * cost) over ordered pairs, no 1/2:
    for Potts weight w and symmetric normalisation, -w sum(Q * D^-1/2 K D^-1/2 Q)."""
    unary = random_unary(L, H, W, seed=17)
    q = np.asarray(dcrf_with_gaussian(unary, 2.0).inference(2))
    xy = np.stack(np.meshgrid(np.arange(W), np.arange(H)), -1).reshape(-1, 2)
    lat = PermutohedralLattice(xy.astype(np.float32) / np.float32(3))
    s = 1.0 / np.sqrt(lat.filter(np.ones(H * W, np.float32)).astype(np.float64))
    kq = s[:, None] * lat.filter((s[:, None] * q.T).astype(np.float32))
    pairwise = -float(np.sum(q.T * kq))
    kl0 = dcrf_with_gaussian(unary, 0.0).klDivergence(q)
    for w in (2.0, 4.0):
        assert dcrf_with_gaussian(unary, w).klDivergence(q) - kl0 == pytest.approx(
            w * pairwise, rel=1e-4
        )


def dcrf_with_gaussian(unary: np.ndarray, w: float) -> dcrf.DenseCRF2D:
    d = dcrf.DenseCRF2D(W, H, L)
    d.setUnaryEnergy(unary)
    d.addPairwiseGaussian(sxy=3, compat=w)
    return d


def test_kernels_added_before_the_unary_and_unary_replaced() -> None:
    image = scene(H, W, seed=19)
    u1, u2 = random_unary(L, H, W, seed=20), random_unary(L, H, W, seed=21)
    d = dcrf.DenseCRF2D(W, H, L)
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.setUnaryEnergy(u1)
    d.addPairwiseBilateral(sxy=10, srgb=10, rgbim=image, compat=5)
    q1 = d.inference(4)
    d.setUnaryEnergy(u2)
    q2 = d.inference(4)
    for u, q in ((u1, q1), (u2, q2)):
        r = ref.DenseCRF2D(W, H, L)
        r.addPairwiseGaussian(sxy=3, compat=3)
        r.setUnaryEnergy(u)
        r.addPairwiseBilateral(sxy=10, srgb=10, rgbim=image, compat=5)
        assert_agree(q, r.inference(4))


def test_flexible_inputs_give_the_same_result() -> None:
    """float64, float16, Fortran-order, strided and read-only inputs are converted."""
    image = scene(H, W, seed=22)
    unary = random_unary(L, H, W, seed=23)
    canonical = build_2d(dcrf, image, unary, DIAG2, "NORMALIZE_SYMMETRIC", (3, 5))
    expected = canonical.inference(5)

    u64 = np.asfortranarray(unary.astype(np.float64))
    u64.flags.writeable = False
    padded = np.zeros((H, W + 7, 3), np.uint8)
    padded[:, :W] = image
    strided_img = padded[:, :W]
    strided_img.flags.writeable = False
    d = dcrf.DenseCRF2D(np.int64(W), np.int32(H), L)
    d.setUnaryEnergy(u64)
    d.addPairwiseGaussian(sxy=(np.float64(3), 2.5), compat=np.float32(3))
    d.addPairwiseBilateral(sxy=(12, 9), srgb=[13, 11, 9], rgbim=strided_img, compat=5)
    np.testing.assert_allclose(d.inference(5), expected, atol=1e-6)

    d16 = dcrf.DenseCRF2D(W, H, L)
    d16.setUnaryEnergy(unary.astype(np.float16))
    d16.addPairwiseGaussian(sxy=3, compat=3)
    r16 = ref.DenseCRF2D(W, H, L)
    r16.setUnaryEnergy(unary.astype(np.float16).astype(np.float32))
    r16.addPairwiseGaussian(sxy=3, compat=3)
    assert_agree(d16.inference(5), r16.inference(5))


def test_infinite_unary_means_probability_zero() -> None:
    """unary_from_softmax(..., clip=None) gives +inf for a zero probability; pydensecrf
    turns that into a marginal of exactly 0, and so do we (to float32 precision)."""
    image = scene(H, W, seed=24)
    unary = random_unary(L, H, W, seed=25)
    unary[1, ::3] = np.inf
    runs = []
    for mod in (dcrf, ref):
        d = mod.DenseCRF2D(W, H, L)
        d.setUnaryEnergy(unary)
        d.addPairwiseBilateral(sxy=10, srgb=10, rgbim=image, compat=5)
        runs.append(np.array(d.inference(5)))
    assert np.all(runs[0][1, ::3] < 1e-30)
    assert_agree(*runs)


def test_logistic_unary_forms() -> None:
    rng = np.random.default_rng(26)
    n = 40
    weights = rng.normal(size=(3, n)).astype(np.float32)
    feats = rng.uniform(0, 0.2, (n, n)).astype(np.float32)
    pos = np.ascontiguousarray(rng.uniform(0, 5, (2, n)), dtype=np.float32)
    runs = []
    for mod in (dcrf, ref):
        d = mod.DenseCRF(n, 3)
        d.setUnaryEnergy(weights, feats)
        d.addPairwiseEnergy(pos, compat=2.0)
        runs.append(np.array(d.inference(3)))
    assert_agree(*runs, prob_tol=1e-5)
    # setUnary with unary objects, including a logistic form with K != N features.
    w_small = rng.normal(size=(3, 5)).astype(np.float32)
    f_small = rng.normal(size=(5, n)).astype(np.float32)
    for ours, theirs in (
        (dcrf.ConstUnary(weights), ref.ConstUnary(weights)),
        (dcrf.LogisticUnary(w_small, f_small), ref.LogisticUnary(w_small, f_small)),
    ):
        runs = []
        for mod, u in ((dcrf, ours), (ref, theirs)):
            d = mod.DenseCRF(n, 3)
            d.setUnary(u)
            d.addPairwiseEnergy(pos, compat=2.0)
            runs.append(np.array(d.inference(3)))
        assert_agree(*runs, prob_tol=1e-5)
    # setUnaryEnergy(L, f) with K != N, which pydensecrf refuses: the same as L @ f.
    d = dcrf.DenseCRF(n, 3)
    d.setUnaryEnergy(w_small, f_small)
    r = ref.DenseCRF(n, 3)
    r.setUnaryEnergy(np.ascontiguousarray(w_small @ f_small))
    assert_agree(d.inference(0), r.inference(0), prob_tol=1e-5)


def test_zero_iterations_is_softmax_of_minus_unary() -> None:
    unary = random_unary(L, H, W, seed=27)
    d = dcrf.DenseCRF2D(W, H, L)
    d.setUnaryEnergy(unary)
    z = np.exp(-(unary - unary.min(0)))
    np.testing.assert_allclose(d.inference(0), z / z.sum(0), atol=1e-6)
