from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deeplab.data.sample import Sample
from deeplab.data.transforms import (
    MEAN_BGR,
    EvalTransform,
    TrainTransform,
    from_caffe,
    pad_bottom_right,
    random_crop_offsets,
    subsample_label,
    subsampled_size,
    to_caffe,
)
from deeplab.data.voc import VOCSegmentation


def coded_sample(h: int, w: int, seed: int = 0) -> Sample:
    """Image whose pixels say where they came from and which label they carry.

    R = label * 10 (labels 0..20), G = column % 256, B = row % 256.
    """
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 21, (h, w)).astype(np.uint8)
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[..., 0] = label * 10
    image[..., 1] = (np.arange(w) % 256)[None, :]
    image[..., 2] = (np.arange(h) % 256)[:, None]
    return Sample("coded", image, label)


def test_caffe_convention_exact_values() -> None:
    image = np.array([[[10, 20, 30], [255, 0, 128]]], dtype=np.uint8)  # (1, 2, 3) RGB
    x = to_caffe(image)
    assert x.shape == (3, 1, 2) and x.dtype == np.float32
    b, g, r = MEAN_BGR
    np.testing.assert_allclose(x[:, 0, 0], [30 - b, 20 - g, 10 - r], rtol=0, atol=1e-5)
    np.testing.assert_allclose(x[:, 0, 1], [128 - b, 0 - g, 255 - r], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(from_caffe(x), image)


def test_caffe_round_trip_real_image(voc_mini: Path) -> None:
    image = VOCSegmentation(voc_mini, "train")[0].image
    np.testing.assert_array_equal(from_caffe(to_caffe(image)), image)
    import torch

    np.testing.assert_array_equal(from_caffe(torch.from_numpy(to_caffe(image))), image)
    with pytest.raises(ValueError, match="uint8"):
        to_caffe(image.astype(np.float32))


def test_subsampling_picks_exact_pixels_321_to_41() -> None:
    rng = np.random.default_rng(0)
    label = rng.integers(0, 256, (321, 321)).astype(np.uint8)
    small = subsample_label(label)
    assert small.shape == (41, 41)
    for i in range(41):
        for j in range(41):
            assert small[i, j] == label[8 * i, 8 * j]
    assert subsampled_size(321) == 41 and subsampled_size(306, offset=1) == 39


def test_subsampling_never_blends() -> None:
    # Each 8x8 cell holds 64 distinct values; picking (offset, offset) gives one value only.
    r, c = np.meshgrid(np.arange(321), np.arange(321), indexing="ij")
    label = ((r % 8) * 8 + (c % 8)).astype(np.uint8)
    assert set(np.unique(subsample_label(label, 8, 0)).tolist()) == {0}
    deeplab = subsample_label(label[:306, :306], 8, 1)  # the `deeplab` variant: 1, 9, ...
    assert deeplab.shape == (39, 39) and set(np.unique(deeplab).tolist()) == {9}
    with pytest.raises(ValueError):
        subsample_label(label, 8, 8)


def test_train_transform_pads_small_images() -> None:
    sample = coded_sample(100, 120)
    image, label = TrainTransform(crop_size=321, label_stride=1, mirror=False)(
        sample, np.random.default_rng(0)
    )
    assert image.shape == (3, 321, 321) and label.shape == (321, 321)
    assert image.dtype == np.float32 and label.dtype == np.int64
    # A 321 crop of a 321-padded image has only one place: the original sits top-left.
    np.testing.assert_array_equal(label[:100, :120], sample.label)
    np.testing.assert_array_equal(from_caffe(image[:, :100, :120]), sample.image)
    assert (image[:, 100:, :] == 0).all() and (image[:, :, 120:] == 0).all()  # the mean
    assert (label[100:, :] == 255).all() and (label[:, 120:] == 255).all()


def test_pad_bottom_right_only_grows() -> None:
    a = np.ones((2, 3, 4), dtype=np.float32)
    p = pad_bottom_right(a, 5, 2, -1.0)
    assert p.shape == (2, 5, 4)
    assert (p[:, 3:] == -1).all() and (p[:, :3] == 1).all()
    assert pad_bottom_right(a, 1, 1, 0.0) is a


def test_train_transform_subsamples_after_crop() -> None:
    sample = coded_sample(321, 321, seed=4)
    _, label = TrainTransform(mirror=False)(sample, np.random.default_rng(1))
    np.testing.assert_array_equal(label, sample.label[::8, ::8])
    sample306 = coded_sample(306, 306, seed=5)
    _, label306 = TrainTransform(crop_size=306, label_offset=1, mirror=False)(
        sample306, np.random.default_rng(1)
    )
    np.testing.assert_array_equal(label306, sample306.label[1::8, 1::8])


def test_mirror_keeps_image_and_label_together() -> None:
    sample = coded_sample(150, 250, seed=2)  # < 256 columns: G codes them without wrapping
    transform = TrainTransform(crop_size=(120, 130), label_stride=1)
    flips = 0
    for seed in range(20):
        image, label = transform(sample, np.random.default_rng(seed))
        rgb = from_caffe(image)
        np.testing.assert_array_equal(rgb[..., 0], label * 10)  # label follows its pixel
        cols = rgb[0, :, 1].astype(int)
        step = np.diff(cols)
        assert (step == 1).all() or (step == -1).all()
        flips += int(step[0] == -1)
    assert 3 <= flips <= 17  # both outcomes happen


def test_train_transform_is_deterministic_given_the_generator() -> None:
    sample = coded_sample(300, 400, seed=3)
    t = TrainTransform(crop_size=161)
    a = t(sample, np.random.default_rng(42))
    b = t(sample, np.random.default_rng(42))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    crops = {tuple(from_caffe(t(sample, np.random.default_rng(s))[0])[0, 0, 1:]) for s in range(8)}
    assert len(crops) > 1
    with pytest.raises(ValueError, match="Generator"):
        t(sample)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 60),
    w=st.integers(1, 60),
    ch=st.integers(1, 50),
    cw=st.integers(1, 50),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_crop_is_a_window_of_the_padded_input(
    h: int, w: int, ch: int, cw: int, seed: int
) -> None:
    sample = coded_sample(h, w, seed=seed % 1000)
    image, label = TrainTransform(crop_size=(ch, cw), label_stride=1, mirror=False)(
        sample, np.random.default_rng(seed)
    )
    assert image.shape == (3, ch, cw) and label.shape == (ch, cw)
    valid = label != 255
    rgb = from_caffe(image)
    if valid.any():
        rows, cols = rgb[..., 2][valid].astype(int), rgb[..., 1][valid].astype(int)
        top, left = rows.min(), cols.min()
        assert top <= max(h - ch, 0) and left <= max(w - cw, 0)
        np.testing.assert_array_equal(label[valid], sample.label[rows, cols])
    # Padded pixels are exactly those past the original extent.
    top, left = random_crop_offsets(max(h, ch), max(w, cw), ch, cw, np.random.default_rng(seed))
    r = np.arange(ch)[:, None] + top
    c = np.arange(cw)[None, :] + left
    np.testing.assert_array_equal(~valid, (r >= h) | (c >= w))
    assert (image[:, ~valid] == 0).all()


