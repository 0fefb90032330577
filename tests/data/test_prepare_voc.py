"""`deeplab prepare-voc` writes the train_aug files once; opening a dataset never writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sbd_files import sbd_for_voc_sample

from deeplab.cli import main
from deeplab.data import DataSpec, build_dataset
from deeplab.data.image_io import load_label
from deeplab.data.voc import VOCSegmentation, read_name_list


def _files(root: Path) -> dict[str, int]:
    """Every file under ``root`` with its size: what 'nothing was written' compares."""
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def sbd_for(voc_copy: Path, tmp_path: Path) -> Path:
    """A tiny SBD covering both VOC sample images plus two of its own (copied into the VOC
    folder's JPEGImages, as in the real data)."""
    return sbd_for_voc_sample(voc_copy, tmp_path / "sbd")[0]


def test_opening_train_aug_unprepared_names_the_folder_and_the_command(
    voc_copy: Path, sbd_for: Path
) -> None:
    before = _files(voc_copy)
    spec = DataSpec(kind="voc", voc_root=str(voc_copy), sbd_root=str(sbd_for))
    with pytest.raises(FileNotFoundError) as caught:
        build_dataset(spec)
    message = str(caught.value)
    assert str(voc_copy / "SegmentationClassAug") in message
    assert f"deeplab prepare-voc --voc {voc_copy} --sbd {sbd_for}" in message
    assert _files(voc_copy) == before
    # Without an SBD folder the command still shows where it goes.
    with pytest.raises(FileNotFoundError, match="--sbd SBD_ROOT"):
        build_dataset(DataSpec(kind="voc", voc_root=str(voc_copy), split="trainval_aug"))
    assert _files(voc_copy) == before


def test_prepare_voc_then_opening_writes_nothing(
    voc_copy: Path, sbd_for: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["prepare-voc", "--voc", str(voc_copy), "--sbd", str(sbd_for)]) == 0
    out = capsys.readouterr().out
    assert "4 label PNGs" in out and "train_aug.txt: 3 names" in out
    aug = voc_copy / "SegmentationClassAug"
    assert sorted(p.stem for p in aug.glob("*.png")) == [
        "2007_000032", "2007_000033", "2008_000001", "2008_000002",
    ]  # fmt: skip
    lists = voc_copy / "ImageSets" / "SegmentationAug"
    assert read_name_list(lists / "train_aug.txt") == ["2007_000032", "2008_000001", "2008_000002"]

    before = _files(voc_copy)
    for split in ("train_aug", "trainval_aug", "train", "val"):
        spec = DataSpec(kind="voc", voc_root=str(voc_copy), sbd_root=str(sbd_for), split=split)
        for sample in build_dataset(spec):
            assert sample.image.shape[:2] == sample.label.shape
    assert _files(voc_copy) == before

    labels = {s.name: s.label for s in build_dataset(DataSpec(kind="voc", voc_root=str(voc_copy)))}
    np.testing.assert_array_equal(
        labels["2007_000032"], load_label(voc_copy / "SegmentationClass" / "2007_000032.png")
    )  # VOC's own label (with its 255 borders) wins over SBD's


def test_prepare_voc_out_leaves_the_voc_folder_alone(
    voc_copy: Path, sbd_for: Path, tmp_path: Path
) -> None:
    before = _files(voc_copy)
    out = tmp_path / "aug"
    argv = ["prepare-voc", "--voc", str(voc_copy), "--sbd", str(sbd_for), "--out", str(out)]
    assert main(argv) == 0
    assert _files(voc_copy) == before
    assert (out / "SegmentationClassAug" / "2008_000001.png").is_file()
    with pytest.raises(FileNotFoundError, match="prepare-voc"):
        build_dataset(DataSpec(kind="voc", voc_root=str(voc_copy)))
    ds = build_dataset(DataSpec(kind="voc", voc_root=str(voc_copy), aug_root=str(out)))
    assert ds.names == ["2007_000032", "2008_000001", "2008_000002"]
    assert ds[1].label.max() == 7
    assert _files(voc_copy) == before


def test_prepare_voc_errors_are_one_line(
    voc_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["prepare-voc", "--voc", str(voc_copy), "--sbd", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deeplab prepare-voc: error: SBD root not found")


def test_train_aug_list_beside_vocs_own_lists_is_found(voc_copy: Path, sbd_for: Path) -> None:
    # Some copies of the data keep train_aug.txt in ImageSets/Segmentation.
    assert main(["prepare-voc", "--voc", str(voc_copy), "--sbd", str(sbd_for)]) == 0
    lists = voc_copy / "ImageSets"
    (lists / "SegmentationAug" / "train_aug.txt").rename(lists / "Segmentation" / "train_aug.txt")
    ds = build_dataset(DataSpec(kind="voc", voc_root=str(voc_copy)))
    assert ds.names == ["2007_000032", "2008_000001", "2008_000002"]
    assert isinstance(ds, VOCSegmentation) and ds.label_dir == voc_copy / "SegmentationClassAug"
