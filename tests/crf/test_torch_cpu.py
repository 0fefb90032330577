"""The torch backend's CPU path (compiled kernels) against its generic path (the one CUDA
runs): the same filter, adjoint, marginals and gradients (Chen et al. 2015, section 4)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from deeplab.crf import (  # noqa: E402
    CRFParams,
    bilateral_features,
    torch_meanfield,
)
from deeplab.crf import torch_backend as tb  # noqa: E402
from deeplab.crf.torch_cpu import (  # noqa: E402
    CompiledLattice,
    build_compiled_lattice,
    compiled_softmax,
    pad_labels,
)
from deeplab.crf.torch_lattice import TorchLattice, build_lattice, lattice_filter  # noqa: E402

from .helpers import load_rgb, smooth_logits  # noqa: E402

FAST = CRFParams(iterations=3)


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def generic(monkeypatch):
    """Switches the torch backend to its generic path for the test's duration."""

    def use(flag: bool) -> None:
        monkeypatch.setattr(torch_meanfield, "_COMPILED_CPU", not flag)

    return use


def photo_batch(shared_data, labels: int = 21, h: int = 60, w: int = 80):
    """Crops of two real photos (B=2) with smooth network-like logits."""
    crops = []
    for k in (1, 3):
        img = load_rgb(shared_data / "crf_examples" / f"im{k}.png")[:h, :w]
        crops.append(np.ascontiguousarray(img))
    images = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()
    logits = np.stack([smooth_logits(labels, h, w, seed=k) for k in (1, 3)])
    return images, torch.from_numpy(logits)


# -- the lattice -----------------------------------------------------------------------------


def test_filter_matches_the_generic_filter(shared_data) -> None:
    image = load_rgb(shared_data / "crf_examples" / "im2.png")[:90, :120]
    feats = bilateral_features(image, 80.0, 13.0)
    rng = np.random.default_rng(0)
    batch = torch.from_numpy(np.stack([feats, feats[::-1].copy()]))
    ours, ref = build_compiled_lattice(batch), build_lattice(batch)
    assert isinstance(ours, CompiledLattice) and ours.num_points == ref.num_points
    assert ours.num_vertices == ref.num_vertices and ours.alpha == ref.alpha
    # 21 channels go through a padded copy, 3 and 8 as they are.
    for c in (21, 3, 8):
        vals = torch.from_numpy(rng.uniform(0, 1, size=(ours.num_points, c)).astype(np.float32))
        for reverse in (False, True):
            out = ours.filter(vals, reverse=reverse)
            want = ref.filter(vals, reverse=reverse)
            assert out.shape == want.shape and out.dtype == torch.float32
            torch.testing.assert_close(out, want, rtol=2e-6, atol=1e-6 * float(want.abs().max()))
    # Copies of a batch's lattices, as the spatial kernel of a larger batch uses them.
    vals = torch.from_numpy(rng.normal(size=(3 * ours.num_points, 4)).astype(np.float32))
    out, want = ours.repeat(3).filter(vals), ref.repeat(3).filter(vals)
    torch.testing.assert_close(out, want, rtol=2e-6, atol=1e-6 * float(want.abs().max()))


def test_reverse_filter_is_the_adjoint_and_the_gradient() -> None:
    rng = np.random.default_rng(1)
    feats = torch.from_numpy(rng.normal(size=(2, 400, 3)).astype(np.float32) * 2)
    lat = build_compiled_lattice(feats)
    a = torch.from_numpy(rng.normal(size=(800, 11)).astype(np.float32))
    b = torch.from_numpy(rng.normal(size=(800, 11)).astype(np.float32))
    lhs = float((a.double() * lat.filter(b).double()).sum())
    rhs = float((lat.filter(a, reverse=True).double() * b.double()).sum())
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)
    # The forward filter alone is not symmetric: the check above is not vacuous.
    assert abs(float((lat.filter(a).double() * b.double()).sum()) - lhs) > 1e-4 * abs(lhs)
    x = a.clone().requires_grad_()
    y = lattice_filter(x, lat)
    assert y.grad_fn.saved_tensors == ()
    y.backward(b)
    torch.testing.assert_close(x.grad, lat.filter(b, reverse=True))
    generic = build_lattice(feats)
    x2 = a.clone().requires_grad_()
    lattice_filter(x2, generic).backward(b)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-5)


