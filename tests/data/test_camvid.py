"""CamVid in the SegNet tutorial's layout: the real folder and every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab.data import (
    CAMVID_CLASSES,
    IGNORE_INDEX,
    CamVid,
    DataSpec,
    build_dataset,
    camvid_palette,
)


def test_the_real_splits(camvid_root: Path) -> None:
    train, val = CamVid(camvid_root, "train"), CamVid(camvid_root, "val")
    assert (len(train), len(val)) == (367, 101)
    assert train.class_names == CAMVID_CLASSES and len(CAMVID_CLASSES) == 11
    assert not set(train.names) & set(val.names)
    sample = val[0]
    assert sample.image.shape == (360, 480, 3) and sample.label.shape == (360, 480)
    values = set(np.unique(sample.label).tolist())
    assert values <= set(range(11)) | {IGNORE_INDEX}
    # Void (11 in the files) is read as 255: somewhere in the first scenes it occurs.
    assert any(IGNORE_INDEX in val[i].label for i in range(5))
    raw = np.array(Image.open(camvid_root / "valannot" / f"{val.names[0]}.png"))
    np.testing.assert_array_equal(sample.label == IGNORE_INDEX, raw == 11)


def test_data_spec_opens_it(camvid_root: Path) -> None:
    ds = build_dataset(DataSpec(kind="camvid", camvid_root=str(camvid_root), split="val"))
    assert len(ds) == 101
    # The training default split (VOC's train_aug) means train here.
    assert len(build_dataset(DataSpec(kind="camvid", camvid_root=str(camvid_root)))) == 367
    with pytest.raises(ValueError, match="--camvid-root"):
        DataSpec(kind="camvid")


def test_palette() -> None:
    palette = camvid_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert len({tuple(c) for c in palette[:11]}) == 11
    assert not palette[11:].any()


# -- bad input, on a small layout the tests write ------------------------------------------------


def _write(root: Path, names: list[str], split: str = "val", size=(12, 16)) -> None:
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / f"{split}annot").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for name in names:
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
            root / split / f"{name}.png"
        )
        Image.fromarray(rng.integers(0, 12, size, dtype=np.uint8)).save(
            root / f"{split}annot" / f"{name}.png"
        )
        lines.append(f"{split}/{name}.png {split}annot/{name}.png")
    (root / f"{split}.txt").write_text("\n".join(lines) + "\n")


def test_a_small_layout_reads(tmp_path: Path) -> None:
    _write(tmp_path, ["a", "b"])
    ds = CamVid(tmp_path, "val")
    assert ds.names == ["a", "b"]
    raw = np.array(Image.open(tmp_path / "valannot" / "b.png"))
    np.testing.assert_array_equal(ds[1].label, np.where(raw == 11, 255, raw))


def test_absolute_paths_of_the_tutorials_lists(tmp_path: Path) -> None:
    _write(tmp_path, ["a"])
    (tmp_path / "val.txt").write_text("/SegNet/CamVid/val/a.png /SegNet/CamVid/valannot/a.png\n")
    assert CamVid(tmp_path, "val").names == ["a"]


def test_missing_listed_file_is_named(tmp_path: Path) -> None:
    _write(tmp_path, ["a", "b"])
    (tmp_path / "valannot" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"valannot/b\.png"):
        CamVid(tmp_path, "val")


def test_missing_split_lists_the_others(tmp_path: Path) -> None:
    _write(tmp_path, ["a"])
    with pytest.raises(FileNotFoundError, match=r"test\.txt.*lists found: val"):
        CamVid(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="CamVid folder not found"):
        CamVid(tmp_path / "nowhere", "val")


def test_sizes_that_differ_are_named(tmp_path: Path) -> None:
    _write(tmp_path, ["a"])
    Image.fromarray(np.zeros((10, 16), np.uint8)).save(tmp_path / "valannot" / "a.png")
    with pytest.raises(ValueError, match=r"a\.png is 16x12 but label .*a\.png is 16x10"):
        CamVid(tmp_path, "val")[0]


def test_label_values_outside_the_classes(tmp_path: Path) -> None:
    _write(tmp_path, ["a"])
    label = np.zeros((12, 16), np.uint8)
    label[0, 0] = 12
    label[1, 1] = 200
    Image.fromarray(label).save(tmp_path / "valannot" / "a.png")
    with pytest.raises(ValueError, match=r"valannot/a\.png has values \[12, 200\] outside 0\.\.11"):
        CamVid(tmp_path, "val")[0]


def test_unreadable_photo_is_named(tmp_path: Path) -> None:
    _write(tmp_path, ["a"])
    (tmp_path / "val" / "a.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"val/a\.png"):
        CamVid(tmp_path, "val")[0]


def test_malformed_list_line(tmp_path: Path) -> None:
    _write(tmp_path, ["a"])
    (tmp_path / "val.txt").write_text("val/a.png valannot/a.png\nval/b.png\n")
    with pytest.raises(ValueError, match=r"line 2: expected 'image label'"):
        CamVid(tmp_path, "val")
    (tmp_path / "val.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="names no images"):
        CamVid(tmp_path, "val")


def test_evaluate_command_stops_on_a_bad_file_and_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A fresh network with CamVid's classes: the scores do not matter, the stop does.
    from deeplab.cli import main
    from deeplab.models import build_model, save_model

    weights = tmp_path / "camvid.safetensors"
    save_model(build_model("deeplab-largefov-tiny", num_classes=11), weights,
               class_names=CAMVID_CLASSES, source="test")  # fmt: skip
    _write(tmp_path / "cv", ["a", "b"])
    label = np.zeros((12, 16), np.uint8)
    label[3, 3] = 40
    Image.fromarray(label).save(tmp_path / "cv" / "valannot" / "b.png")
    argv = [
        "evaluate",
        "--weights",
        str(weights),
        "--data",
        "camvid",
        "--camvid-root",
        str(tmp_path / "cv"),
        "--crf",
        "none",
        "--out",
        str(tmp_path / "o"),
        "--no-progress",
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("deeplab evaluate: error:") and "valannot/b.png" in err
    assert "[40]" in err
    assert not (tmp_path / "o" / "results.json").exists()  # no score from a partial set
