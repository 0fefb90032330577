"""The .caffemodel reader: files written by protobuf itself, converted logits, bad input."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deeplab.models import DeepLab, get_variant, parse_caffemodel, read_caffemodel
from deeplab.models.convert import map_caffe, target_shapes
from deeplab.models.variants import MSC_TAPS

from .caffe_proto import caffe_messages, caffemodel_bytes, fill_blob
from .reference import reference_largefov


def _caffe_layers(
    variant, num_classes: int, rng: np.random.Generator, classifier: str = "fc8_voc12"
) -> dict[str, list[np.ndarray]]:
    """Random weights under Caffe names for ``variant`` (fc8 as ``classifier``)."""
    layers: dict[str, list[np.ndarray]] = {}
    for key, shape in target_shapes(variant, num_classes).items():
        layer, kind = key.rsplit(".", 1)
        if layer.startswith("msc."):
            _, k, fc = layer.split(".")
            layer = f"{MSC_TAPS[int(k)]}_{('conv', 'fc', 'ms')[int(fc[-1]) - 1]}"
        elif layer == "fc8":
            layer = classifier
        fan_in = int(np.prod(shape[1:])) if kind == "weight" else 1
        scale = (2 / fan_in) ** 0.5 if kind == "weight" else 0.1
        layers.setdefault(layer, []).append((rng.standard_normal(shape) * scale).astype(np.float32))
    return layers


@pytest.fixture
def small_net() -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return {
        "conv1_1": [
            rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
            rng.standard_normal(4).astype(np.float32),
        ],
        "fc8_voc12": [
            rng.standard_normal((21, 8, 1, 1)).astype(np.float32),
            rng.standard_normal(21).astype(np.float32),
        ],
    }


@pytest.mark.parametrize("v1", [True, False])
@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("legacy", [True, False])
def test_reads_what_protobuf_wrote(small_net, v1: bool, packed: bool, legacy: bool) -> None:
    data = caffemodel_bytes(small_net, v1=v1, packed=packed, legacy=legacy)
    layers = parse_caffemodel(data)
    assert list(layers) == ["conv1_1", "fc8_voc12"]  # blob-less layers are left out
    for name, blobs in small_net.items():
        assert len(layers[name]) == 2
        for got, want in zip(layers[name], blobs, strict=True):
            expected_shape = ((1,) * (4 - want.ndim) + want.shape) if legacy else want.shape
            assert got.shape == expected_shape
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got.reshape(want.shape), want)


def test_reads_double_data_and_skips_diff(small_net) -> None:
    msgs = caffe_messages(True)
    net = msgs["NetParameter"]()
    layer = net.layer.add(name="conv1_1")
    fill_blob(layer.blobs.add(), small_net["conv1_1"][0], double=True)
    blob = layer.blobs.add()
    fill_blob(blob, small_net["conv1_1"][1])
    blob.diff.extend([9.0] * 4)
    layers = parse_caffemodel(net.SerializeToString())
    np.testing.assert_array_equal(layers["conv1_1"][0], small_net["conv1_1"][0])
    np.testing.assert_array_equal(layers["conv1_1"][1], small_net["conv1_1"][1])


def test_read_caffemodel_file(tmp_path, small_net) -> None:
    path = tmp_path / "net.caffemodel"
    path.write_bytes(caffemodel_bytes(small_net))
    assert set(read_caffemodel(path)) == {"conv1_1", "fc8_voc12"}
    path.write_bytes(caffemodel_bytes(small_net)[:-3])
    with pytest.raises(ValueError, match=r"net\.caffemodel: malformed \.caffemodel"):
        read_caffemodel(path)


@pytest.mark.parametrize("v1", [True, False])
def test_converted_caffe_model_gives_the_reference_logits(tiny, v1: bool) -> None:
    layers = _caffe_layers(tiny, 21, np.random.default_rng(1))
    parsed = parse_caffemodel(caffemodel_bytes(layers, v1=v1, legacy=v1))
    mapped, report = map_caffe(
        {k: [torch.from_numpy(b) for b in v] for k, v in parsed.items()}, tiny, 21
    )
    assert report.missing == [] and report.unexpected == []
    assert ("fc8_voc12[0]", "fc8.weight", "") in report.mapped
    model = DeepLab(tiny, 21).double().eval()
    model.load_state_dict(mapped)
    params = {
        k: (torch.from_numpy(w).double(), torch.from_numpy(b).double())
        for k, (w, b) in layers.items()
    }
    params["fc8"] = params.pop("fc8_voc12")
    x = torch.randn(1, 3, 41, 50, dtype=torch.float64) * 60  # already Caffe convention
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_largefov(x, params), rtol=1e-9, atol=1e-9)


def test_converted_msc_model_gives_the_reference_logits(tiny_msc) -> None:
    layers = _caffe_layers(tiny_msc, 4, np.random.default_rng(2), classifier="fc8")
    assert {"data_conv", "pool3_fc", "pool4_ms"} <= set(layers)
    parsed = parse_caffemodel(caffemodel_bytes(layers))
    mapped, report = map_caffe(
        {k: [torch.from_numpy(b) for b in v] for k, v in parsed.items()}, tiny_msc, 4
    )
    assert report.missing == [] and report.unexpected == []
    model = DeepLab(tiny_msc, 4).double().eval()
    model.load_state_dict(mapped)
    params = {
        k: (torch.from_numpy(w).double(), torch.from_numpy(b).double())
        for k, (w, b) in layers.items()
    }
    x = torch.randn(1, 3, 49, 41, dtype=torch.float64) * 60  # 8k+1: Caffe's own geometry
    with torch.no_grad():
        expected = reference_largefov(x, params, branch_strides=(8, 4, 2, 1, 1))
        torch.testing.assert_close(model(x), expected, rtol=1e-9, atol=1e-9)


def test_wrong_variant_is_a_value_error_listing_tensors(tiny) -> None:
    layers = _caffe_layers(tiny, 21, np.random.default_rng(3))
    tensors = {k: [torch.from_numpy(b) for b in v] for k, v in layers.items()}
    with pytest.raises(
        ValueError,
        match=r"conv1_1\[0\] -> conv1_1\.weight: expected "
        r"\(64, 3, 3, 3\), got \(16, 3, 3, 3\)",
    ):
        map_caffe(tensors, get_variant("deeplab-largefov"), 21)


# --- malformed input: ValueError, quickly, without large allocations ----------------------


def _valid_bytes() -> bytes:
    rng = np.random.default_rng(4)
    layers = {
        "conv1_1": [
            rng.standard_normal((2, 3, 3, 3)).astype(np.float32),
            rng.standard_normal(2).astype(np.float32),
        ]
    }
    return caffemodel_bytes(layers, packed=False, extra_layers=("data",))


def test_every_truncation_is_rejected_or_a_consistent_prefix() -> None:
    data = _valid_bytes()
    full = parse_caffemodel(data)
    for n in range(len(data)):
        try:
            layers = parse_caffemodel(data[:n])
        except ValueError:
            continue
        # a cut at a message boundary is itself a valid (smaller) net
        for name, blobs in layers.items():
            for got, want in zip(blobs, full[name], strict=False):
                np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no layer with weights"),
        (b"\x12", "truncated varint"),
        (b"\x12\xff\xff\xff\xff\xff\xff\xff\xff\x7f", "only 0 remain"),  # 2^63-byte layer
        (b"\x12" + b"\xff" * 11, "longer than 10 bytes"),
        (b"\x0b\x0c", "wire type 3"),  # a group
        (b"\x00\x00", "field number 0"),
        (b"\x15\x00\x00", "needs 4 bytes"),
        (b"\x10\x01", r"NetParameter\.layers has wire type 0"),
    ],
)
def test_malformed_bytes_raise_value_error(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_caffemodel(data)


def test_declared_shape_is_never_trusted() -> None:
    msgs = caffe_messages(True)
    net = msgs["NetParameter"]()
    blob = net.layer.add(name="conv1_1").blobs.add()
    blob.shape.dim.extend([1 << 40, 1 << 40])  # 2^80 values declared, 2 present
    blob.data.extend([1.0, 2.0])
    with pytest.raises(ValueError, match="needs 1208925819614629174706176 values, has 2"):
        parse_caffemodel(net.SerializeToString())
    blob.ClearField("shape")
    blob.shape.dim.extend([-2, -1])
    with pytest.raises(ValueError, match="negative"):
        parse_caffemodel(net.SerializeToString())


def test_duplicate_layer_names_are_rejected(small_net) -> None:
    data = caffemodel_bytes(small_net) + caffemodel_bytes(
        {"conv1_1": small_net["conv1_1"]}, extra_layers=()
    )
    with pytest.raises(ValueError, match="two layers named 'conv1_1'"):
        parse_caffemodel(data)


def test_interleaved_unpacked_floats_parse_correctly() -> None:
    """Unpacked floats interrupted by other fields (legal protobuf): every run is read."""
    msgs = caffe_messages(False)
    blob = msgs["BlobProto"]()
    blob.data.extend([1.0, 2.0, 3.0])
    head = blob.SerializeToString()
    num = msgs["BlobProto"](num=1).SerializeToString()
    body = (head + num) * 2000  # 6000 floats in 2000 runs
    blob_bytes = (
        body + msgs["BlobProto"](num=6000, channels=1, height=1, width=1).SerializeToString()
    )
    layer = b"\x0a\x07conv1_1" + b"\x3a" + _varint(len(blob_bytes)) + blob_bytes
    net = b"\xa2\x06" + _varint(len(layer)) + layer  # field 100, wire type 2
    got = parse_caffemodel(net)["conv1_1"][0]
    assert got.shape == (6000, 1, 1, 1)
    np.testing.assert_array_equal(got.ravel(), np.tile([1.0, 2.0, 3.0], 2000))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_random_bytes_never_crash_or_hang(data: bytes) -> None:
    try:
        layers = parse_caffemodel(data)
    except ValueError:
        return
    assert all(isinstance(b, np.ndarray) for blobs in layers.values() for b in blobs)


@settings(max_examples=300, deadline=2000)
@given(st.data())
def test_corrupted_valid_files_raise_value_error_or_parse(data: st.DataObject) -> None:
    raw = bytearray(_valid_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    with contextlib.suppress(ValueError):
        parse_caffemodel(bytes(raw[:cut]))
