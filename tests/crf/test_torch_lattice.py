"""The PyTorch lattice against the CPU kernels: the same simplices, weights, vertices and
blur neighbours, bit for bit; its filter, adjoint and gradients (Adams et al. 2010)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from deeplab.crf import PermutohedralLattice, bilateral_features, kernels  # noqa: E402
from deeplab.crf.lattice import hash_vertices  # noqa: E402
from deeplab.crf.torch_lattice import (  # noqa: E402
    build_lattice,
    lattice_filter,
    simplex_keys,
)

from .helpers import load_rgb  # noqa: E402


def cpu_lattice(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets, weights, neighbours (d+1, M, 2)) from the compiled CPU kernels."""
    rem0, rank, weights, overflow = kernels.simplex_keys(features)
    assert overflow == 0
    offsets, keys, table, _ = hash_vertices(rem0, rank)
    return offsets, weights, kernels.build_neighbors(keys, table, offsets, rank)


def assert_same_lattice(features: np.ndarray, **kwargs) -> None:
    offsets, weights, nbrs = cpu_lattice(features)
    lat = build_lattice(torch.from_numpy(features), **kwargs)
    assert lat.num_vertices == nbrs.shape[1]
    np.testing.assert_array_equal(lat.offsets.numpy(), offsets)
    np.testing.assert_array_equal(lat.weights.numpy(), weights)
    # Ours: (d+1, 2, M+1) with the zero row's own entry last; the CPU's: (d+1, M, 2).
    np.testing.assert_array_equal(lat.neighbors[:, :, :-1].permute(0, 2, 1).numpy(), nbrs)


@pytest.fixture(scope="module")
def photo_features(shared_data) -> np.ndarray:
    image = load_rgb(shared_data / "crf_examples" / "im1.png")
    return bilateral_features(image, 80.0, 13.0)


def test_simplices_match_the_cpu_kernel_bitwise(photo_features: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    # Real photo features, a smooth random cloud, and points on a grid of exact values,
    # where rounding ties and equal coordinates decide ranks.
    cases = [
        photo_features,
        rng.normal(size=(5000, 3)).astype(np.float32) * 7,
        (rng.integers(-20, 20, size=(3000, 4)) / np.float32(4)).astype(np.float32),
    ]
    for feats in cases:
        rem0, rank, weights, _ = kernels.simplex_keys(feats)
        t_rem0, t_rank, t_weights = simplex_keys(torch.from_numpy(feats))
        np.testing.assert_array_equal(t_rem0.numpy(), rem0)
        np.testing.assert_array_equal(t_rank.numpy(), rank)
        np.testing.assert_array_equal(t_weights.numpy(), weights)


def rounding_ties() -> np.ndarray:
    """1-D features whose elevated coordinates are odd integers in float32: rounding them
    by 1/(d+1) = 1/2 lands exactly on .5, where only round-half-to-even matches."""
    inv_std = float(np.float32(np.sqrt(2.0 / 3.0) * 2))
    scale = np.float32(1.0 / np.sqrt(2.0) * inv_std)
    ties = []
    for k in range(-40, 40):
        target = np.float32(2 * k + 1)
        f = np.float32(target / scale)
        for _ in range(4):
            if np.float32(f * scale) == target:
                ties.append(f)
                break
            f = np.nextafter(f, np.float32(np.inf if f * scale < target else -np.inf))
    assert len(ties) > 40
    return np.array(ties, np.float32)[:, None]


def test_rounding_ties_go_to_even() -> None:
    feats = rounding_ties()
    rem0, rank, weights, _ = kernels.simplex_keys(feats)
    t_rem0, t_rank, t_weights = simplex_keys(torch.from_numpy(feats))
    np.testing.assert_array_equal(t_rem0.numpy(), rem0)
    np.testing.assert_array_equal(t_rank.numpy(), rank)
    np.testing.assert_array_equal(t_weights.numpy(), weights)
    assert_same_lattice(feats)


def test_lattice_matches_the_cpu_lattice(photo_features: np.ndarray) -> None:
    assert_same_lattice(photo_features)
    rng = np.random.default_rng(1)
    assert_same_lattice(rng.uniform(0, 30, size=(2000, 1)).astype(np.float32))
    assert_same_lattice((rng.integers(-20, 20, size=(3000, 2)) / np.float32(3)).astype(np.float32))


def test_ranked_keys_give_the_packed_lattice(photo_features: np.ndarray) -> None:
    # The fallback for keys wider than an int64, forced on an ordinary input ...
    assert_same_lattice(photo_features, _force_rank=True)
    # ... and taken naturally by 12 dimensions of wide-ranging coordinates.
    rng = np.random.default_rng(2)
    wide = rng.uniform(0, 400, size=(1500, 12)).astype(np.float32)
    assert_same_lattice(wide)


def test_batched_lattice_is_disjoint_per_image_lattices() -> None:
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(3, 400, 3)).astype(np.float32) * 2
    feats[1] = feats[0]  # identical images must still get separate vertices
    joint = build_lattice(torch.from_numpy(feats))
    base = 0
    for b in range(3):
        single = build_lattice(torch.from_numpy(feats[b]))
        rows = joint.offsets[b * 400 : (b + 1) * 400]
        np.testing.assert_array_equal((rows - base).numpy(), single.offsets.numpy())
        np.testing.assert_array_equal(joint.weights[b * 400 : (b + 1) * 400], single.weights)
        base += single.num_vertices
    assert joint.num_vertices == base
    vals = torch.from_numpy(rng.normal(size=(1200, 2)).astype(np.float32))
    out = joint.filter(vals)
    for b in range(3):
        single = build_lattice(torch.from_numpy(feats[b]))
        sl = slice(b * 400, (b + 1) * 400)
        torch.testing.assert_close(out[sl], single.filter(vals[sl]), atol=1e-5, rtol=1e-5)


