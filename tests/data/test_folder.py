from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deeplab.data.classes import write_label_png
from deeplab.data.folder import FolderDataset, read_class_names, write_folder_dataset
from deeplab.data.image_io import save_image
from deeplab.data.synthetic import SYNTHETIC_CLASSES, SyntheticScenes


def make_folder(root: Path, labels: dict[str, np.ndarray], classes: list[str]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    for name, label in labels.items():
        image = np.dstack([label, label, label]).astype(np.uint8)
        save_image(root / "images" / f"{name}.png", image)
        write_label_png(root / "masks" / f"{name}.png", label)
    return root


def test_folder_dataset_pairs_by_stem(tmp_path: Path) -> None:
    labels = {
        "b": np.array([[0, 1], [2, 255]], dtype=np.uint8),
        "a": np.array([[2, 2, 2]], dtype=np.uint8),
    }
    root = make_folder(tmp_path, labels, ["sky", "tree", "road"])
    ds = FolderDataset(root / "images", root / "masks", root / "classes.txt")
    assert ds.names == ["a", "b"]  # sorted by stem
    assert ds.class_names == ("sky", "tree", "road") and ds.num_classes == 3
    np.testing.assert_array_equal(ds[1].label, labels["b"])
    np.testing.assert_array_equal(ds[1].image[:, :, 0], labels["b"])
    assert ds.label_path("a").name == "a.png" and ds.image_path("a").parent.name == "images"


def test_many_classes_and_names_given_directly(tmp_path: Path) -> None:
    label = np.arange(200, dtype=np.uint8).reshape(10, 20)
    root = make_folder(tmp_path, {"x": label}, [f"c{i}" for i in range(200)])
    ds = FolderDataset(root / "images", root / "masks", [f"c{i}" for i in range(200)])
    np.testing.assert_array_equal(ds[0].label, label)


def test_unmatched_files_are_named(tmp_path: Path) -> None:
    root = make_folder(tmp_path, {"a": np.zeros((2, 2), dtype=np.uint8)}, ["bg"])
    save_image(root / "images" / "lonely.jpg", np.zeros((2, 2, 3), dtype=np.uint8))
    write_label_png(root / "masks" / "orphan.png", np.zeros((2, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"lonely\.jpg.*orphan\.png") as info:
        FolderDataset(root / "images", root / "masks", root / "classes.txt")
    assert "have no mask" in str(info.value) and "have no image" in str(info.value)


def test_mask_values_out_of_range(tmp_path: Path) -> None:
    label = np.array([[0, 1, 255], [3, 1, 0]], dtype=np.uint8)
    root = make_folder(tmp_path, {"bad": label}, ["bg", "fg"])
    ds = FolderDataset(root / "images", root / "masks", root / "classes.txt")
    with pytest.raises(ValueError, match=r"bad\.png has values \[3\].*only 2 classes"):
        ds[0]
    unchecked = FolderDataset(root / "images", root / "masks", ["bg", "fg"], validate_values=False)
    assert unchecked[0].label.max() == 255


def test_duplicate_stems_and_missing_folders(tmp_path: Path) -> None:
    root = make_folder(tmp_path, {"a": np.zeros((2, 2), dtype=np.uint8)}, ["bg"])
    save_image(root / "images" / "a.jpg", np.zeros((2, 2, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"share the stem 'a'"):
        FolderDataset(root / "images", root / "masks", ["bg"])
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        FolderDataset(tmp_path / "none", root / "masks", ["bg"])
    empty = tmp_path / "empty"
    (empty / "i").mkdir(parents=True)
    (empty / "m").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        FolderDataset(empty / "i", empty / "m", ["bg"])


def test_class_names_file(tmp_path: Path) -> None:
    p = tmp_path / "c.txt"
    p.write_text("background\n\n  cat \ndog\n")
    assert read_class_names(p) == ("background", "cat", "dog")
    p.write_text("a\nb\na\n")
    with pytest.raises(ValueError, match="repeats"):
        read_class_names(p)
    p.write_text("\n\n")
    with pytest.raises(ValueError, match="no classes"):
        read_class_names(p)
    p.write_text("".join(f"c{i}\n" for i in range(256)))
    with pytest.raises(ValueError, match="at most 255"):
        read_class_names(p)
    with pytest.raises(FileNotFoundError, match="class-names file not found"):
        read_class_names(tmp_path / "absent.txt")


def test_write_folder_dataset_round_trip(tmp_path: Path) -> None:
    scenes = SyntheticScenes(3, size=(64, 80), seed=5)
    out = write_folder_dataset(scenes, tmp_path / "syn")
    ds = FolderDataset(out / "images", out / "masks", out / "classes.txt")
    assert ds.names == scenes.names and ds.class_names == SYNTHETIC_CLASSES
    for original, loaded in zip(scenes, ds, strict=True):
        np.testing.assert_array_equal(loaded.image, original.image)  # PNG: lossless
        np.testing.assert_array_equal(loaded.label, original.label)
