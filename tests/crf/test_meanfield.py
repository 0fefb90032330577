"""The generic dense CRF over N points with any Gaussian kernels."""

from __future__ import annotations

import numpy as np
import pytest

from deeplab.crf import DenseCRF, PermutohedralLattice


def softmax_cols(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(0, keepdims=True))
    return e / e.sum(0, keepdims=True)


def test_no_kernels_gives_softmax_of_minus_unary() -> None:
    rng = np.random.default_rng(0)
    u = rng.normal(size=(4, 500)).astype(np.float32) * 3
    q = DenseCRF(u).inference(5)
    np.testing.assert_allclose(q, softmax_cols(-u.astype(np.float64)), atol=2e-7)


def test_zero_weights_give_softmax_of_minus_unary() -> None:
    rng = np.random.default_rng(1)
    u = rng.normal(size=(3, 400)).astype(np.float32)
    crf = DenseCRF(u)
    crf.add_kernel(rng.normal(size=(400, 2)), compat=0.0)
    crf.add_kernel(rng.normal(size=(400, 4)), compat=np.zeros((3, 3)))
    np.testing.assert_allclose(crf.inference(10), softmax_cols(-u.astype(np.float64)), atol=2e-7)


def test_potts_matrix_equals_potts_weight() -> None:
    # mu = w [l != l'] differs from the Potts message +w K Q by a per-point constant only.
    rng = np.random.default_rng(2)
    n, labels = 600, 4
    u = rng.normal(size=(labels, n)).astype(np.float32)
    feats = rng.uniform(0, 5, size=(n, 3))
    a = DenseCRF(u)
    a.add_kernel(feats, compat=2.5)
    b = DenseCRF(u)
    b.add_kernel(feats, compat=2.5 * (1 - np.eye(labels)))
    np.testing.assert_allclose(a.inference(5), b.inference(5), atol=1e-5)


def test_smoothing_pulls_neighbours_together() -> None:
    # A 1-D signal with noisy unaries: the CRF removes isolated flips.
    rng = np.random.default_rng(3)
    n = 300
    truth = (np.arange(n) >= n // 2).astype(int)
    p = np.where(rng.uniform(size=n) < 0.8, truth, 1 - truth)
    u = np.stack([np.where(p == 0, 0.5, 1.5), np.where(p == 1, 0.5, 1.5)]).astype(np.float32)
    crf = DenseCRF(u)
    crf.add_kernel(np.arange(n, dtype=np.float32)[:, None] / 5.0, compat=3.0)
    refined = crf.inference(10).argmax(0)
    assert (refined == truth).mean() > (p == truth).mean() + 0.1


def test_volumes_and_multispectral_features() -> None:
    # Any features work: a 3-D volume (z, y, x) with 4 spectral channels.
    rng = np.random.default_rng(4)
    z, y, x = np.mgrid[0:6, 0:8, 0:8]
    pos = np.stack([z, y, x], -1).reshape(-1, 3).astype(np.float32) / 2.0
    spectra = rng.uniform(0, 1, size=(pos.shape[0], 4)).astype(np.float32) / 0.3
    feats = np.concatenate([pos, spectra], 1)
    u = rng.normal(size=(3, pos.shape[0])).astype(np.float32)
    crf = DenseCRF(u)
    crf.add_kernel(feats, compat=2.0, normalization="symmetric")
    crf.add_kernel(PermutohedralLattice(pos), compat=1.0)
    q = crf.inference(5)
    assert q.shape == (3, 384)
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-5)


def test_step_and_callback_agree_with_inference() -> None:
    rng = np.random.default_rng(5)
    u = rng.normal(size=(3, 200)).astype(np.float32)
    crf = DenseCRF(u)
    crf.add_kernel(rng.normal(size=(200, 2)), compat=1.5)
    seen = []
    full = crf.inference(3, callback=lambda it, q: seen.append(q.copy()))
    q = crf.initial_marginals()
    for it in range(3):
        q = crf.step(q)
        np.testing.assert_allclose(q, seen[it].T, atol=1e-6)
    np.testing.assert_allclose(q.T, full, atol=1e-6)


