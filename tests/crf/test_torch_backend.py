"""The PyTorch CRF backend: agreement with the CPU backend, batching, gradients, dispatch
and input checks (Chen et al. 2015, section 4)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from deeplab.crf import (  # noqa: E402
    CRFParams,
    dense_crf,
    dense_crf_from_logits,
    dense_crf_from_unary,
    torch_meanfield,
    unary_from_labels,
)
from deeplab.crf import torch_backend as tb  # noqa: E402

from .helpers import load_labels, load_rgb, smooth_logits, softmax  # noqa: E402

# Requirement: max |Q_torch - Q_cpu| <= 1e-4 in float32.
TOL = 1e-4
NORMS = ["after", "symmetric"]
FAST = CRFParams(iterations=3)


@pytest.fixture(autouse=True)
def one_torch_thread():
    # Tests share two cores with other jobs; OpenMP threads that spin for a busy core make
    # a run 10x slower, one thread keeps the suite's time predictable.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def max_diff(q_torch: torch.Tensor, q_cpu: np.ndarray) -> float:
    return float(np.abs(q_torch.cpu().numpy() - q_cpu).max())


def photo_case(shared_data, k: int) -> tuple[np.ndarray, np.ndarray]:
    image = load_rgb(shared_data / "crf_examples" / f"im{k}.png")
    labels = load_labels(shared_data / "crf_examples" / f"anno{k}.png")
    return image, unary_from_labels(labels, int(labels.max()), unknown=0)


@pytest.fixture(scope="module")
def voc_case(shared_data) -> tuple[np.ndarray, np.ndarray]:
    """A PASCAL VOC 2012 photo (the paper's benchmark, section 5) at 500x375 with
    21-label network-like energies."""
    photo = load_rgb(shared_data / "voc_mini/VOC2012/JPEGImages/2007_000033.jpg")
    image = np.array(Image.fromarray(photo).resize((500, 375), Image.BILINEAR))
    return image, -smooth_logits(21, 375, 500, seed=1)


# -- agreement with the CPU backend --------------------------------------------------------


PHOTO_CASES = [
    pytest.param(photo, norm, id=f"{photo}-{norm}", marks=[pytest.mark.slow] if slow else [])
    for photo, norm, slow in [
        (1, "after", False),
        (2, "after", False),
        (3, "after", False),
        (1, "symmetric", False),
        (2, "symmetric", True),
        (3, "symmetric", True),
    ]
]


@pytest.mark.parametrize(("photo", "norm"), PHOTO_CASES)
def test_photos_agree_with_the_cpu_backend(shared_data, photo: int, norm: str) -> None:
    image, unary = photo_case(shared_data, photo)
    params = CRFParams.preset("deeplab-largefov").replace(normalization=norm)
    q_cpu = dense_crf_from_unary(image, unary, params)
    q = dense_crf_from_unary(torch.from_numpy(image), torch.from_numpy(unary), params)
    assert isinstance(q, torch.Tensor) and q.dtype == torch.float32 and q.shape == unary.shape
    assert max_diff(q, q_cpu) <= TOL
    # The photos' coarse annotations leave real work to the CRF: it changes labels.
    assert (q_cpu.argmax(0) != unary.argmin(0)).mean() > 0.01


@pytest.mark.parametrize("norm", NORMS)
def test_voc_sized_21_labels_agree_with_the_cpu_backend(voc_case, norm: str) -> None:
    image, unary = voc_case
    params = CRFParams.preset("deeplab-largefov").replace(normalization=norm)
    q_cpu = dense_crf_from_unary(image, unary, params)
    q = dense_crf_from_unary(torch.from_numpy(image), torch.from_numpy(unary), params)
    assert max_diff(q, q_cpu) <= TOL


def test_probabilities_logits_compat_and_callback_agree(shared_data) -> None:
    image, unary = photo_case(shared_data, 3)
    image, unary = np.ascontiguousarray(image[:160]), np.ascontiguousarray(unary[:, :160])
    probs = softmax(-unary)
    img_t, probs_t = torch.from_numpy(image), torch.from_numpy(probs)
    assert max_diff(dense_crf(img_t, probs_t, FAST), dense_crf(image, probs, FAST)) <= TOL
    logits = np.log(probs) + 2.0
    q = dense_crf_from_logits(img_t, torch.from_numpy(logits), FAST)
    assert max_diff(q, dense_crf_from_logits(image, logits, FAST)) <= TOL
    num_labels = unary.shape[0]
    mu = np.random.default_rng(0).uniform(0, 2, (num_labels, num_labels)).astype(np.float32)
    q = dense_crf(img_t, probs_t, FAST, compat=torch.from_numpy(mu))
    assert max_diff(q, dense_crf(image, probs, FAST, compat=mu)) <= TOL
    seen: list[torch.Tensor] = []
    seen_cpu: list[np.ndarray] = []
    dense_crf(img_t, probs_t, FAST, callback=lambda it, q: seen.append(q))
    dense_crf(image, probs, FAST, callback=lambda it, q: seen_cpu.append(q))
    assert len(seen) == FAST.iterations
    for a, b in zip(seen, seen_cpu, strict=True):
        assert a.shape == b.shape and max_diff(a, b) <= TOL


@pytest.mark.parametrize("norm", ["before", "none"])
def test_other_normalisations_agree(shared_data, norm: str) -> None:
    image, unary = photo_case(shared_data, 2)
    params = FAST.replace(normalization=norm, w1=1.0, w2=0.5)
    q = dense_crf_from_unary(torch.from_numpy(image), torch.from_numpy(unary), params)
    assert max_diff(q, dense_crf_from_unary(image, unary, params)) <= TOL


def test_float64_stays_float64_and_close(shared_data) -> None:
    image, unary = photo_case(shared_data, 2)
    q64 = dense_crf_from_unary(torch.from_numpy(image), torch.from_numpy(unary).double(), FAST)
    assert q64.dtype == torch.float64
    assert max_diff(q64, dense_crf_from_unary(image, unary, FAST)) <= TOL


def test_zero_weights_give_the_softmax_of_the_unary(shared_data) -> None:
    image, unary = photo_case(shared_data, 3)
    u = torch.from_numpy(unary)
    q = dense_crf_from_unary(torch.from_numpy(image), u, CRFParams(w1=0, w2=0))
    torch.testing.assert_close(q, torch.softmax(-u, 0))


# -- batches ---------------------------------------------------------------------------


def tiny_batch(b: int = 3, h: int = 24, w: int = 31, labels: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = np.stack(
        [
            np.kron(rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3)), np.ones((4, 4, 1)))[:h, :w]
            for _ in range(b)
        ]
    ).astype(np.uint8)
    logits = np.stack([smooth_logits(labels, h, w, seed=seed + i) for i in range(b)])
    return (
        torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(logits),
    )


@pytest.mark.parametrize("norm", NORMS)
def test_batched_equals_per_image_and_the_cpu_backend(norm: str) -> None:
    images, logits = tiny_batch()
    params = CRFParams.preset("deeplab").replace(normalization=norm)
    crf = tb.DenseCRF(params, learn_weights=False).eval()
    with torch.no_grad():
        q = crf(images, logits)
        for i in range(images.shape[0]):
            single = crf(images[i : i + 1], logits[i : i + 1])
            torch.testing.assert_close(q[i : i + 1], single, atol=1e-6, rtol=0)
        # The last image of the batch uses the last block of the joint lattices.
        ref = dense_crf_from_logits(images[-1].permute(1, 2, 0).numpy(), logits[-1].numpy(), params)
        assert max_diff(q[-1], ref) <= TOL


def test_lists_of_different_sizes() -> None:
    images, logits = tiny_batch(3)
    small_img, small_log = tiny_batch(2, h=17, w=12, seed=5)
    img_list = [images[0], small_img[0], images[1], small_img[1], images[2]]
    log_list = [logits[0], small_log[0], logits[1], small_log[1], logits[2]]
    crf = tb.DenseCRF(FAST, learn_weights=False).eval()
    with torch.no_grad():
        out = crf(img_list, log_list)
        assert [tuple(o.shape) for o in out] == [tuple(x.shape) for x in log_list]
        for img, lg, q in zip(img_list, log_list, out, strict=True):
            torch.testing.assert_close(q, crf(img[None], lg[None])[0], atol=1e-6, rtol=0)


# -- gradients -------------------------------------------------------------------------


def tiny_float64(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = (torch.rand(1, 3, 4, 5, generator=g) * 255).to(torch.uint8)
    unary = torch.randn(1, 3, 4, 5, generator=g, dtype=torch.float64) * 2
    return image, unary.requires_grad_()


@pytest.mark.parametrize("norm", NORMS)
def test_mean_field_gradcheck_unary_weights_compat(norm: str) -> None:
    image, unary = tiny_float64()
    w1 = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    w2 = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    mu = (1 - torch.eye(3, dtype=torch.float64)) + 0.3 * torch.rand(3, 3, dtype=torch.float64)
    mu.requires_grad_()

    def run(u, a, b, m=None, log_marginals=False):
        return tb.mean_field(
            image,
            u,
            w1=a,
            w2=b,
            theta_alpha=3.0,
            theta_beta=30.0,
            theta_gamma=1.5,
            iterations=3,
            normalization=norm,
            compat=m,
            log_marginals=log_marginals,
        )

    assert torch.autograd.gradcheck(run, (unary, w1, w2, mu))
    assert torch.autograd.gradcheck(
        lambda u, a, b: run(u, a, b, log_marginals=True), (unary, w1, w2)
    )


def test_mean_field_takes_params_third_and_keywords_override_them() -> None:
    image, unary = tiny_float64()
    params = CRFParams(w1=2.0, w2=1.5, theta_alpha=3.0, theta_beta=30.0, theta_gamma=1.5)
    params = params.replace(iterations=3)
    with torch.no_grad():
        q = tb.mean_field(image, unary, params)
        kw = tb.mean_field(
            image,
            unary,
            w1=2.0,
            w2=1.5,
            theta_alpha=3.0,
            theta_beta=30.0,
            theta_gamma=1.5,
            iterations=3,
        )
        torch.testing.assert_close(q, kw)
        other = tb.mean_field(image, unary, params, w1=0.0, iterations=1)
        torch.testing.assert_close(
            other, tb.mean_field(image, unary, params.replace(w1=0, iterations=1))
        )


TINY = CRFParams(theta_alpha=3.0, theta_beta=30.0, theta_gamma=1.5, iterations=3)
SINGLE_ENTRY_POINTS = {
    "probs": ("dense_crf", lambda z: torch.softmax(z, 0)),
    "logits": ("dense_crf_from_logits", lambda z: z),
    "unary": ("dense_crf_from_unary", lambda z: -z),
}


@pytest.mark.parametrize("api", ["torch_backend", "deeplab.crf"])
@pytest.mark.parametrize("entry", sorted(SINGLE_ENTRY_POINTS))
def test_single_image_entry_points_are_differentiable(api: str, entry: str) -> None:
    """Gradients reach the maps and a tensor compat through every single-image entry
    point: the torch backend's own and deeplab.crf's, which dispatches tensors to it."""
    import deeplab.crf

    module = tb if api == "torch_backend" else deeplab.crf
    name, to_maps = SINGLE_ENTRY_POINTS[entry]
    fn = getattr(module, name)
    g = torch.Generator().manual_seed(1)
    image = (torch.rand(4, 5, 3, generator=g) * 255).to(torch.uint8)
    z = torch.randn(3, 4, 5, generator=g, dtype=torch.float64).requires_grad_()
    mu = (1 - torch.eye(3, dtype=torch.float64)) + 0.3 * torch.rand(
        3, 3, generator=g, dtype=torch.float64
    )
    mu.requires_grad_()
    assert torch.autograd.gradcheck(lambda x, m: fn(image, to_maps(x), TINY, compat=m), (z, mu))


def test_single_image_float32_backward_on_the_compiled_path() -> None:
    images, logits = tiny_batch(1, h=12, w=15, labels=4)
    x = logits[0].clone().requires_grad_()
    q = dense_crf_from_logits(images[0].permute(1, 2, 0), x, FAST)
    assert isinstance(q, torch.Tensor) and q.requires_grad
    (q[1] * torch.linspace(0, 1, 15)).sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and x.grad.abs().sum() > 0
    with torch.no_grad():
        torch.testing.assert_close(
            dense_crf_from_logits(images[0].permute(1, 2, 0), x, FAST), q.detach()
        )


def test_module_gradients_reach_every_parameter() -> None:
    images, logits = tiny_batch(2, h=5, w=6, labels=3)
    crf = tb.DenseCRF(FAST, num_labels=3, learn_compat=True).double()
    x = logits.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda z: crf(images, z), (x,))
    loss = -crf(images, x, log=True)[:, 0].mean()
    loss.backward()
    for name, p in crf.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_module_settings(monkeypatch) -> None:
    crf = tb.DenseCRF("deeplab-largefov", num_labels=5, learn_compat=True, train_iterations=5)
    w1, w2 = crf.kernel_weights()
    assert float(w1.detach()) == pytest.approx(4.0, rel=1e-6)
    assert float(w2.detach()) == pytest.approx(3.0, rel=1e-6)
    assert crf.to_params().replace(w1=4.0, w2=3.0) == CRFParams.preset("deeplab-largefov")
    torch.testing.assert_close(crf.compat.detach(), 1 - torch.eye(5))
    assert {n for n, _ in crf.named_parameters()} == {"raw_w1", "raw_w2", "compat"}
    assert {"theta_alpha", "theta_beta", "theta_gamma"} <= set(crf.state_dict())
    with torch.no_grad():
        crf.raw_w1.fill_(-50.0)  # softplus keeps the weight positive wherever it is pushed
    assert 0 < float(crf.kernel_weights()[0].detach()) < 1e-20
    # Training mode runs train_iterations, eval mode the params' iterations.
    images, logits = tiny_batch(1, h=8, w=9, labels=5)
    counts = []
    original = torch_meanfield._energy_step

    def counting(*args):
        counts.append(1)
        return original(*args)

    monkeypatch.setattr(torch_meanfield, "_energy_step", counting)
    crf.train()(images, logits)
    n_train = len(counts)
    crf.eval()(images, logits)
    n_eval = len(counts) - n_train
    crf(images, logits, iterations=2)
    assert (n_train, n_eval, len(counts) - n_train - n_eval) == (5, 10, 2)


def test_learned_potts_compat_equals_potts() -> None:
    images, logits = tiny_batch(2, labels=4)
    plain = tb.DenseCRF(FAST, learn_weights=False)
    learned = tb.DenseCRF(FAST, num_labels=4, learn_compat=True, learn_weights=False)
    with torch.no_grad():
        torch.testing.assert_close(
            learned(images, logits), plain(images, logits), atol=1e-5, rtol=0
        )
        q = plain(images, logits)
        log_q = plain(images, logits, log=True)
        torch.testing.assert_close(log_q.exp(), q)
        u = plain(images, unary=-logits)
        torch.testing.assert_close(u, q)


def test_float_images_in_0_255_equal_uint8(caplog) -> None:
    images, logits = tiny_batch(2)
    crf = tb.DenseCRF(FAST, learn_weights=False)
    with torch.no_grad():
        q = crf(images, logits)
        torch.testing.assert_close(crf(images.double(), logits), q)
        assert not caplog.records
        crf(images.float() / 255, logits)  # accepted, but almost certainly a mistake
    assert "0..255" in caplog.text


# -- dispatch ------------------------------------------------------------------------------


def test_auto_backend_dispatch(shared_data) -> None:
    image, unary = photo_case(shared_data, 3)
    image, unary = np.ascontiguousarray(image[:60, :80]), np.ascontiguousarray(unary[:, :60, :80])
    img_t, u_t = torch.from_numpy(image), torch.from_numpy(unary)
    assert isinstance(dense_crf_from_unary(image, unary, FAST), np.ndarray)
    assert isinstance(dense_crf_from_unary(img_t, u_t, FAST), torch.Tensor)
    # A numpy image with tensor scores (the usual network output) goes to torch too.
    assert isinstance(dense_crf_from_unary(image, u_t, FAST), torch.Tensor)
    assert isinstance(dense_crf_from_unary(img_t, u_t, FAST, backend="numba"), np.ndarray)
    assert isinstance(dense_crf_from_unary(image, unary, FAST, backend="torch"), torch.Tensor)
    probs = torch.softmax(-u_t, 0)
    assert isinstance(dense_crf(img_t, probs, FAST), torch.Tensor)
    assert isinstance(dense_crf(image, probs.numpy(), FAST), np.ndarray)
    assert isinstance(dense_crf_from_logits(img_t, -u_t, FAST), torch.Tensor)
    assert isinstance(dense_crf_from_logits(image, -unary, FAST, backend="numba"), np.ndarray)
    with pytest.raises(ValueError, match="backend"):
        dense_crf(image, probs.numpy(), FAST, backend="cuda")


def test_the_torch_backend_loads_no_numba() -> None:
    code = (
        "import sys, deeplab.crf as c, deeplab.crf.torch_backend\n"
        "assert c.torch_backend is deeplab.crf.torch_backend\n"
        "assert 'numba' not in sys.modules, 'numba'\n"
        "outside = [m for m in sys.modules if m.startswith('deeplab.')\n"
        "           and not m.startswith('deeplab.crf')]\n"
        "assert not outside, outside"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_importing_the_crf_does_not_import_torch() -> None:
    code = (
        "import sys, deeplab.crf as c; assert 'torch' not in sys.modules; "
        "c.TorchDenseCRF; assert 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_agrees_with_the_cpu_backend(voc_case) -> None:
    image, unary = voc_case
    for norm in NORMS:
        params = CRFParams.preset("deeplab-largefov").replace(normalization=norm)
        u = torch.from_numpy(unary).cuda()
        q = dense_crf_from_unary(image, u, params)
        assert q.device.type == "cuda"
        assert max_diff(q, dense_crf_from_unary(image, unary, params)) <= TOL
    images, logits = tiny_batch(3)
    crf = tb.DenseCRF(FAST, num_labels=4, learn_compat=True)
    q_cpu = crf(images, logits)
    q_gpu = crf.cuda()(images.cuda(), logits.cuda().requires_grad_())
    q_gpu.sum().backward()
    torch.testing.assert_close(q_gpu.cpu(), q_cpu.detach(), atol=1e-5, rtol=0)


# -- bad input -------------------------------------------------------------------------------


@pytest.fixture
def good() -> tuple[torch.Tensor, torch.Tensor]:
    images, logits = tiny_batch(2, h=8, w=10, labels=3)
    return images[0].permute(1, 2, 0).contiguous(), torch.softmax(logits[0], 0)


BAD_SINGLE = [
    ("probs shape", lambda i, p: (i, p[:, :-1]), ValueError, "does not match the image"),
    ("nan", lambda i, p: (i, torch.where(p > 0.5, torch.nan, p)), ValueError, "NaN"),
    ("inf", lambda i, p: (i, torch.where(p > 0.5, torch.inf, p)), ValueError, "infinite"),
    ("negative", lambda i, p: (i, p - 0.5), ValueError, "negative"),
    ("one label", lambda i, p: (i, p[:1]), ValueError, "at least 2 labels"),
    ("float image", lambda i, p: (i.float(), p), TypeError, "uint8"),
    ("rgba", lambda i, p: (torch.cat([i, i[..., :1]], 2), p), ValueError, "RGBA"),
    ("2 channels", lambda i, p: (i[..., :2], p), ValueError, r"\(H, W, 3\)"),
    ("empty", lambda i, p: (i[:0], p[:, :0]), ValueError, "empty"),
    ("probs 2-D", lambda i, p: (i, p[0]), ValueError, "expected"),
    ("complex", lambda i, p: (i, p.to(torch.complex64)), TypeError, "real"),
    ("bool", lambda i, p: (i, p > 0.5), TypeError, "real"),
    ("strings", lambda i, p: (i, p.numpy().astype(str)), TypeError, "dtype"),
    ("list", lambda i, p: (i, p.tolist()), TypeError, "Tensor"),
]


@pytest.mark.parametrize(("name", "make", "exc", "msg"), BAD_SINGLE, ids=[b[0] for b in BAD_SINGLE])
def test_bad_single_image_input(good, name, make, exc, msg) -> None:
    img, p = make(*good)
    with pytest.raises(exc, match=msg):
        tb.dense_crf(img, p, FAST)


def test_bad_module_input() -> None:
    images, logits = tiny_batch(2, h=8, w=10, labels=3)
    crf = tb.DenseCRF(FAST)
    cases = [
        ((images, logits[:1]), ValueError, "does not match"),
        ((images[:, :2], logits), ValueError, r"\(B, 3, H, W\)"),
        ((images.int(), logits), TypeError, "uint8 or floating"),
        ((images.float() - 100, logits), ValueError, "0..255"),
        ((images.float() * float("nan"), logits), ValueError, "NaN"),
        ((images, logits.clone().fill_(float("nan"))), ValueError, "NaN"),
        ((images, logits[0]), ValueError, r"\(B, L, H, W\)"),
        (([images[0]], [logits[0], logits[1]]), ValueError, "same length"),
        ((images, [logits[0]]), TypeError, "tensor too"),
        (([images[0]], [logits[0, 0]]), ValueError, r"\(L, H, W\)"),
    ]
    for args, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            crf(*args)
    with pytest.raises(ValueError, match="exactly one"):
        crf(images, logits, unary=-logits)
    with pytest.raises(ValueError, match="exactly one"):
        crf(images)
    with pytest.raises(ValueError, match="iterations"):
        crf(images, logits, iterations=-1)
    with pytest.raises(ValueError, match="labels"):
        tb.DenseCRF(FAST, num_labels=4)(images, logits)
    with pytest.raises(ValueError, match="start > 0"):
        tb.DenseCRF(CRFParams(w2=0))
    with pytest.raises(ValueError, match="num_labels"):
        tb.DenseCRF(FAST, learn_compat=True)
    with pytest.raises(ValueError, match="compat"):
        tb.mean_field(
            images,
            -logits,
            w1=1.0,
            w2=1.0,
            theta_alpha=10.0,
            theta_beta=10.0,
            theta_gamma=3.0,
            iterations=1,
            compat=torch.eye(2),
        )
    with pytest.raises(ValueError, match="normalization"):
        tb.mean_field(
            images,
            -logits,
            w1=1.0,
            w2=1.0,
            theta_alpha=10.0,
            theta_beta=10.0,
            theta_gamma=3.0,
            iterations=1,
            normalization="sideways",
        )