def test_eval_transform_padding() -> None:
    sample = coded_sample(37, 50)
    image, label = EvalTransform()(sample)
    assert image.shape == (3, 37, 50) and label.shape == (37, 50)
    np.testing.assert_array_equal(label, sample.label)

    image, label = EvalTransform(pad_to=64)(sample)
    assert image.shape == (3, 64, 64) and label.shape == (64, 64)
    assert (label[37:] == 255).all() and (image[:, :, 50:] == 0).all()
    np.testing.assert_array_equal(from_caffe(image[:, :37, :50]), sample.image)

    image, label = EvalTransform(pad_multiple=8, pad_offset=1, pad_label=False)(sample)
    assert image.shape == (3, 41, 57) and label.shape == (37, 50)
    assert EvalTransform(pad_to=513).padded_size(500, 375) == (513, 513)
    assert EvalTransform(pad_multiple=8, pad_offset=1).padded_size(500, 375) == (505, 377)
    assert EvalTransform(pad_multiple=8).padded_size(321, 320) == (328, 320)

    with pytest.raises(ValueError, match="larger than pad_to"):
        EvalTransform(pad_to=(30, 100))(sample)
    with pytest.raises(ValueError, match="not both"):
        EvalTransform(pad_to=64, pad_multiple=8)


def test_train_transform_validation() -> None:
    with pytest.raises(ValueError, match="label_offset"):
        TrainTransform(label_offset=8)
    with pytest.raises(ValueError, match="positive"):
        TrainTransform(crop_size=0)


def test_numpy_and_torch_input_conventions_agree() -> None:
    """The loader's numpy conversion and the networks' torch one are the same function."""
    import torch

    from deeplab.models import to_model_input

    rgb = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    torch_x = to_model_input(torch.from_numpy(rgb).permute(2, 0, 1))
    np.testing.assert_allclose(to_caffe(rgb), torch_x.numpy(), rtol=0, atol=1e-5)
