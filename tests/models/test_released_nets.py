"""The four released DeepLab nets, numerically: a ``.caffemodel`` with the released layer
names converts completely, and the converted model computes what the released prototxt
computes, at test time (full-resolution scores of a padded 375x500 photo) and at train time
(stride-8 scores of a training crop).

The weights are narrow (:data:`released.NARROW`) so that a 513x513 forward pass is cheap;
the released prototxts run as they are (:func:`reference.run_prototxt`, plain torch ops).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch

from deeplab.models import convert_file, get_variant
from deeplab.models.convert import caffe_layer_table
from deeplab.predict import Predictor

from .caffe_proto import caffemodel_bytes
from .reference import run_prototxt
from .released import MAIN, RELEASED, layers, narrow_weights, read_net

REL_TOL = 1e-4  # of the scores' scale (their largest magnitude)


def _output_blob(net, kinds: tuple[str, ...]) -> str:
    """The blob the released net writes out (test: MAT_WRITE) or trains on (the loss)."""
    for layer in layers(net):
        if str(layer.one("type")) in kinds:
            return str(layer.all("bottom")[0])
    raise AssertionError(f"no {kinds} layer")


def _narrow(name: str):
    v = get_variant(name)
    # Dropout off: the train-phase comparison is then deterministic (the reference skips it).
    return dataclasses.replace(
        v, channels=(8, 8, 16, 16, 16), fc_channels=32, msc_channels=8, dropout=0.0
    )


def _close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape
    scale = float(ref.abs().max())
    err = float((ours.double() - ref).abs().max())
    assert scale > 0 and err <= REL_TOL * scale, f"max error {err:.3g}, scale {scale:.3g}"


@pytest.fixture(scope="module", params=MAIN)
def converted(request, tmp_path_factory):
    """(config folder, narrow variant, converted model, reference params) per released net."""
    folder = request.param
    train = read_net(folder, "train")
    weights = narrow_weights(train, np.random.default_rng(13))
    path = tmp_path_factory.mktemp("caffe") / f"{folder}.caffemodel"
    path.write_bytes(caffemodel_bytes(weights))
    variant = _narrow(RELEASED[folder])
    model, report = convert_file(path, variant, 21)
    params = {
        k: (torch.from_numpy(w).double(), torch.from_numpy(b).double())
        for k, (w, b) in weights.items()
    }
    return folder, variant, model, report, params


def test_every_released_tensor_converts(converted) -> None:
    folder, variant, _, report, params = converted
    assert report.missing == [] and report.unexpected == [], report.lines()
    sources = {re.split(r"[.\[]", src)[0] for src, _, _ in report.mapped}
    assert sources == set(params)
    classifier = "fc8_pascal" if folder in ("DeepLab", "DeepLab-MSc") else "fc8_voc12"
    assert (f"{classifier}[0]", "fc8.weight", "") in report.mapped
    assert caffe_layer_table(variant)["fc8"][0] == classifier


def test_test_net_scores_of_a_padded_photo(converted) -> None:
    folder, variant, model, _, params = converted
    test = read_net(folder, "test")
    data = next(m for m in layers(test) if str(m.one("type")) == "IMAGE_SEG_DATA")
    transform = data.sub("transform_param")
    crop = int(transform.one("crop_size"))
    assert crop == variant.test_crop
    image = np.random.default_rng(5).integers(0, 256, (375, 500, 3), dtype=np.uint8)
    ours = Predictor(model, pad_to=crop).logits(image)
    # The released data layer: BGR minus its mean values, placed top-left on a crop x crop
    # canvas of the mean (0 after the subtraction).
    mean = torch.tensor([float(m) for m in transform.all("mean_value")], dtype=torch.float64)
    bgr = torch.from_numpy(image[..., ::-1].copy()).double().permute(2, 0, 1) - mean[:, None, None]
    x = torch.zeros(1, 3, crop, crop, dtype=torch.float64)
    x[0, :, :375, :500] = bgr
    blobs = run_prototxt(test, "TEST", x, params)
    ref = blobs[_output_blob(test, ("MAT_WRITE",))]
    assert ref.shape[-2:] == (crop, crop)  # the released output covers the padded input
    _close(torch.from_numpy(ours), ref[0, :, :375, :500])


def test_train_net_stride8_scores(converted) -> None:
    folder, variant, model, _, params = converted
    train = read_net(folder, "train")
    data = next(
        m
        for m in layers(train)
        if str(m.one("type")) == "IMAGE_SEG_DATA" and m.all("include")[0].one("phase") == "TRAIN"
    )
    crop = int(data.sub("transform_param").one("crop_size"))
    x = torch.randn(2, 3, crop, crop, generator=torch.Generator().manual_seed(3)) * 60
    model.train()
    try:
        with torch.no_grad():
            ours = model(x)
    finally:
        model.eval()
    ref = run_prototxt(train, "TRAIN", x.double(), params)[_output_blob(train, ("SOFTMAX_LOSS",))]
    assert ours.shape[-2:] == (variant.output_size(crop, training=True),) * 2
    _close(ours, ref)