def test_kl_divergence_decreases_over_iterations() -> None:
    rng = np.random.default_rng(6)
    u = rng.normal(size=(3, 400)).astype(np.float32)
    crf = DenseCRF(u)
    crf.add_kernel(rng.uniform(0, 3, size=(400, 2)), compat=1.0)
    q = crf.initial_marginals()
    kl0 = crf.kl_divergence(q)
    for _ in range(5):
        q = crf.step(q)
    assert crf.kl_divergence(q) < kl0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features": np.zeros((10, 2)), "compat": 1.0}, "expected 20 points"),
        ({"features": np.zeros((20, 2)), "compat": np.ones((3, 3))}, r"\(2, 2\) matrix"),
        ({"features": np.zeros((20, 2)), "compat": float("nan")}, "finite"),
        ({"features": np.zeros((20, 2)), "normalization": "sideways"}, "normalization"),
    ],
)
def test_bad_kernels(kwargs: dict, message: str) -> None:
    crf = DenseCRF(np.zeros((2, 20), np.float32))
    with pytest.raises(ValueError, match=message):
        crf.add_kernel(**kwargs)


def test_bad_unary() -> None:
    with pytest.raises(ValueError, match="NaN"):
        DenseCRF(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="2-D"):
        DenseCRF(np.zeros(5))
    with pytest.raises(TypeError, match="dtype"):
        DenseCRF(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="iterations"):
        DenseCRF(np.zeros((2, 3), np.float32)).inference(-1)


@pytest.mark.parametrize("weights", [(4.0, 3.0), (-2.0, 5.0), (50.0, 30.0)])
def test_softmax_shift_bound_gives_the_row_maximum_answer(monkeypatch, weights) -> None:
    """The updates subtract max(-U) + sum of positive weights instead of each row's
    maximum (normalise-after Potts terms); that must not change the marginals. The third
    case exceeds the slack limit and takes the maximum."""
    import deeplab.crf.meanfield as meanfield

    rng = np.random.default_rng(7)
    n, labels = 3000, 21
    u = (rng.normal(size=(labels, n)) * 4).astype(np.float32)
    feats = [rng.uniform(0, 6, size=(n, 5)), rng.uniform(0, 6, size=(n, 2))]

    def run() -> tuple[np.ndarray, np.ndarray]:
        crf = DenseCRF(u)
        for f, w in zip(feats, weights, strict=True):
            crf.add_kernel(f, compat=w, normalization="after")
        plan = crf._plan_or_build()
        return crf._softmax_shift(plan), crf.inference(10)

    shift, q = run()
    assert shift.size == (n if sum(max(w, 0) for w in weights) <= 60 else 0)
    if shift.size:
        neg_unary_max = (-u).max(0)
        np.testing.assert_allclose(shift, neg_unary_max + sum(max(w, 0) for w in weights))
    monkeypatch.setattr(meanfield, "MAX_SHIFT_SLACK", -1.0)
    no_shift, q_max = run()
    assert no_shift.size == 0
    np.testing.assert_allclose(q, q_max, rtol=0, atol=2e-6)
    assert np.array_equal(q.argmax(0), q_max.argmax(0))


