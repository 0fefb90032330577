"""Whole-image inference (paper sections 3 and 4): padding, Caffe's x8 interpolation, crop, CRF."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deeplab.crf import CRFParams, dense_crf_from_logits
from deeplab.data import SyntheticScenes
from deeplab.models import DeepLab, build_model, get_variant, load_network, to_model_input
from deeplab.predict import (
    Predictor,
    full_resolution,
    pad_input,
    padded_size,
    refine,
    upsample_logits,
)

# One thread for torch and numba (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


class CellStub(nn.Module):
    """Stride-8 "network" with known output: cell (i, j) of class c is ``c * 1000 + 10 * i
    + j`` (+ 0.001 * the input at pixel (8i, 8j), channel 0, so padding is visible).
    Records every input it sees."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        b, _, h, w = x.shape
        oh, ow = (h - 1) // 8 + 1, (w - 1) // 8 + 1  # cells centred on pixels 0, 8, ...
        i = torch.arange(oh, dtype=torch.float32).view(1, 1, oh, 1)
        j = torch.arange(ow, dtype=torch.float32).view(1, 1, 1, ow)
        c = torch.arange(self.num_classes, dtype=torch.float32).view(1, -1, 1, 1)
        return (c * 1000 + 10 * i + j + 0.001 * x[:, :1, ::8, ::8]).expand(b, -1, -1, -1)


def test_padded_size_is_next_8k_plus_1_or_fixed() -> None:
    assert padded_size(321, 321) == (321, 321)
    assert padded_size(200, 375) == (201, 377)
    assert padded_size(1, 9) == (1, 9)
    assert padded_size(500, 375, pad_to=513) == (513, 513)
    assert padded_size(10, 20, pad_to=(33, 41)) == (33, 41)
    with pytest.raises(ValueError, match="larger than pad_to"):
        padded_size(514, 10, pad_to=513)


def test_upsampling_is_caffe_interp_with_zoom_8() -> None:
    g = torch.Generator().manual_seed(0)
    cells = torch.randn(4, 6, 5, generator=g)
    up = upsample_logits(cells)
    # Caffe: out = in + (in - 1)(8 - 1).
    assert up.shape == (4, 6 + 5 * 7, 5 + 4 * 7)
    # Pixel 8i is cell i exactly.
    assert torch.equal(up[:, ::8, ::8], cells)
    # In between: linear in each axis, k/8 of the way to the next cell.
    for k in range(1, 8):
        expect = cells[:, :-1, :] + k / 8 * (cells[:, 1:, :] - cells[:, :-1, :])
        torch.testing.assert_close(up[:, k::8, ::8][:, : cells.shape[1] - 1], expect)
        expect = cells[:, :, :-1] + k / 8 * (cells[:, :, 1:] - cells[:, :, :-1])
        torch.testing.assert_close(up[:, ::8, k::8][:, :, : cells.shape[2] - 1], expect)
    # Bilinear: the centre of four cells is their mean.
    torch.testing.assert_close(up[:, 4, 4], cells[:, :2, :2].mean(dim=(1, 2)))


def test_upsampling_crops_top_left_and_keeps_leading_dims() -> None:
    cells = torch.randn(2, 3, 4, 4)
    up = upsample_logits(cells, (20, 17))
    assert up.shape == (2, 3, 20, 17)
    torch.testing.assert_close(up, upsample_logits(cells)[..., :20, :17])
    with pytest.raises(ValueError, match="smaller than the image"):
        upsample_logits(cells, (26, 10))


def test_pad_input_pads_bottom_right_with_zero_the_mean() -> None:
    x = torch.randn(1, 3, 5, 7)
    y = pad_input(x, (9, 9))
    assert torch.equal(y[..., :5, :7], x)
    assert torch.count_nonzero(y[..., 5:, :]) == 0 and torch.count_nonzero(y[..., :, 7:]) == 0
    with pytest.raises(ValueError):
        pad_input(x, (4, 9))


