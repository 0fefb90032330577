"""The VGG-16 trunk: Caffe pooling and the hole algorithm (paper section 3.1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)

from deeplab.models import build_model
from deeplab.models.variants import Pool, caffe_pool_size
from deeplab.models.vgg import CaffeMaxPool, VGGTrunk, conv_names


def caffe_pool_reference(x: np.ndarray, pool: Pool, average: bool = False) -> np.ndarray:
    """Caffe's PoolingLayer::Forward_cpu (MAX and AVE) on a (C,H,W) array, written from
    its definition: windows start at i*stride - pad; AVE divides by the window clipped to
    the padded input (pad cells count), MAX ignores pad cells."""
    c, h, w = x.shape
    oh, ow = caffe_pool_size(h, pool), caffe_pool_size(w, pool)
    out = np.zeros((c, oh, ow), np.float64)
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * pool.stride - pool.padding, j * pool.stride - pool.padding
            h1 = min(h0 + pool.kernel, h + pool.padding)
            w1 = min(w0 + pool.kernel, w + pool.padding)
            size = (h1 - h0) * (w1 - w0)
            h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
            window = x[:, h0:h1, w0:w1]
            if average:
                out[:, i, j] = window.sum(axis=(1, 2)) / size
            else:
                out[:, i, j] = window.max(axis=(1, 2))
    return out


def test_conv_names() -> None:
    names = conv_names()
    assert len(names) == 13
    assert names[:3] == ["conv1_1", "conv1_2", "conv2_1"]
    assert names[-1] == "conv5_3"


@pytest.mark.parametrize("pool", [Pool(2, 2, 1), Pool(3, 2, 1), Pool(2, 1, 0), Pool(3, 1, 1)])
@pytest.mark.parametrize("size", [(9, 9), (10, 13), (17, 6)])
def test_max_pool_matches_caffe(pool: Pool, size: tuple[int, int]) -> None:
    x = torch.randn(2, *size, dtype=torch.float64)
    got = CaffeMaxPool(pool)(x[None])[0].numpy()
    np.testing.assert_array_equal(got, caffe_pool_reference(x.numpy(), pool))


def test_pool4_padding_follows_train_and_eval_mode() -> None:
    pool = CaffeMaxPool(Pool(2, 1, 0), eval_padding=1)
    x = torch.randn(1, 2, 11, 11, dtype=torch.float64)
    np.testing.assert_array_equal(
        pool.train()(x)[0].numpy(), caffe_pool_reference(x[0].numpy(), Pool(2, 1, 0))
    )
    np.testing.assert_array_equal(
        pool.eval()(x)[0].numpy(), caffe_pool_reference(x[0].numpy(), Pool(2, 1, 1))
    )
    assert pool.train()(x).shape[-1] == 10
    assert pool.eval()(x).shape[-1] == 12


def test_pool5a_is_caffe_average_pooling() -> None:
    trunk = VGGTrunk(build_model("deeplab-largefov-tiny").variant)
    assert trunk.pool5a is not None
    x = torch.randn(3, 7, 10, dtype=torch.float64)
    got = trunk.pool5a(x[None])[0].numpy()
    np.testing.assert_allclose(
        got, caffe_pool_reference(x.numpy(), Pool(3, 1, 1), True), rtol=1e-12, atol=1e-12
    )


def test_trunk_keys_are_caffe_names(tiny) -> None:
    keys = set(VGGTrunk(tiny).state_dict())
    assert keys == {f"{n}.{p}" for n in conv_names() for p in ("weight", "bias")}


def test_trunk_dilates_conv5_only(tiny) -> None:
    trunk = VGGTrunk(tiny)
    for name in conv_names():
        conv = getattr(trunk, name)
        expected = 2 if name.startswith("conv5") else 1
        assert conv.dilation == (expected, expected)
        assert conv.padding == (expected, expected)


def test_trunk_features_have_stride_8(tiny) -> None:
    trunk = VGGTrunk(tiny).eval()
    features, taps = trunk.forward_with_taps(torch.randn(1, 3, 41, 49))
    assert features.shape == (1, 64, 6, 7)
    assert [t.shape[-2:] for t in taps] == [(41, 49), (21, 25), (11, 13), (6, 7), (6, 7)]


# --- the hole algorithm is exact (paper section 3.1, Fig. 1) ---------------------------


def zero_inserted(weight: torch.Tensor, rate: int) -> torch.Tensor:
    """The same filter 'with zeros inserted' between its taps: (O,I,k,k) -> (O,I,K,K)."""
    o, i, k, _ = weight.shape
    big = torch.zeros(o, i, rate * (k - 1) + 1, rate * (k - 1) + 1, dtype=weight.dtype)
    big[:, :, ::rate, ::rate] = weight
    return big


@pytest.mark.parametrize(("layer", "rate"), [("conv5_1", 2), ("fc6", 12)])
def test_dilated_conv_equals_zero_inserted_filter(layer: str, rate: int) -> None:
    model = build_model("deeplab-largefov-tiny").double()
    conv = getattr(model, layer)
    assert conv.dilation == (rate, rate)
    x = torch.randn(1, conv.in_channels, 30, 27, dtype=torch.float64)
    reference = F.conv2d(x, zero_inserted(conv.weight, rate), conv.bias, padding=conv.padding)
    torch.testing.assert_close(conv(x), reference, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("layer", "rate"), [("conv5_1", 2), ("fc6", 12)])
def test_dilated_conv_equals_undilated_filter_on_sparse_input(layer: str, rate: int) -> None:
    """Sample the input every `rate` pixels from offset (a, b), convolve with the intact
    filter, and the results interleave into the dilated output (the 'input stride')."""
    model = build_model("deeplab-largefov-tiny").double()
    conv = getattr(model, layer)
    x = torch.randn(1, conv.in_channels, 3 * rate + 1, 2 * rate + 3, dtype=torch.float64)
    dense = conv(x)
    k = conv.kernel_size[0]
    for a in range(rate):
        for b in range(rate):
            sparse = x[:, :, a::rate, b::rate]
            small = F.conv2d(sparse, conv.weight, conv.bias, padding=(k - 1) // 2)
            torch.testing.assert_close(dense[:, :, a::rate, b::rate], small, rtol=1e-10, atol=1e-10)
