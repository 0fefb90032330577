"""The volume CRF's torch backend (deeplab.crf.torch_volume): the numba answers, batched,
differentiable. Kept apart from test_volume.py so that the CRF-only install (no torch) runs
that file whole."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deeplab.crf import CRFParams, dense_crf_3d
from deeplab.crf.torch_volume import mean_field_3d

from .test_volume import PARAMS, SHAPE, noisy_ball

# -- the torch backend -------------------------------------------------------------------------


@pytest.mark.parametrize("compiled", [True, False])
def test_torch_backend_matches_numba(compiled, monkeypatch) -> None:
    from deeplab.crf import torch_meanfield

    monkeypatch.setattr(torch_meanfield, "_COMPILED_CPU", compiled)
    vol, p, _ = noisy_ball(labels=3)
    q = dense_crf_3d(vol, p, PARAMS, spacing=(2.0, 1.0, 1.0))
    qt = dense_crf_3d(torch.from_numpy(vol), torch.from_numpy(p), PARAMS, spacing=(2.0, 1.0, 1.0))
    assert isinstance(qt, torch.Tensor) and qt.shape == p.shape
    np.testing.assert_allclose(qt.numpy(), q, atol=1e-5)


def test_mean_field_3d_batches_and_differentiates() -> None:
    vol_a, p_a, _ = noisy_ball(seed=1)
    vol_b, p_b, _ = noisy_ball(seed=2)
    vols = torch.from_numpy(np.stack([vol_a, vol_b])).permute(0, 4, 1, 2, 3)
    unary = torch.from_numpy(-np.log(np.stack([p_a, p_b]))).requires_grad_()
    w1 = torch.tensor(5.0, requires_grad=True)
    kw = dict(theta_alpha=6, theta_beta=20, theta_gamma=2, iterations=5, spacing=(2, 1, 1))
    q = mean_field_3d(vols, unary, w1=w1, w2=3.0, **kw)
    assert q.shape == (2, 2, *SHAPE)
    for i, (v, p) in enumerate(((vol_a, p_a), (vol_b, p_b))):
        one = dense_crf_3d(v, p, PARAMS, spacing=(2, 1, 1))
        np.testing.assert_allclose(q[i].detach().numpy(), one, atol=1e-5)
    (q[:, 1] * torch.linspace(0, 1, SHAPE[2])).sum().backward()
    assert unary.grad is not None and bool(unary.grad.abs().sum() > 0)
    assert w1.grad is not None and bool(w1.grad != 0)


def test_mean_field_3d_gradients_are_exact() -> None:
    """Finite differences in float64 (the generic torch lattice) on a tiny volume."""
    vol, p, _ = noisy_ball((3, 4, 5), channels=1)
    vols = torch.from_numpy(vol.astype(np.float64)).permute(3, 0, 1, 2)[None]
    unary = torch.from_numpy(-np.log(p.astype(np.float64)))[None].requires_grad_()
    w1 = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    compat = (1.0 - torch.eye(2, dtype=torch.float64)).requires_grad_()

    def f(u, w, mu):
        return mean_field_3d(
            vols, u, w1=w, w2=1.0, theta_alpha=3, theta_beta=20, theta_gamma=1.5,
            iterations=3, spacing=(2, 1, 1), compat=mu,
        )  # fmt: skip

    assert torch.autograd.gradcheck(f, (unary, w1, compat), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("api", ["torch_volume", "deeplab.crf"])
def test_dense_crf_3d_is_differentiable(api: str) -> None:
    """Gradients reach the probabilities and a tensor compat through the single-volume
    entry points: torch_volume's and deeplab.crf's, which dispatches tensors to it."""
    import deeplab.crf
    from deeplab.crf import torch_volume

    fn = torch_volume.dense_crf_3d if api == "torch_volume" else deeplab.crf.dense_crf_3d
    vol, p, _ = noisy_ball((3, 4, 5), channels=1)
    v = torch.from_numpy(vol)
    z = torch.from_numpy(np.log(p.astype(np.float64))).requires_grad_()
    mu = (1.0 - torch.eye(2, dtype=torch.float64)).requires_grad_()
    params = CRFParams(w1=2, theta_alpha=3, theta_beta=20, w2=1, theta_gamma=1.5, iterations=3)

    def f(x, m):
        return fn(v, torch.softmax(x, 0), params, spacing=(2, 1, 1), compat=m)

    assert torch.autograd.gradcheck(f, (z, mu), eps=1e-6, atol=1e-5)


def test_torch_bad_input() -> None:
    vol, p, _ = noisy_ball(channels=1)
    v, pt = torch.from_numpy(vol), torch.from_numpy(p)
    with pytest.raises(ValueError, match="does not match the volume"):
        dense_crf_3d(v, pt[..., :5])
    bad = v.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="volumes: contain 1 NaN"):
        dense_crf_3d(bad, pt)
    with pytest.raises(ValueError, match=r"expected a \(B, L, D, H, W\)"):
        mean_field_3d(
            v[None], pt, w1=1.0, w2=1.0, theta_alpha=1, theta_beta=1, theta_gamma=1, iterations=1
        )
    with pytest.raises(ValueError, match=r"spacing\[0\]"):
        dense_crf_3d(v, pt, spacing=(-1, 1, 1))


def test_oversized_torch_volume_is_refused_before_allocating(monkeypatch) -> None:
    from deeplab.crf import volume as volume_mod

    monkeypatch.setattr(volume_mod, "available_memory", lambda: 2**30)
    vol_t = torch.zeros((1, 1, 1)).expand(256, 256, 256)
    p_t = torch.full((5, 1, 1, 1), 0.2).expand(5, 256, 256, 256)
    with pytest.raises(MemoryError, match="256x256x256"):
        dense_crf_3d(vol_t, p_t)