@pytest.mark.parametrize("pad_to", [None, 97])
def test_predictor_geometry_with_a_stub(pad_to: int | None) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (43, 60, 3), dtype=np.uint8)
    stub = CellStub()
    predictor = Predictor(stub, pad_to=pad_to)
    logits = predictor.logits(image)
    assert logits.shape == (3, 43, 60) and logits.dtype == np.float32

    # The network saw the Caffe-convention image, padded bottom/right with zeros (the mean).
    seen = stub.seen[-1]
    expect_hw = (97, 97) if pad_to else (49, 65)
    assert tuple(seen.shape[-2:]) == expect_hw
    rgb = torch.from_numpy(image).permute(2, 0, 1)[None]
    torch.testing.assert_close(seen[..., :43, :60], to_model_input(rgb))
    assert torch.count_nonzero(seen[..., 43:, :]) == 0
    assert torch.count_nonzero(seen[..., :, 60:]) == 0

    # Pixel (8i, 8j) of the full-resolution scores is cell (i, j).
    cells = predictor.stride8_logits(image)
    np.testing.assert_array_equal(logits[:, ::8, ::8], cells[:, :6, :8])
    assert logits[2, 16, 24] == pytest.approx(2000 + 20 + 3 + 0.001 * seen[0, 0, 16, 24].item())
    # Half-way between cells (4, 4) px: the mean of the four cells.
    assert logits[1, 4, 4] == pytest.approx(cells[1, :2, :2].mean(), abs=1e-3)
    # The label is the argmax: class 2 everywhere for this stub.
    labels = predictor.predict(image)
    assert labels.shape == (43, 60) and labels.dtype == np.uint8 and (labels == 2).all()


def test_padding_changes_nothing_in_the_interior_of_a_trained_network() -> None:
    # With non-zero biases the padded border carries features, but only pixels within the
    # receptive field (435 px for the LargeFOV topology, half-width 217) of it can notice.
    torch.manual_seed(0)
    model = build_model("deeplab-largefov-tiny", num_classes=3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.5, 0.5)
    image = np.random.default_rng(3).integers(0, 256, (329, 329, 3), dtype=np.uint8)
    plain = Predictor(model).logits(image)
    padded = Predictor(model, pad_to=(553, 553)).logits(image)
    interior = (slice(None), slice(0, 329 - 230), slice(0, 329 - 230))
    scale = np.abs(plain).max()
    np.testing.assert_allclose(padded[interior], plain[interior], rtol=1e-4, atol=1e-5 * scale)
    # Near the padded border they do differ: the test can see a difference.
    assert np.abs(padded[:, -8:, -8:] - plain[:, -8:, -8:]).max() > 1e-3 * scale


def test_predict_with_the_crf_is_the_argmax_of_its_marginals() -> None:
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (33, 41, 3), dtype=np.uint8)
    torch.manual_seed(0)
    model = build_model("deeplab-largefov-tiny", num_classes=3)
    params = CRFParams(w1=4, theta_alpha=10, theta_beta=5, iterations=3)
    predictor = Predictor(model, crf=params)
    logits = predictor.logits(image)
    expect = dense_crf_from_logits(image, logits, params).argmax(0)
    np.testing.assert_array_equal(predictor.predict(image), expect)
    np.testing.assert_array_equal(predictor.predict(image, use_crf=False), logits.argmax(0))
    np.testing.assert_array_equal(refine(image, logits, None), logits.argmax(0))


