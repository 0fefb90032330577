from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab.data.classes import (
    IGNORE_INDEX,
    VOC_CLASSES,
    VOC_PALETTE,
    VOC_SHORT_NAMES,
    colorize,
    read_label_png,
    rgb_to_label,
    voc_palette,
    write_label_png,
)


def test_class_tables() -> None:
    assert len(VOC_CLASSES) == 21 and len(VOC_SHORT_NAMES) == 21
    assert VOC_CLASSES[0] == "background" and VOC_CLASSES[15] == "person"
    assert VOC_CLASSES[20] == "tvmonitor" and VOC_SHORT_NAMES[20] == "tv"
    assert IGNORE_INDEX == 255


def test_palette_known_entries() -> None:
    pal = voc_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[0].tolist() == [0, 0, 0]
    assert pal[1].tolist() == [128, 0, 0]
    assert pal[2].tolist() == [0, 128, 0]
    assert pal[3].tolist() == [128, 128, 0]
    assert pal[8].tolist() == [64, 0, 0]
    assert pal[15].tolist() == [192, 128, 128]
    assert pal[20].tolist() == [0, 64, 128]
    assert pal[255].tolist() == [224, 224, 192]
    assert len({tuple(c) for c in pal.tolist()}) == 256  # the map is injective
    assert voc_palette(21).tolist() == pal[:21].tolist()


def test_palette_matches_real_voc_png(voc_mini: Path) -> None:
    # The palette stored in VOC's own PNGs is the reference.
    for png in sorted((voc_mini / "SegmentationClass").glob("*.png")):
        with Image.open(png) as im:
            stored = np.array(im.getpalette(), dtype=np.uint8).reshape(-1, 3)
        np.testing.assert_array_equal(stored[:256], VOC_PALETTE)


def test_palette_is_read_only() -> None:
    with pytest.raises(ValueError):
        VOC_PALETTE[0, 0] = 1


def test_colorize_and_back() -> None:
    label = np.array([[0, 1, 15], [255, 20, 0]], dtype=np.uint8)
    rgb = colorize(label)
    assert rgb.shape == (2, 3, 3)
    assert rgb[0, 2].tolist() == [192, 128, 128] and rgb[1, 0].tolist() == [224, 224, 192]
    np.testing.assert_array_equal(rgb_to_label(rgb), label)


def test_rgb_to_label_rejects_unknown_colour() -> None:
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[1, 1] = (1, 2, 3)
    with pytest.raises(ValueError, match=r"not in the palette.*\(1, 2, 3\)"):
        rgb_to_label(rgb)


def test_colorize_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        colorize(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError):
        colorize(np.full((2, 2), 300, dtype=np.int32))


def test_label_png_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    label = rng.integers(0, 21, (37, 53)).astype(np.uint8)
    label[:3] = 255
    path = tmp_path / "sub" / "x.png"
    write_label_png(path, label)
    with Image.open(path) as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(
            np.array(im.getpalette(), dtype=np.uint8).reshape(-1, 3)[:256], VOC_PALETTE
        )
    np.testing.assert_array_equal(read_label_png(path), label)
    assert [p.name for p in path.parent.iterdir()] == ["x.png"]  # no temp file left


def test_write_label_png_rejects_bad_labels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2-D"):
        write_label_png(tmp_path / "a.png", np.zeros((2, 2, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        write_label_png(tmp_path / "b.png", np.full((2, 2), 256, dtype=np.int64))
    assert list(tmp_path.iterdir()) == []
