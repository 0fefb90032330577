from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from sbd_files import make_sbd, sbd_for_voc_sample, write_gtcls

from deeplab.data.image_io import load_label
from deeplab.data.sbd import (
    SBDSegmentation,
    build_segmentation_class_aug,
    convert_sbd_labels,
    find_sbd_root,
    load_sbd_label,
    train_aug_names,
    trainval_aug_names,
    write_aug_lists,
)
from deeplab.data.voc import AUG_LABEL_DIR, VOCSegmentation, read_name_list


def test_mat_written_by_savemat_loads(tmp_path: Path) -> None:
    seg = np.zeros((7, 9), dtype=np.uint8)
    seg[2:5, 3:8] = 15
    seg[0, 0] = 1
    write_gtcls(tmp_path / "a.mat", seg)
    out = load_sbd_label(tmp_path / "a.mat")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, seg)
    # MATLAB often stores labels as double: accepted when integral.
    write_gtcls(tmp_path / "b.mat", seg.astype(np.float64))
    np.testing.assert_array_equal(load_sbd_label(tmp_path / "b.mat"), seg)


def test_bad_mat_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"x\.mat"):
        load_sbd_label(tmp_path / "x.mat")
    scipy.io.savemat(tmp_path / "other.mat", {"foo": np.zeros(3)})
    with pytest.raises(ValueError, match=r"other\.mat has no GTcls"):
        load_sbd_label(tmp_path / "other.mat")
    scipy.io.savemat(tmp_path / "noseg.mat", {"GTcls": {"Boundaries": np.zeros(2)}})
    with pytest.raises(ValueError, match=r"noseg\.mat.*no Segmentation"):
        load_sbd_label(tmp_path / "noseg.mat")
    scipy.io.savemat(tmp_path / "frac.mat", {"GTcls": {"Segmentation": np.full((2, 2), 0.5)}})
    with pytest.raises(ValueError, match="non-integer"):
        load_sbd_label(tmp_path / "frac.mat")
    scipy.io.savemat(tmp_path / "big.mat", {"GTcls": {"Segmentation": np.full((2, 2), 300.0)}})
    with pytest.raises(ValueError, match=r"0\.\.255"):
        load_sbd_label(tmp_path / "big.mat")
    (tmp_path / "junk.mat").write_bytes(b"MATLAB? no." * 20)
    with pytest.raises(ValueError, match=r"junk\.mat"):
        load_sbd_label(tmp_path / "junk.mat")


def test_sbd_dataset(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    segs = {n: rng.integers(0, 21, (12, 16)).astype(np.uint8) for n in ("s1", "s2", "s3")}
    root = make_sbd(tmp_path, {"s1": segs["s1"], "s2": segs["s2"]}, {"s3": segs["s3"]})
    assert find_sbd_root(root) == root / "benchmark_RELEASE" / "dataset"
    train = SBDSegmentation(root, "train")
    assert (
        train.names == ["s1", "s2"] and len(SBDSegmentation(root / "benchmark_RELEASE", "val")) == 1
    )
    sample = train[1]
    assert sample.name == "s2" and sample.image.shape == (12, 16, 3)
    np.testing.assert_array_equal(sample.label, segs["s2"])
    (root / "benchmark_RELEASE" / "dataset" / "cls" / "s3.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"s3\.mat"):
        SBDSegmentation(root, "val")
    with pytest.raises(FileNotFoundError, match="not an SBD folder"):
        SBDSegmentation(tmp_path / "benchmark_RELEASE" / "dataset" / "img")


def test_convert_sbd_labels(tmp_path: Path) -> None:
    segs = {"a": np.eye(5, dtype=np.uint8) * 3, "b": np.full((4, 6), 20, dtype=np.uint8)}
    root = make_sbd(tmp_path / "sbd", {"a": segs["a"]}, {"b": segs["b"]})
    out = tmp_path / "aug"
    assert convert_sbd_labels(root, out) == 2
    for name, seg in segs.items():
        np.testing.assert_array_equal(load_label(out / f"{name}.png"), seg)
    assert convert_sbd_labels(root, out) == 0  # resumable: existing PNGs kept
    assert convert_sbd_labels(root, out, overwrite=True) == 2


def test_train_aug_arithmetic_on_fake_lists() -> None:
    sbd_train = ["c", "a", "v1", "a2"]
    sbd_val = ["b", "a", "v2"]
    voc_train = ["t1", "b", "a"]
    voc_val = ["v1", "v2", "v3"]
    # union {a, a2, b, c, t1, v1, v2} minus {v1, v2, v3}
    assert train_aug_names(sbd_train, sbd_val, voc_train, voc_val) == ["a", "a2", "b", "c", "t1"]
    assert trainval_aug_names(["a", "a2", "b", "c", "t1"], voc_val) == [
        "a",
        "a2",
        "b",
        "c",
        "t1",
        "v1",
        "v2",
        "v3",
    ]


def test_train_aug_counts_follow_the_set_algebra() -> None:
    # Full-size shaped fake: SBD train 8498 and val 2857 overlap VOC as the real data does.
    sbd_train = [f"s{i:05d}" for i in range(8498)]
    sbd_val = [f"s{i:05d}" for i in range(8498, 8498 + 2857)]
    voc_val = [f"s{i:05d}" for i in range(0, 2000, 2)] + [f"v{i}" for i in range(449)]
    voc_train = [f"s{i:05d}" for i in range(1, 1001, 2)] + [f"t{i}" for i in range(964)]
    names = train_aug_names(sbd_train, sbd_val, voc_train, voc_val)
    assert len(names) == 8498 + 2857 + 964 - 1000
    assert names == sorted(set(names))
    assert not set(names) & set(voc_val)


def test_aug_lists_and_label_folder_end_to_end(voc_copy: Path, tmp_path: Path) -> None:
    # VOC sample: 2007_000032 (train), 2007_000033 (val). SBD covers both plus two new images.
    root, expected = sbd_for_voc_sample(voc_copy, tmp_path / "sbd")
    voc_32, new_a, new_b = (expected[n] for n in ("2007_000032", "2008_000001", "2008_000002"))

    paths = write_aug_lists(voc_copy, root)
    assert read_name_list(paths["train_aug"]) == ["2007_000032", "2008_000001", "2008_000002"]
    assert read_name_list(paths["trainval_aug"]) == [
        "2007_000032",
        "2007_000033",
        "2008_000001",
        "2008_000002",
    ]
    out = build_segmentation_class_aug(voc_copy, root)
    assert out == voc_copy / AUG_LABEL_DIR
    assert sorted(p.stem for p in out.glob("*.png")) == [
        "2007_000032",
        "2007_000033",
        "2008_000001",
        "2008_000002",
    ]
    ds = VOCSegmentation(voc_copy, "train_aug", label_dir=AUG_LABEL_DIR)
    labels = {s.name: s.label for s in ds}
    np.testing.assert_array_equal(labels["2007_000032"], voc_32)  # prefer="voc": 255s kept
    np.testing.assert_array_equal(labels["2008_000001"], new_a)
    np.testing.assert_array_equal(labels["2008_000002"], new_b)

    sbd_first = build_segmentation_class_aug(
        voc_copy, root, out_dir=tmp_path / "aug_sbd", prefer="sbd"
    )
    assert 255 not in load_label(sbd_first / "2007_000032.png")
    with pytest.raises(ValueError, match="prefer"):
        build_segmentation_class_aug(voc_copy, root, prefer="other")  # type: ignore[arg-type]