def test_add_term_shares_a_kernel_with_the_same_result() -> None:
    # One lattice and normalisation serve many weights (deeplab tune-crf): the marginals are
    # exactly those of a CRF that built its own kernels.
    rng = np.random.default_rng(11)
    n, labels = 700, 5
    u = rng.normal(size=(labels, n)).astype(np.float32)
    spatial = rng.uniform(0, 6, size=(n, 2))
    colour = rng.uniform(0, 4, size=(n, 5))
    first = DenseCRF(u)
    t_spatial = first.add_kernel(spatial, compat=3.0, normalization="symmetric")
    t_colour = first.add_kernel(colour, compat=5.0, normalization="symmetric")
    first.inference(2)
    for w1, w2 in ((7.0, 3.0), (2.0, 0.5)):
        fresh = DenseCRF(u)
        fresh.add_kernel(spatial, compat=w2, normalization="symmetric")
        fresh.add_kernel(colour, compat=w1, normalization="symmetric")
        first.clear_kernels()
        assert first.terms == []
        first.add_term(t_spatial, w2)
        shared = first.add_term(t_colour, w1)
        assert shared.lattice is t_colour.lattice and shared.compat == w1
        np.testing.assert_array_equal(first.inference(4), fresh.inference(4))
    # None keeps the term's own weight; a matrix works as in add_kernel.
    first.clear_kernels()
    assert first.add_term(t_colour).compat == 5.0
    mu = 1.5 * (1 - np.eye(labels))
    assert np.array_equal(first.add_term(t_colour, mu).compat, mu.astype(np.float32))


def test_add_term_refuses_what_does_not_fit() -> None:
    rng = np.random.default_rng(12)
    crf = DenseCRF(rng.normal(size=(3, 50)).astype(np.float32))
    other = DenseCRF(rng.normal(size=(3, 60)).astype(np.float32))
    term = other.add_kernel(rng.normal(size=(60, 2)), compat=1.0)
    with pytest.raises(ValueError, match="60 points"):
        crf.add_term(term)
    with pytest.raises(TypeError, match="PairwiseTerm"):
        crf.add_term(PermutohedralLattice(rng.normal(size=(50, 2))))  # type: ignore[arg-type]
    mine = crf.add_kernel(rng.normal(size=(50, 2)), compat=1.0)
    with pytest.raises(ValueError, match="compat"):
        crf.add_term(mine, np.ones((4, 4)))
    with pytest.raises(ValueError, match="finite"):
        crf.add_term(mine, float("nan"))


def test_sets_over_the_same_lattices_share_the_first_splat(monkeypatch) -> None:
    # deeplab tune-crf runs many weights over one pair of lattices: the first update's splat
    # (softmax(-U), blurred) is computed once and reused, with exactly the marginals of a
    # CRF built for each set. "after" normalisation: its softmax shift depends on the weights.
    from deeplab.crf import kernels

    rng = np.random.default_rng(13)
    n, labels = 600, 4
    u = rng.normal(size=(labels, n)).astype(np.float32) * 2
    spatial = rng.uniform(0, 6, size=(n, 2))
    colours = [rng.uniform(0, 4, size=(n, 5)) for _ in range(2)]
    scratch = DenseCRF(u)
    t_spatial = scratch.add_kernel(spatial, compat=1.0)
    t_colour = [scratch.add_kernel(c, compat=1.0) for c in colours]
    passes = []
    real_pass = kernels.meanfield_pass
    monkeypatch.setattr(kernels, "meanfield_pass", lambda *a: passes.append(1) or real_pass(*a))
    crf = DenseCRF(u)
    # (bilateral, w1, w2, iterations, whether the first splat is reused)
    for which, w1, w2, iters, reused in (
        (0, 5.0, 3.0, 4, False),
        (0, 9.0, 1.0, 4, True),
        (0, 2.0, 3.0, 7, True),
        (1, 5.0, 3.0, 4, False),
        (0, 5.0, 3.0, 4, False),
        (0, 5.0, 3.0, 0, False),
    ):
        crf.clear_kernels()
        crf.add_term(t_spatial, w2)
        crf.add_term(t_colour[which], w1)
        passes.clear()
        q = crf.inference(iters)
        assert len(passes) == iters + (not reused)
        fresh = DenseCRF(u)
        fresh.add_kernel(spatial, compat=w2)
        fresh.add_kernel(colours[which], compat=w1)
        np.testing.assert_array_equal(q, fresh.inference(iters))
