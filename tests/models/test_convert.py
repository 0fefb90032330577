"""Key mapping, decimation and input folding (paper sections 3.1-3.2)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)

from deeplab.models import DeepLab, get_variant, to_model_input
from deeplab.models.convert import (
    TORCHVISION_MEAN,
    TORCHVISION_STD,
    caffe_layer_table,
    decimate_fc,
    decimation_taps,
    fold_torchvision_input,
    map_caffe,
    map_deeplab,
    map_torchvision_vgg16,
    target_shapes,
)

from .reference import reference_largefov, torchvision_vgg16_state


def test_decimation_taps() -> None:
    assert decimation_taps(7, 7) == list(range(7))
    assert decimation_taps(7, 4) == [0, 2, 4, 6]
    assert decimation_taps(7, 3) == [0, 3, 6]
    assert decimation_taps(7, 1) == [3]
    with pytest.raises(ValueError):
        decimation_taps(3, 4)


def test_decimate_fc_picks_taps_and_every_nth_channel() -> None:
    w = torch.randn(16, 6, 7, 7)
    b = torch.randn(16)
    w2, b2 = decimate_fc(w, b, kernel=3, out_channels=4, in_step=2)
    assert w2.shape == (4, 3, 3, 3)
    for o in range(4):
        for i in range(3):
            for y, ty in enumerate((0, 3, 6)):
                for x, tx in enumerate((0, 3, 6)):
                    assert w2[o, i, y, x] == w[4 * o, 2 * i, ty, tx]
    torch.testing.assert_close(b2, b[::4])
    with pytest.raises(ValueError):
        decimate_fc(w, b, kernel=3, out_channels=5)


def test_fold_is_exact_inside_and_differs_only_at_the_border() -> None:
    conv = torch.nn.Conv2d(3, 8, 3, padding=1).double()
    rgb = torch.rand(1, 3, 12, 15, dtype=torch.float64) * 255
    mean = torch.tensor(TORCHVISION_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(TORCHVISION_STD, dtype=torch.float64).view(1, 3, 1, 1)
    expected = conv(((rgb / 255) - mean) / std)
    w, b = fold_torchvision_input(conv.weight, conv.bias)
    got = F.conv2d(to_model_input(rgb).double(), w, b, padding=1)
    torch.testing.assert_close(
        got[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], rtol=1e-10, atol=1e-9
    )
    # at the border the source sees zero padding, the folded conv a Caffe-convention zero
    assert (got - expected)[..., 0, :].abs().max() > 1e-3
    assert (got - expected)[..., :, -1].abs().max() > 1e-3


def test_full_torchvision_vgg16_maps_onto_every_variant() -> None:
    state = torchvision_vgg16_state(device="meta")
    for name in (
        "deeplab",
        "deeplab-7x7",
        "deeplab-4x4",
        "deeplab-largefov",
        "deeplab-msc",
        "deeplab-msc-largefov",
    ):
        v = get_variant(name)
        out, report = map_torchvision_vgg16(state, name, 21)
        shapes = target_shapes(name, 21)
        assert all(tuple(t.shape) == shapes[k] for k, t in out.items())
        assert out["fc6.weight"].shape == (v.fc_channels, 512, v.fc6_kernel, v.fc6_kernel)
        assert out["fc7.weight"].shape == (v.fc_channels, v.fc_channels, 1, 1)
        assert {k for k, _, _ in report.unexpected} == {"classifier.6.weight", "classifier.6.bias"}
        expected_missing = {k for k in shapes if k.startswith(("fc8.", "msc."))}
        assert set(report.missing) == expected_missing
        assert len(report.mapped) == 30
        decimated = name != "deeplab-7x7"
        assert any("decimated" in note for _, _, note in report.mapped) == decimated


def test_torchvision_conversion_gives_the_source_logits() -> None:
    """Narrow torchvision VGG-16 (fc 512) -> deeplab-largefov-tiny (fc 128, every 4th
    channel, 7x7 -> 3x3 taps) vs. the source weights applied directly: fc6 as the full 7x7
    kernel with zeros in the dropped taps at dilation 4 (= 3x3 at dilation 12)."""
    torch.manual_seed(1)
    tv = {k: v.double() for k, v in torchvision_vgg16_state((16, 32, 64, 64, 64), 512).items()}
    tiny = get_variant("deeplab-largefov-tiny")
    mapped, report = map_torchvision_vgg16(tv, tiny, num_classes=5)
    assert report.missing == ["fc8.weight", "fc8.bias"]
    model = DeepLab(tiny, 5).double().eval()
    model.load_state_dict(mapped, strict=False)

    params = {}
    convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    names = [f"conv{b}_{i}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1)]
    for index, name in zip(convs, names, strict=True):
        params[name] = (tv[f"features.{index}.weight"], tv[f"features.{index}.bias"])
    fc6 = tv["classifier.0.weight"].reshape(512, 64, 7, 7)[::4].clone()
    keep = torch.zeros(7, 7, dtype=torch.bool)
    keep[::3, ::3] = True
    fc6[:, :, ~keep] = 0
    params["fc6"] = (fc6, tv["classifier.0.bias"][::4])
    params["fc7"] = (tv["classifier.3.weight"][::4, ::4, None, None], tv["classifier.3.bias"][::4])
    params["fc8"] = (model.fc8.weight, model.fc8.bias)  # new layer: no source

    rgb = torch.rand(2, 3, 37, 45, dtype=torch.float64) * 255
    mean = torch.tensor(TORCHVISION_MEAN, dtype=torch.float64)
    std = torch.tensor(TORCHVISION_STD, dtype=torch.float64)
    x_tv = (rgb / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    # the torchvision value of a Caffe-convention zero (see fold_torchvision_input)
    caffe_zero = (torch.tensor((122.675, 116.669, 104.008), dtype=torch.float64) / 255 - mean) / std
    with torch.no_grad():
        expected = reference_largefov(
            x_tv, params, fc6_dilation=4, fc6_padding=12, pad_value=caffe_zero
        )
        got = model(to_model_input(rgb).double())
    assert got.shape == (2, 5, 6, 7)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


def test_shape_conflicts_raise_value_error() -> None:
    narrow = torchvision_vgg16_state((16, 32, 64, 64, 64), 512)
    with pytest.raises(ValueError, match=r"features\.2\.weight -> conv1_2\.weight: expected"):
        map_torchvision_vgg16(narrow, "deeplab-largefov", 21)


def test_caffe_layer_table() -> None:
    table = caffe_layer_table("deeplab-msc-largefov")
    assert table["conv3_2"] == ("conv3_2",)
    assert table["fc8"] == ("fc8_voc12", "fc8_pascal", "fc8")
    assert table["msc.0.fc1"] == ("data_conv",)
    assert table["msc.4.fc3"] == ("pool4_ms",)
    assert caffe_layer_table("deeplab-msc")["fc8"][0] == "fc8_pascal"
    assert caffe_layer_table("deeplab")["fc8"][0] == "fc8_pascal"
    assert "msc.0.fc1" not in caffe_layer_table("deeplab-largefov")
    assert len(table) == 16 + 15


def test_caffe_init_net_with_imagenet_classifier_leaves_fc8_fresh() -> None:
    shapes = target_shapes("deeplab-largefov", 21)
    layers = {
        name.removesuffix(".weight"): [
            torch.empty(shape, device="meta"),
            torch.empty(shape[0], device="meta"),
        ]
        for name, shape in shapes.items()
        if name.endswith(".weight") and name != "fc8.weight"
    }
    layers["fc8"] = [torch.empty(1000, 1024, 1, 1, device="meta"), torch.empty(1000, device="meta")]
    out, report = map_caffe(layers, "deeplab-largefov", 21)
    assert report.missing == ["fc8.weight", "fc8.bias"]
    assert [k for k, _, _ in report.unexpected] == ["fc8"]
    assert "1000" in report.unexpected[0][2]
    assert len(out) == 30


def test_caffe_full_vgg16_innerproduct_fc_layers_are_decimated() -> None:
    """VGG_ILSVRC_16_layers stores fc6/fc7 as InnerProduct blobs, legacy 4-D (1,1,O,I)."""
    tv = torchvision_vgg16_state(device="meta")
    layers = {
        "fc6": [tv["classifier.0.weight"][None, None], tv["classifier.0.bias"]],
        "fc7": [tv["classifier.3.weight"], tv["classifier.3.bias"][None, None, None]],
    }
    out, report = map_caffe(layers, "deeplab-largefov", 21)
    assert out["fc6.weight"].shape == (1024, 512, 3, 3)
    assert out["fc7.weight"].shape == (1024, 1024, 1, 1)
    assert out["fc7.bias"].shape == (1024,)
    assert "decimated" in dict((d, n) for _, d, n in report.mapped)["fc6.weight"]


def test_map_deeplab_strips_module_prefix_and_checks_shapes() -> None:
    model = DeepLab("deeplab-largefov-tiny", 3)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    out, report = map_deeplab(state, "deeplab-largefov-tiny", 3)
    assert set(out) == set(model.state_dict())
    assert report.missing == [] and report.unexpected == []
    with pytest.raises(ValueError, match=r"fc8\.weight: expected \(4, 128, 1, 1\), got"):
        map_deeplab(state, "deeplab-largefov-tiny", 4)


def test_report_lines_list_every_tensor() -> None:
    narrow = torchvision_vgg16_state((16, 32, 64, 64, 64), 512)
    _, report = map_torchvision_vgg16(narrow, "deeplab-largefov-tiny", 21)
    lines = report.lines(target_shapes("deeplab-largefov-tiny", 21))
    assert lines[0] == "source format: torchvision-vgg16"
    assert sum(line.startswith("mapped") for line in lines) == 30
    assert "missing     fc8.weight (fresh initialisation)" in lines
    assert any(line.startswith("unexpected  classifier.6.weight (1000, 512)") for line in lines)
    assert lines[-1] == "30 mapped, 2 missing, 2 unexpected"


def test_same_size_but_wrong_layout_is_never_reshaped() -> None:
    shapes = target_shapes("deeplab-largefov-tiny", 21)
    layers = {
        "conv1_1": [torch.zeros(3, 16, 3, 3), torch.zeros(16)],  # (I,O,k,k), same numel
        "fc7": [torch.zeros(128, 128, 1, 1), torch.zeros(128)],
    }
    assert shapes["conv1_1.weight"] == (16, 3, 3, 3)
    with pytest.raises(
        ValueError,
        match=r"conv1_1\.weight: expected \(16, 3, 3, 3\), "
        r"got \(3, 16, 3, 3\)",
    ):
        map_caffe(layers, "deeplab-largefov-tiny", 21)
