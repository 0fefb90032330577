"""Weight records and checkpoints: safetensors + metadata, strict loading, no unpickling."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from deeplab.models import (
    VOC_CLASSES,
    WEIGHTS,
    CheckpointMeta,
    build_model,
    from_model_input,
    get_variant,
    get_weights_record,
    load_checkpoint,
    load_model,
    save_checkpoint,
    save_model,
    to_model_input,
)
from deeplab.models.loading import _resolve
from deeplab.models.weights import read_state_dict

CRF_PRESETS = {"deeplab", "deeplab-msc", "deeplab-largefov", "deeplab-msc-largefov"}


def test_records_of_the_released_models_carry_the_paper_scores() -> None:
    val = {  # paper Table 1, VOC 2012 val mean IoU (without, with CRF)
        "deeplab-voc12": (59.80, 63.74),
        "deeplab-msc-voc12": (61.30, 65.21),
        "deeplab-largefov-voc12": (62.25, 67.64),
        "deeplab-msc-largefov-voc12": (64.21, 68.70),
    }
    for name, (plain, crf) in val.items():
        r = get_weights_record(name)
        assert (r.metrics["voc12_val_miou"], r.metrics["voc12_val_miou_crf"]) == (plain, crf)
        assert r.crf_preset in CRF_PRESETS and r.crf_preset == get_variant(r.variant).crf_preset
        assert r.class_names == VOC_CLASSES and r.num_classes == 21
        assert r.input_convention == "caffe-bgr-255-meansub"
        assert r.file_format == "caffemodel" and r.source.startswith("http")
    assert WEIGHTS["deeplab-largefov-voc12"].metrics["voc12_test_miou_crf"] == 70.3
    assert WEIGHTS["deeplab-msc-largefov-voc12"].metrics["voc12_test_miou_crf"] == 71.6
    for init, variant in (("vgg16_128", "deeplab"), ("vgg16_20M", "deeplab-largefov")):
        r = get_weights_record(init)
        assert r.variant == variant and r.source.endswith(f"{init}.caffemodel")
        assert r.num_classes is None
    with pytest.raises(ValueError):
        get_weights_record("deeplab-coco")


def test_released_records_say_how_to_use_them() -> None:
    """Caffe classifier, test crop, CRF parameters and training split (the released
    configs: tests/models/test_released_configs.py checks them against the prototxts)."""
    expected = {  # record: (variant, classifier, test crop, split)
        "deeplab-voc12": ("deeplab", "fc8_pascal", 514, None),
        "deeplab-msc-voc12": ("deeplab-msc", "fc8_pascal", 513, None),
        "deeplab-largefov-voc12": ("deeplab-largefov", "fc8_voc12", 513, "trainval_aug"),
        "deeplab-msc-largefov-voc12": ("deeplab-msc-largefov", "fc8_voc12", 513, None),
        "deeplab-coco-largefov-voc12": ("deeplab-largefov", "fc8_voc12", 513, None),
        "deeplab-msc-coco-largefov-voc12": ("deeplab-msc-largefov", "fc8_voc12", 513, None),
    }
    for name, (variant, classifier, crop, split) in expected.items():
        r = get_weights_record(name)
        assert (r.variant, r.caffe_classifier, r.test_crop, r.train_split) == (
            variant,
            classifier,
            crop,
            split,
        )
        assert r.crf_params is not None and r.crf_params.iterations == 10
        assert ("COCO" in r.pretrained) == ("coco" in name)
    assert get_weights_record("deeplab-voc12").crf_params.w1 == 5
    assert get_weights_record("vgg16_20M").crf_params is None


def test_variants_name_their_init_and_crf_preset() -> None:
    assert get_variant("deeplab-largefov").init_weights == "vgg16_20M"
    assert get_variant("deeplab").init_weights == "vgg16_128"
    assert all(
        get_variant(n).crf_preset in CRF_PRESETS
        for n in ("deeplab", "deeplab-msc", "deeplab-largefov", "deeplab-msc-largefov")
    )


def test_checkpoint_round_trip(tmp_path) -> None:
    model = build_model("deeplab-largefov-tiny", num_classes=3)
    path = tmp_path / "tiny.safetensors"
    save_model(
        model, path, class_names=("bg", "a", "b"), source="unit-test", extra={"iterations": "6000"}
    )
    tensors, meta = load_checkpoint(path)
    assert meta == CheckpointMeta(
        "deeplab-largefov-tiny",
        3,
        ("bg", "a", "b"),
        "caffe-bgr-255-meansub",
        "unit-test",
        {"iterations": "6000"},
    )
    for key, value in model.state_dict().items():
        torch.testing.assert_close(tensors[key], value, rtol=0, atol=0)
    again = load_model(path)
    assert again.class_names == ("bg", "a", "b") and again.num_classes == 3
    x = torch.randn(1, 3, 33, 33) * 50
    torch.testing.assert_close(again.eval()(x), model.eval()(x), rtol=0, atol=0)
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left


def test_metadata_lives_in_the_safetensors_header(tmp_path) -> None:
    path = tmp_path / "tiny.safetensors"
    save_model(build_model("deeplab-largefov-tiny"), path)
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    meta = json.loads(header["__metadata__"]["meta"])
    assert header["__metadata__"]["format"] == "deeplab-checkpoint"
    assert meta["variant"] == "deeplab-largefov-tiny" and meta["num_classes"] == 21
    assert meta["class_names"] == list(VOC_CLASSES)
    assert header["fc8.weight"]["shape"] == [21, 128, 1, 1]


def test_class_count_mismatch_lists_the_tensors(tmp_path) -> None:
    path = tmp_path / "tiny.safetensors"
    save_model(build_model("deeplab-largefov-tiny", num_classes=21), path)
    with pytest.raises(ValueError) as err:
        build_model("deeplab-largefov-tiny", num_classes=5, weights=path)
    text = str(err.value)
    assert "num_classes: expected 5, checkpoint has 21" in text
    assert "shape mismatch fc8.weight: expected (5, 128, 1, 1), got (21, 128, 1, 1)" in text
    assert "shape mismatch fc8.bias: expected (5,), got (21,)" in text


def test_variant_mismatch_lists_missing_unexpected_and_shapes(tmp_path) -> None:
    tiny = build_model("deeplab-largefov-tiny")
    state = tiny.state_dict()
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "odd.safetensors"
    save_checkpoint(path, state, CheckpointMeta("deeplab-largefov-tiny", 21))
    with pytest.raises(ValueError) as err:
        build_model("deeplab-msc-largefov", weights=path)
    text = str(err.value)
    assert "variant: expected 'deeplab-msc-largefov', checkpoint is 'deeplab-largefov-tiny'" in text
    assert "shape mismatch conv1_1.weight: expected (64, 3, 3, 3), got (16, 3, 3, 3)" in text
    assert "missing msc.0.fc1.weight (128, 3, 3, 3)" in text
    assert "unexpected extra.weight (2,)" in text


def test_same_shapes_but_other_variant_is_refused(tmp_path) -> None:
    with torch.device("meta"):
        shapes_a = {k: v.shape for k, v in build_model("deeplab").state_dict().items()}
        shapes_b = {k: v.shape for k, v in build_model("deeplab-4x4").state_dict().items()}
    assert shapes_a == shapes_b  # only the dilation differs
    tiny = build_model("deeplab-largefov-tiny")
    path = tmp_path / "t.safetensors"
    save_checkpoint(path, tiny.state_dict(), CheckpointMeta("deeplab-largefov", 21))
    with pytest.raises(ValueError, match="variant: expected 'deeplab-largefov-tiny'"):
        build_model("deeplab-largefov-tiny", weights=path)


def test_foreign_or_corrupt_files_are_value_errors(tmp_path) -> None:
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(2)}, str(plain))
    with pytest.raises(ValueError, match="not a deeplab checkpoint"):
        load_checkpoint(plain)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_checkpoint(corrupt)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_pth_is_never_unpickled(tmp_path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    torch.save({"conv1_1.weight": torch.zeros(1), "x": Evil()}, path)
    with pytest.raises(ValueError, match="cannot read weights"):
        read_state_dict(path)
    assert not marker.exists()
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"conv1_1.weight": torch.ones(2)}}, good)
    assert list(read_state_dict(good)) == ["conv1_1.weight"]


def test_registered_names_resolve_offline(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DEEPLAB_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"nothing is downloaded.*deeplab convert"):
        build_model("deeplab-largefov", weights="deeplab-largefov-voc12")
    target = tmp_path / "deeplab-largefov-voc12.safetensors"
    target.write_bytes(b"")
    assert _resolve("deeplab-largefov-voc12") == target
    assert str(_resolve(tmp_path / "x.safetensors")).endswith("x.safetensors")


def test_input_convention() -> None:
    rgb = torch.tensor([[[10]], [[20]], [[30]]], dtype=torch.uint8)
    x = to_model_input(rgb)
    assert x.dtype == torch.float32
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([30 - 104.008, 20 - 116.669, 10 - 122.675]))
    torch.testing.assert_close(from_model_input(x), rgb.float())
    with pytest.raises(ValueError):
        to_model_input(torch.zeros(4, 5, 5))


def test_saved_files_are_byte_identical_across_processes(tmp_path) -> None:
    # safetensors writes its metadata map in a per-process hash order; a reproducible
    # training run must reproduce the file itself, so two processes must write equal bytes.
    import subprocess
    import sys

    script = (
        "import sys, torch\n"
        "from deeplab.models.weights import safetensors_bytes\n"
        "t = {'w': torch.arange(6.0).reshape(2, 3), 'b': torch.ones(2)}\n"
        "meta = {k: k * 3 for k in 'zyxwvutsrq'}\n"
        "open(sys.argv[1], 'wb').write(safetensors_bytes(t, meta))\n"
    )
    outs = []
    for i in range(3):
        path = tmp_path / f"{i}.safetensors"
        subprocess.run([sys.executable, "-c", script, str(path)], check=True)
        outs.append(path.read_bytes())
    assert outs[0] == outs[1] == outs[2]
    from safetensors import safe_open

    with safe_open(str(tmp_path / "0.safetensors"), "pt") as f:
        assert f.metadata() == {k: k * 3 for k in "zyxwvutsrq"}
        assert f.get_tensor("w").tolist() == [[0, 1, 2], [3, 4, 5]]
