"""`deeplab convert`: thin CLI over deeplab.models.convert_file."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from deeplab.cli import COMMAND_MODULES, convert_cmd
from deeplab.models import load_model

from .caffe_proto import caffemodel_bytes
from .reference import torchvision_vgg16_state


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="deeplab")
    convert_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_registered_in_the_cli() -> None:
    assert "deeplab.cli.convert_cmd" in COMMAND_MODULES


def test_convert_caffemodel(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    src = tmp_path / "released.caffemodel"
    layers = {
        "conv1_1": [
            rng.standard_normal((16, 3, 3, 3)).astype(np.float32),
            rng.standard_normal(16).astype(np.float32),
        ],
        "fc8_voc12": [
            rng.standard_normal((21, 128, 1, 1)).astype(np.float32),
            rng.standard_normal(21).astype(np.float32),
        ],
        "fc8_coco": [np.zeros((2, 2), np.float32)],
    }
    src.write_bytes(caffemodel_bytes(layers))
    dst = tmp_path / "out.safetensors"
    assert _run(["convert", str(src), "--variant", "deeplab-largefov-tiny", "--out", str(dst)]) == 0
    out = capsys.readouterr().out
    assert "mapped      conv1_1[0] -> conv1_1.weight (16, 3, 3, 3)" in out
    assert "mapped      fc8_voc12[1] -> fc8.bias (21,)" in out
    assert "missing     conv5_3.weight (fresh initialisation)" in out
    assert "unexpected  fc8_coco (2, 2) (no matching layer in target)" in out
    assert "4 mapped, 28 missing, 1 unexpected" in out
    converted = load_model(dst)
    np.testing.assert_array_equal(converted.conv1_1.weight.detach().numpy(), layers["conv1_1"][0])
    assert converted.variant.name == "deeplab-largefov-tiny"


def test_convert_torchvision_pth_with_other_class_count(tmp_path, capsys) -> None:
    src = tmp_path / "vgg16.pth"
    torch.save(torchvision_vgg16_state((16, 32, 64, 64, 64), 512), src)
    dst = tmp_path / "init.safetensors"
    argv = [
        "convert",
        str(src),
        "--variant",
        "deeplab-largefov-tiny",
        "--out",
        str(dst),
        "--num-classes",
        "4",
    ]
    assert _run(argv) == 0
    out = capsys.readouterr().out
    assert "source format: torchvision-vgg16" in out
    assert "decimated from (512, 3136)" in out
    model = load_model(dst)
    assert model.num_classes == 4 and model.fc6.weight.shape == (128, 64, 3, 3)


def test_errors_surface_as_value_errors(tmp_path) -> None:
    src = tmp_path / "vgg16.pth"
    torch.save(torchvision_vgg16_state((16, 32, 64, 64, 64), 512), src)
    with pytest.raises(ValueError, match="do not fit 'deeplab-largefov'"):
        _run(
            [
                "convert",
                str(src),
                "--variant",
                "deeplab-largefov",
                "--out",
                str(tmp_path / "x.safetensors"),
            ]
        )
    with pytest.raises(ValueError, match=r"must end in \.safetensors"):
        _run(
            [
                "convert",
                str(src),
                "--variant",
                "deeplab-largefov-tiny",
                "--out",
                str(tmp_path / "x.pth"),
            ]
        )
    assert not (tmp_path / "x.safetensors").exists()


def test_convert_file_reads_every_source_format(tmp_path) -> None:
    from safetensors.torch import save_file

    from deeplab.models import build_model, convert_file

    tv = tmp_path / "vgg16.safetensors"
    save_file(torchvision_vgg16_state((16, 32, 64, 64, 64), 512), str(tv))
    model, report = convert_file(tv, "deeplab-largefov-tiny", 21)
    assert report.source_format == "torchvision-vgg16" and len(report.mapped) == 30

    own = tmp_path / "own.pth"
    source = build_model("deeplab-largefov-tiny", num_classes=3)
    torch.save({"model": source.state_dict()}, own)
    model, report = convert_file(own, "deeplab-largefov-tiny", 3)
    assert report.source_format == "deeplab" and report.missing == []
    torch.testing.assert_close(model.fc8.weight, source.fc8.weight, rtol=0, atol=0)

    odd = tmp_path / "odd.pth"
    torch.save({"backbone.0.weight": torch.zeros(1)}, odd)
    with pytest.raises(ValueError, match="unrecognised state dict"):
        convert_file(odd, "deeplab-largefov-tiny", 21)
    with pytest.raises(ValueError, match="unknown weights format"):
        convert_file(tv.rename(tmp_path / "vgg16.npz"), "deeplab-largefov-tiny", 21)
    with pytest.raises(FileNotFoundError):
        convert_file(tmp_path / "absent.caffemodel", "deeplab-largefov-tiny", 21)


def test_main_reports_errors_with_exit_code_1(tmp_path, capsys) -> None:
    from deeplab.cli import main

    src = tmp_path / "broken.caffemodel"
    src.write_bytes(b"\x12\x05abc")
    code = main(
        [
            "convert",
            str(src),
            "--variant",
            "deeplab-largefov-tiny",
            "--out",
            str(tmp_path / "x.safetensors"),
        ]
    )
    assert code == 1
    assert "malformed .caffemodel" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.slow
def test_full_size_torchvision_vgg16_to_largefov(tmp_path, capsys) -> None:
    from deeplab.cli import main

    src = tmp_path / "vgg16.pth"
    torch.save(torchvision_vgg16_state(), src)
    dst = tmp_path / "largefov_init.safetensors"
    assert main(["convert", str(src), "--variant", "deeplab-largefov", "--out", str(dst)]) == 0
    assert "30 mapped, 2 missing, 2 unexpected" in capsys.readouterr().out
    model = load_model(dst)
    assert model.fc6.weight.shape == (1024, 512, 3, 3)
    assert sum(p.numel() for p in model.parameters()) == 20_505_429


def test_the_released_file_name_says_the_training_split(tmp_path, capsys) -> None:
    from deeplab.models.weights import load_checkpoint, train_split_of

    assert train_split_of("DeepLab-LargeFOV/train_iter_6000.caffemodel") == "train_aug"
    assert train_split_of("/x/train2_iter_8000.caffemodel") == "trainval_aug"
    assert train_split_of("vgg16_20M.caffemodel") is None
    assert train_split_of("mytrain_iter_5.caffemodel") is None  # not the authors' name
    rng = np.random.default_rng(1)
    layers = {"fc8_voc12": [rng.standard_normal((21, 128, 1, 1)).astype(np.float32),
                            rng.standard_normal(21).astype(np.float32)]}  # fmt: skip
    for name, split in (("train2_iter_8000", "trainval_aug"), ("train_iter_6000", "train_aug")):
        src = tmp_path / f"{name}.caffemodel"
        src.write_bytes(caffemodel_bytes(layers))
        dst = tmp_path / f"{name}.safetensors"
        argv = ["convert", str(src), "--variant", "deeplab-largefov-tiny", "--out", str(dst)]
        assert _run(argv) == 0
        assert f"trained on {split} (from the file name)" in capsys.readouterr().out
        assert load_checkpoint(dst)[1].extra["train_split"] == split