def test_repeated_lattice_filters_each_copy_alone() -> None:
    rng = np.random.default_rng(4)
    lat = build_lattice(torch.from_numpy(rng.uniform(0, 6, size=(300, 2)).astype(np.float32)))
    rep = lat.repeat(3)
    vals = torch.from_numpy(rng.normal(size=(900, 4)).astype(np.float32))
    for reverse in (False, True):
        out = rep.filter(vals, reverse=reverse)
        for b in range(3):
            sl = slice(b * 300, (b + 1) * 300)
            torch.testing.assert_close(out[sl], lat.filter(vals[sl], reverse=reverse))


def test_filter_matches_the_cpu_filter(photo_features: np.ndarray) -> None:
    rng = np.random.default_rng(5)
    vals = rng.uniform(0, 1, size=(photo_features.shape[0], 5)).astype(np.float32)
    cpu = PermutohedralLattice(photo_features)
    lat = build_lattice(torch.from_numpy(photo_features))
    for reverse in (False, True):
        ref = cpu.filter(vals, reverse=reverse)
        out = lat.filter(torch.from_numpy(vals), reverse=reverse).numpy()
        # Only the order of the splat's float32 additions differs.
        np.testing.assert_allclose(out, ref, rtol=2e-6, atol=1e-6 * np.abs(ref).max())


def test_reverse_filter_is_the_adjoint() -> None:
    rng = np.random.default_rng(6)
    feats = torch.from_numpy(rng.normal(size=(500, 3)).astype(np.float32) * 2)
    lat = build_lattice(feats)
    a = torch.from_numpy(rng.normal(size=(500, 3)))
    b = torch.from_numpy(rng.normal(size=(500, 3)))
    lhs = float((a * lat.filter(b)).sum())
    rhs = float((lat.filter(a, reverse=True) * b).sum())
    assert abs(lhs - rhs) <= 1e-9 * abs(lhs)
    # The forward filter alone is not symmetric: the test above is not vacuous.
    assert abs(float((lat.filter(a) * b).sum()) - lhs) > 1e-6 * abs(lhs)


def test_filter_gradients_float64() -> None:
    rng = np.random.default_rng(7)
    lat = build_lattice(torch.from_numpy(rng.uniform(0, 3, size=(25, 3)).astype(np.float32)))
    vals = torch.from_numpy(rng.normal(size=(25, 2))).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: lattice_filter(v, lat), (vals,))
    assert torch.autograd.gradgradcheck(lambda v: lattice_filter(v, lat), (vals,))
    assert torch.autograd.gradcheck(lambda v: lattice_filter(v, lat, reverse=True), (vals,))


def test_backward_keeps_no_tensors_per_call() -> None:
    # Linear: the backward needs only the lattice, never the (N, C) input.
    lat = build_lattice(torch.rand(50, 2) * 4)
    x = torch.rand(50, 3, requires_grad=True)
    y = lattice_filter(x, lat)
    assert y.grad_fn.saved_tensors == ()


def test_bad_features() -> None:
    with pytest.raises(ValueError, match="too small"):
        build_lattice(torch.tensor([[0.0], [3e7]]))
    with pytest.raises(ValueError, match="NaN"):
        build_lattice(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        build_lattice(torch.zeros(2, 2, 2, 2))
    with pytest.raises(ValueError, match="need points"):
        build_lattice(torch.zeros(0, 2))
    with pytest.raises(TypeError, match="floating"):
        build_lattice(torch.zeros(4, 2, dtype=torch.int64))
    lat = build_lattice(torch.rand(10, 2))
    with pytest.raises(ValueError, match=r"expected \(10, C\)"):
        lat.filter(torch.zeros(9, 2))
