from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab.data.classes import VOC_CLASSES
from deeplab.data.image_io import load_label
from deeplab.data.voc import (
    AUG_LABEL_DIR,
    VOCSegmentation,
    find_voc_root,
    read_name_list,
    write_name_list,
)

VALID_VALUES = set(range(21)) | {255}


@pytest.mark.parametrize("split", ["train", "val", "trainval"])
def test_real_pairs_keep_their_void_borders(voc_mini: Path, split: str) -> None:
    ds = VOCSegmentation(voc_mini, split)
    assert len(ds) == (2 if split == "trainval" else 1)
    assert ds.class_names == VOC_CLASSES and ds.num_classes == 21
    for sample in ds:
        values = set(np.unique(sample.label).tolist())
        assert 255 in values, "VOC's void borders must survive loading"
        assert values <= VALID_VALUES
        assert values - {0, 255}, "some object class must be present"
        assert sample.image.shape[:2] == sample.label.shape
        assert sample.image.dtype == np.uint8 and sample.label.dtype == np.uint8
        # Void is a thin border, not most of the image.
        assert 0.005 < (sample.label == 255).mean() < 0.2


def test_real_pairs_known_content(voc_mini: Path) -> None:
    ds = VOCSegmentation(voc_mini, "trainval")
    assert ds.names == ["2007_000032", "2007_000033"]
    first, second = ds[0], ds[-1]
    assert first.name == "2007_000032" and first.size == (281, 500)
    assert first.present_classes().tolist() == [0, 1, 15]  # aeroplanes and people
    assert second.size == (366, 500)
    assert second.present_classes().tolist() == [0, 1]
    with pytest.raises(IndexError):
        ds[2]
    with pytest.raises(TypeError):
        ds["2007_000032"]  # type: ignore[index]
    assert ds.index_of("2007_000033") == 1


def test_root_may_be_a_parent_folder(voc_mini: Path) -> None:
    assert find_voc_root(voc_mini.parent) == voc_mini
    assert len(VOCSegmentation(voc_mini.parent, "val")) == 1


def test_missing_root_list_and_files(voc_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="VOC root not found"):
        VOCSegmentation(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="not a VOC 2012 folder"):
        VOCSegmentation(voc_copy / "ImageSets")
    with pytest.raises(FileNotFoundError, match=r"no list for split 'test'.*test\.txt"):
        VOCSegmentation(voc_copy, "test")
    with pytest.raises(FileNotFoundError, match="label folder not found"):
        VOCSegmentation(voc_copy, "train", label_dir=AUG_LABEL_DIR)
    (voc_copy / "JPEGImages" / "2007_000033.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"2007_000033\.jpg"):
        VOCSegmentation(voc_copy, "val")
    lazy = VOCSegmentation(voc_copy, "val", check_files=False)
    with pytest.raises(FileNotFoundError, match=r"2007_000033\.jpg"):
        lazy[0]


def test_size_mismatch_is_an_error(voc_copy: Path) -> None:
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(
        voc_copy / "SegmentationClass" / "2007_000032.png"
    )
    with pytest.raises(ValueError, match=r"2007_000032\.png is 10x10"):
        VOCSegmentation(voc_copy, "train")[0]


def test_segmentation_class_aug_folder(voc_copy: Path) -> None:
    # SegmentationClassAug holds plain 'L' PNGs; lists live in ImageSets/SegmentationAug.
    aug = voc_copy / AUG_LABEL_DIR
    aug.mkdir()
    expected = {}
    for name in ("2007_000032", "2007_000033"):
        label = load_label(voc_copy / "SegmentationClass" / f"{name}.png")
        label = np.where(label == 255, 0, label).astype(np.uint8)  # SBD-style: no void
        Image.fromarray(label).save(aug / f"{name}.png")
        expected[name] = label
    write_name_list(voc_copy / "ImageSets" / "SegmentationAug" / "train_aug.txt", ["2007_000033"])
    ds = VOCSegmentation(voc_copy, "train_aug", label_dir=AUG_LABEL_DIR)
    assert ds.names == ["2007_000033"]
    np.testing.assert_array_equal(ds[0].label, expected["2007_000033"])
    assert ds.list_file.parent.name == "SegmentationAug"


def test_explicit_list_file(voc_copy: Path, tmp_path: Path) -> None:
    custom = tmp_path / "mine.txt"
    custom.write_text("2007_000033\n\n2007_000032\n")
    ds = VOCSegmentation(voc_copy, list_file=custom)
    assert ds.names == ["2007_000033", "2007_000032"]


def test_read_name_list_formats(tmp_path: Path) -> None:
    p = tmp_path / "list.txt"
    p.write_text(
        "/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n"
        "  2008_000001  \n\n2009_000002.jpg\r\n"
    )
    assert read_name_list(p) == ["2007_000032", "2008_000001", "2009_000002"]
    p.write_text("a\nb\na\n")
    with pytest.raises(ValueError, match=r"repeats 1 name.*'a'"):
        read_name_list(p)
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        read_name_list(tmp_path / "missing.txt")


def test_empty_list_is_an_error(voc_copy: Path) -> None:
    (voc_copy / "ImageSets" / "Segmentation" / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        VOCSegmentation(voc_copy, "empty")