def test_filter_refuses_bad_values() -> None:
    lat = build_compiled_lattice(torch.rand(10, 2) * 3)
    with pytest.raises(ValueError, match=r"expected \(10, C\)"):
        lat.filter(torch.zeros(9, 2))
    with pytest.raises(TypeError, match="float32"):
        lat.filter(torch.zeros(10, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="too small"):
        build_compiled_lattice(torch.tensor([[0.0], [3e7]]))
    with pytest.raises(ValueError, match="NaN"):
        build_compiled_lattice(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        build_compiled_lattice(torch.zeros(2, 2, 2, 2))


def test_softmax_and_padding() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(50, 5, generator=g) * 4
    mu = torch.rand(5, 5, generator=g)
    padded, mu_p = pad_labels(x, mu)
    assert padded.shape == (50, 8) and mu_p.shape == (8, 8)
    assert float(mu_p[5:].abs().sum() + mu_p[:, 5:].abs().sum()) == 0
    q = compiled_softmax(padded)
    assert float(q[:, 5:].abs().max()) == 0.0
    torch.testing.assert_close(q[:, :5], torch.softmax(x, 1))
    grad = torch.randn(50, 8, generator=g)
    a = padded.detach().requires_grad_()
    compiled_softmax(a).backward(grad)
    b = padded.detach().requires_grad_()
    torch.softmax(b, 1).backward(grad)
    torch.testing.assert_close(a.grad, b.grad)


# -- the mean field: compiled CPU path against the generic path ------------------------------


def test_paths_by_device_dtype_and_flag(generic) -> None:
    images = torch.full((1, 3, 6, 7), 100, dtype=torch.uint8)
    kw = {"theta_alpha": 10.0, "theta_beta": 10.0, "theta_gamma": 3.0}
    k = tb.build_image_kernels(images, **kw)
    assert isinstance(k.spatial.lattice, CompiledLattice)
    assert isinstance(k.bilateral.lattice, CompiledLattice)
    k = tb.build_image_kernels(images, dtype=torch.float64, **kw)
    assert isinstance(k.bilateral.lattice, TorchLattice)
    generic(True)
    k = tb.build_image_kernels(images, **kw)
    assert isinstance(k.spatial.lattice, TorchLattice)


def test_fused_inference_runs_only_without_gradients(monkeypatch, shared_data) -> None:
    images, logits = photo_batch(shared_data, labels=5, h=20, w=24)
    calls: list[int] = []
    original = torch_meanfield.compiled_mean_field

    def counting(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(torch_meanfield, "compiled_mean_field", counting)
    crf = tb.DenseCRF(FAST, learn_weights=False)
    with torch.no_grad():
        q = crf(images, logits)
    assert len(calls) == 1
    crf(images, logits.clone().requires_grad_())  # the filter path, differentiable
    with torch.no_grad():
        log_q = crf(images, logits, log=True)
        image = images[0].permute(1, 2, 0)
        tb.dense_crf_from_logits(image, logits[0], FAST, callback=lambda it, q: None)
    assert len(calls) == 1
    torch.testing.assert_close(log_q.exp(), q, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("labels", [21, 4])
def test_marginals_agree_with_the_generic_path(shared_data, generic, labels: int) -> None:
    images, logits = photo_batch(shared_data, labels=labels)
    mu = torch.from_numpy(
        np.random.default_rng(3).uniform(0, 2, (labels, labels)).astype(np.float32)
    )
    for norm in ("after", "symmetric"):
        params = CRFParams.preset("deeplab-largefov").replace(normalization=norm, iterations=5)
        for compat in (None, mu):
            crf = tb.DenseCRF(params, learn_weights=False, compat=compat)
            out = {}
            for use_generic in (False, True):
                generic(use_generic)
                with torch.no_grad():
                    fused = crf(images, logits)
                    log_q = crf(images, logits, log=True)  # the compiled filter path
                out[use_generic] = fused, log_q
            (fused, log_q), (ref, ref_log) = out[False], out[True]
            torch.testing.assert_close(fused, ref, atol=1e-5, rtol=0)
            torch.testing.assert_close(log_q.exp(), ref_log.exp(), atol=1e-5, rtol=0)


def test_gradients_agree_with_the_generic_path(shared_data, generic) -> None:
    images, logits = photo_batch(shared_data, labels=6, h=30, w=40)
    target = torch.randint(0, 6, (2, 30, 40), generator=torch.Generator().manual_seed(4))
    grads = {}
    for use_generic in (False, True):
        generic(use_generic)
        crf = tb.DenseCRF("deeplab-largefov", num_labels=6, learn_compat=True)
        crf.train_iterations = 4
        x = logits.clone().requires_grad_()
        loss = torch.nn.functional.nll_loss(crf(images, x, log=True), target)
        loss.backward()
        grads[use_generic] = [loss.item()] + [x.grad] + [p.grad for p in crf.parameters()]
    ours, ref = grads[False], grads[True]
    assert ours[0] == pytest.approx(ref[0], rel=1e-5)
    for a, b in zip(ours[1:], ref[1:], strict=True):
        assert float(b.abs().max()) > 0
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))