def test_predictor_rejects_bad_images() -> None:
    predictor = Predictor(CellStub())
    with pytest.raises(ValueError, match="uint8"):
        predictor.logits(np.zeros((9, 9, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        predictor.logits(np.zeros((9, 9), dtype=np.uint8))


def test_logits_use_the_networks_released_test_path() -> None:
    """LargeFOV-like nets: the x8-interpolated stride-8 scores, exactly as before. DeepLab:
    its test net's fc8_crop (7 leading pixels dropped). MSc: the full-resolution fusion,
    which is not the upsampled stride-8 sum."""
    image = np.random.default_rng(0).integers(0, 256, (30, 45, 3), dtype=np.uint8)
    tiny = build_model("deeplab-largefov-tiny", num_classes=4)
    predictor = Predictor(tiny)
    plain = upsample_logits(torch.from_numpy(predictor.stride8_logits(image)), (30, 45))
    np.testing.assert_array_equal(predictor.logits(image), plain.numpy())

    narrow = {"channels": (4, 4, 8, 8, 8), "fc_channels": 8, "msc_channels": 4}
    deeplab = DeepLab(dataclasses.replace(get_variant("deeplab"), **narrow), 3)
    predictor = Predictor(deeplab, pad_to=514)
    stride8 = torch.from_numpy(predictor.stride8_logits(image))
    shifted = upsample_logits(stride8)[:, 7:37, 7:52]
    np.testing.assert_allclose(predictor.logits(image), shifted.numpy(), rtol=1e-5, atol=1e-5)

    msc = DeepLab(dataclasses.replace(get_variant("deeplab-msc"), **narrow), 3)
    with torch.no_grad():  # branches as large as fc8 (their init is std 0.001)
        for param in msc.branch_parameters():
            param.normal_(0.0, 0.3)
    predictor = Predictor(msc)
    full = predictor.logits(image)
    assert full.shape == (3, 30, 45)
    stride8 = upsample_logits(torch.from_numpy(predictor.stride8_logits(image)), (30, 45))
    assert np.abs(full - stride8.numpy()).max() > 0.01 * np.abs(full).max()
    with pytest.raises(RuntimeError, match="eval"):
        msc.train().image_scores(torch.zeros(1, 3, 33, 33))


def test_scores_kept_follow_the_released_test_path() -> None:
    """What evaluation saves and the web demo caches: stride-8 scores where upsampling is
    the released test, the image-grid scores of DeepLab (fc8_crop) and MSc (fusion)."""
    image = np.random.default_rng(1).integers(0, 256, (30, 45, 3), dtype=np.uint8)
    tiny = Predictor(build_model("deeplab-largefov-tiny", num_classes=4))
    kept = tiny.scores(image)
    assert kept.shape[-2:] == (5, 7)
    np.testing.assert_array_equal(full_resolution(kept, (30, 45)).numpy(), tiny.logits(image))

    narrow = {"channels": (4, 4, 8, 8, 8), "fc_channels": 8, "msc_channels": 4}
    for name in ("deeplab", "deeplab-msc"):
        predictor = Predictor(DeepLab(dataclasses.replace(get_variant(name), **narrow), 3))
        kept = predictor.scores(image)
        assert kept.shape == (3, 30, 45)
        full = full_resolution(kept, (30, 45)).numpy()
        np.testing.assert_array_equal(full, predictor.logits(image))


def test_evaluation_scores_deeplab_on_the_image_grid() -> None:
    """`deeplab evaluate` of DeepLab scores its cropped test-net output, not the stride-8
    map upsampled without the crop (7 px off)."""
    from deeplab.evaluate import score_image

    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (30, 45, 3), dtype=np.uint8)
    narrow = {"channels": (4, 4, 8, 8, 8), "fc_channels": 8, "msc_channels": 4}
    torch.manual_seed(0)
    model = DeepLab(dataclasses.replace(get_variant("deeplab"), **narrow), 3)
    with torch.no_grad():  # scores that change across the image, so a shift shows
        for param in model.parameters():
            param.normal_(0.0, 0.2)
    predictor = Predictor(model)
    label = predictor.logits(image).argmax(0).astype(np.uint8)  # the test net's own labels
    assert len(np.unique(label)) > 1
    kept = score_image(image, label, predictor.scores(image), 3)["plain"]
    assert np.trace(kept) == label.size  # every pixel right
    shifted = score_image(image, label, predictor.stride8_logits(image), 3)["plain"]
    assert np.trace(shifted) < label.size


def test_segment_crf_none_is_the_network_argmax(tiny_weights: Path) -> None:
    net = load_network(None, tiny_weights)
    image = SyntheticScenes(1, size=(40, 56), seed=2)[0].image
    plain = Predictor(net.model).segment(image, keep_probs=True)
    expected = Predictor(net.model).predict(image, use_crf=False)
    np.testing.assert_array_equal(plain.labels, expected)
    np.testing.assert_array_equal(plain.dcnn_labels, expected)
    assert plain.probs is not None and plain.probs.shape == (6, 40, 56)
    refined = Predictor(net.model, crf=CRFParams(iterations=5)).segment(image)
    np.testing.assert_array_equal(refined.dcnn_labels, expected)
    assert refined.labels.shape == expected.shape and refined.probs is None


def test_refine_downscales_big_images_for_the_crf_and_reports_each_iteration() -> None:
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    scores = rng.normal(size=(3, 30, 40)).astype(np.float32)
    params = CRFParams(w1=4, theta_alpha=10, theta_beta=5, iterations=3)
    full = refine(image, scores, params)
    np.testing.assert_array_equal(refine(image, scores, params, max_pixels=1200), full)
    seen: list[int] = []
    labels, probs = refine(
        image,
        scores,
        params,
        max_pixels=300,
        callback=lambda it, q: seen.append(it),
        keep_probs=True,
    )
    assert seen == [0, 1, 2]
    assert labels.shape == (30, 40) and labels.dtype == np.uint8
    assert probs.shape == (3, 30, 40)
    np.testing.assert_array_equal(probs.argmax(0), labels)

    def stop(it: int, q: np.ndarray) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        refine(image, scores, params, callback=stop)
