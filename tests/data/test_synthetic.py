from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from deeplab.data.synthetic import (
    SYNTHETIC_CLASSES,
    SyntheticScenes,
    generate_scene,
    void_band,
    write_synthetic_dataset,
)
from deeplab.data.voc import VOCSegmentation


def test_deterministic_from_seed_and_index() -> None:
    a, b = generate_scene(7, 3), generate_scene(7, 3)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    assert not np.array_equal(a.image, generate_scene(8, 3).image)
    assert not np.array_equal(a.image, generate_scene(7, 4).image)


def test_scene_independent_of_dataset_length_and_order() -> None:
    long, short = SyntheticScenes(20, seed=1), SyntheticScenes(6, seed=1)
    later = long[5]  # generated after nothing else
    for i in (4, 3, 2):
        long[i]
    np.testing.assert_array_equal(later.image, short[5].image)
    np.testing.assert_array_equal(long[5].label, short[5].label)
    assert short.names[5] == "scene_000005" and short.class_names == SYNTHETIC_CLASSES


def test_default_size_and_dtypes() -> None:
    ds = SyntheticScenes(2)
    s = ds[0]
    assert 160 <= s.image.shape[0] <= 240 and 160 <= s.image.shape[1] <= 240
    assert s.image.dtype == np.uint8 and s.label.dtype == np.uint8
    assert SyntheticScenes(1, size=(96, 128))[0].image.shape == (96, 128, 3)


def test_void_bands_cover_every_boundary_and_nothing_else() -> None:
    for i in range(10):
        raw = generate_scene(3, i, void_radius=0)
        voided = generate_scene(3, i)
        # The void pass draws no random numbers: same image, same classes off the band.
        np.testing.assert_array_equal(raw.image, voided.image)
        band = void_band(raw.label, 1)
        assert band.any()
        np.testing.assert_array_equal(voided.label == 255, band)
        np.testing.assert_array_equal(voided.label[~band], raw.label[~band])
        # No two 4-neighbours outside the band carry different classes.
        lab = voided.label.astype(np.int16)
        for d0, d1 in ((lab[1:], lab[:-1]), (lab[:, 1:], lab[:, :-1])):
            both_valid = (d0 != 255) & (d1 != 255)
            assert not (both_valid & (d0 != d1)).any()


def test_void_band_by_hand() -> None:
    label = np.zeros((4, 6), dtype=np.uint8)
    label[:, 3:] = 2
    expected = np.zeros((4, 6), dtype=bool)
    expected[:, 2:4] = True  # one pixel each side: a 2-pixel band
    np.testing.assert_array_equal(void_band(label, 1), expected)
    expected[:, 1:5] = True
    np.testing.assert_array_equal(void_band(label, 2), expected)
    assert not void_band(label, 0).any()


def test_several_classes_present() -> None:
    counts = np.zeros(256, dtype=np.int64)
    multi = 0
    for i in range(40):
        label = generate_scene(11, i).label
        present = set(np.unique(label).tolist()) - {0, 255}
        assert present, f"scene {i} has no object"
        multi += len(present) >= 2
        counts += np.bincount(label.ravel(), minlength=256)
    assert (counts[1:6] > 0).all(), "all five shapes appear"
    assert multi >= 10
    fg = counts[1:6].sum() / counts[:6].sum()
    assert 0.05 < fg < 0.5


def test_objects_mostly_contrast_with_their_surroundings() -> None:
    distances = []
    for i in range(30):
        s = generate_scene(2, i)
        image = s.image.astype(np.float64)
        for cls in range(1, 6):
            parts, n = ndimage.label(s.label == cls)
            for k in range(1, n + 1):
                inside = ndimage.binary_erosion(parts == k, iterations=2)
                if inside.sum() < 30:
                    continue
                ring = ndimage.binary_dilation(parts == k, iterations=6) & (s.label == 0)
                if ring.sum() < 30:
                    continue
                d = np.linalg.norm(image[inside].mean(0) - image[ring].mean(0))
                distances.append(d)
    distances_arr = np.array(distances)
    assert len(distances_arr) > 40
    assert np.median(distances_arr) > 60
    assert (distances_arr > 30).mean() > 0.75


def test_colour_does_not_give_away_the_class() -> None:
    means: dict[int, list[np.ndarray]] = {c: [] for c in range(1, 6)}
    for i in range(60):
        s = generate_scene(4, i)
        for cls in range(1, 6):
            m = s.label == cls
            if m.sum() > 50:
                means[cls].append(s.image[m].mean(0))
    for cls, values in means.items():
        arr = np.array(values)
        assert len(arr) >= 5, SYNTHETIC_CLASSES[cls]
        assert arr.std(axis=0).min() > 30, f"{SYNTHETIC_CLASSES[cls]} colours are too uniform"


def test_background_is_cluttered() -> None:
    # Background pixels are far from a single flat colour (textures, distractor blobs).
    spreads = []
    for i in range(10):
        s = generate_scene(6, i)
        spreads.append(s.image[s.label == 0].std(axis=0).mean())
    assert np.median(spreads) > 20


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least 32x32"):
        generate_scene(0, 0, size=(16, 200))
    with pytest.raises(ValueError, match=">= 0"):
        generate_scene(-1, 0)
    with pytest.raises(ValueError, match="num_images"):
        SyntheticScenes(0)
    with pytest.raises(TypeError):
        SyntheticScenes(2, colour="red")


def test_write_both_layouts(tmp_path: Path) -> None:
    out = write_synthetic_dataset(
        tmp_path / "voc", 5, layout="voc", size=(64, 64), seed=3, num_val=2
    )
    scenes = SyntheticScenes(5, size=(64, 64), seed=3)
    val = VOCSegmentation(out, "val", class_names=SYNTHETIC_CLASSES)
    train = VOCSegmentation(out, "train", class_names=SYNTHETIC_CLASSES)
    assert val.names == ["scene_000003", "scene_000004"] and len(train) == 3
    np.testing.assert_array_equal(val[0].label, scenes[3].label)
    assert np.abs(val[0].image.astype(int) - scenes[3].image).mean() < 6  # JPEG, quality 95
    assert (out / "classes.txt").read_text().split() == list(SYNTHETIC_CLASSES)

    folder = write_synthetic_dataset(tmp_path / "folder", 2, size=(48, 48), seed=3)
    assert sorted(p.name for p in (folder / "masks").iterdir()) == [
        "scene_000000.png",
        "scene_000001.png",
    ]
    with pytest.raises(ValueError, match="layout"):
        write_synthetic_dataset(tmp_path / "x", 2, layout="coco")  # type: ignore[arg-type]
