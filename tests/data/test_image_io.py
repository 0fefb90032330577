from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab.data import image_io
from deeplab.data.image_io import load_image, load_label, save_image


def _png_bytes(path: Path, array: np.ndarray) -> bytes:
    Image.fromarray(array).save(path)
    return path.read_bytes()


def test_real_voc_jpeg_loads_as_rgb(voc_mini: Path) -> None:
    image = load_image(voc_mini / "JPEGImages" / "2007_000032.jpg")
    assert image.shape == (281, 500, 3) and image.dtype == np.uint8
    assert image.std() > 10  # a real photo, not a blank


def test_real_voc_label_keeps_palette_indices(voc_mini: Path) -> None:
    label = load_label(voc_mini / "SegmentationClass" / "2007_000032.png")
    assert label.shape == (281, 500) and label.dtype == np.uint8
    assert set(np.unique(label).tolist()) == {0, 1, 15, 255}


def test_grayscale_image_becomes_rgb(tmp_path: Path) -> None:
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    rgb = load_image(tmp_path / "g.png")
    assert rgb.shape == (6, 8, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], gray)


def test_rgba_image_drops_alpha(tmp_path: Path) -> None:
    rgba = np.random.default_rng(1).integers(0, 256, (5, 7, 4)).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), rgba[:, :, :3])


def test_sixteen_bit_image_is_scaled(tmp_path: Path) -> None:
    values = np.array([[0, 257 * 100, 65535, 128]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "d.png")
    rgb = load_image(tmp_path / "d.png")
    assert rgb.shape == (1, 4, 3)
    assert rgb[0, :, 0].tolist() == [0, 100, 255, 0]


def test_cmyk_image_converted(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (9, 4), (0, 0, 0, 0))  # no ink: white
    cmyk.save(tmp_path / "c.jpg")
    rgb = load_image(tmp_path / "c.jpg")
    assert rgb.shape == (4, 9, 3) and rgb.min() > 240


def test_float_image_refused(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((3, 3), dtype=np.float32)).save(tmp_path / "f.tiff")
    with pytest.raises(ValueError, match=r"f\.tiff.*unsupported mode 'F'"):
        load_image(tmp_path / "f.tiff")


def test_missing_file_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.jpg"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        load_label(tmp_path / "nope.png")
    with pytest.raises(ValueError, match="not a regular file"):
        load_image(tmp_path)


def test_truncated_png_named(tmp_path: Path) -> None:
    noise = np.random.default_rng(2).integers(0, 256, (64, 64)).astype(np.uint8)
    data = _png_bytes(tmp_path / "full.png", noise)
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.png.*(truncated|corrupt)"):
        load_label(cut)
    with pytest.raises(ValueError, match=r"cut\.png"):
        load_image(cut)


def test_truncated_jpeg_named(voc_mini: Path, tmp_path: Path) -> None:
    data = (voc_mini / "JPEGImages" / "2007_000033.jpg").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match=r"cut\.jpg.*(truncated|corrupt)"):
        load_image(cut)


def test_not_an_image_named(tmp_path: Path) -> None:
    bad = tmp_path / "text.png"
    bad.write_text("hello, not a PNG")
    with pytest.raises(ValueError, match=r"text\.png.*not a readable image"):
        load_image(bad)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.jpg"):
        load_image(empty)


def test_rgb_mask_refused_with_name(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "colour_mask.png")
    with pytest.raises(ValueError, match=r"colour_mask\.png is a colour image"):
        load_label(tmp_path / "colour_mask.png")


def test_l_mask_accepted(tmp_path: Path) -> None:
    mask = np.array([[0, 3, 255], [7, 0, 1]], dtype=np.uint8)
    Image.fromarray(mask).save(tmp_path / "m.png")
    np.testing.assert_array_equal(load_label(tmp_path / "m.png"), mask)


def test_palette_mask_indices_not_colours(tmp_path: Path) -> None:
    # A palette whose colours do not match the indices: the indices must come back.
    mask = np.array([[0, 1, 2], [2, 1, 255]], dtype=np.uint8)
    im = Image.fromarray(mask)
    im.putpalette([200, 10, 10, 10, 200, 10, 10, 10, 200] + [7, 7, 7] * 253)
    im.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_label(tmp_path / "p.png"), mask)


def test_sixteen_bit_mask(tmp_path: Path) -> None:
    ok = np.array([[0, 5, 255]], dtype=np.uint16)
    Image.fromarray(ok).save(tmp_path / "ok.png")
    np.testing.assert_array_equal(load_label(tmp_path / "ok.png"), ok.astype(np.uint8))
    bad = np.array([[0, 300]], dtype=np.uint16)
    Image.fromarray(bad).save(tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"bad\.png.*0\.\.300"):
        load_label(tmp_path / "bad.png")


@pytest.mark.parametrize("side", [12, 20])  # 144 px: Pillow only warns; 400 px: Pillow raises
def test_decompression_bomb_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, side: int
) -> None:
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((side, side), dtype=np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ValueError, match=r"big\.png.*MAX_IMAGE_PIXELS"):
        load_image(path)
    with pytest.raises(ValueError, match=r"big\.png"):
        load_label(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    assert load_label(path).shape == (side, side)


def test_save_image_formats_and_atomicity(tmp_path: Path) -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (10, 12, 3)).astype(np.uint8)
    save_image(tmp_path / "deep" / "x.png", rgb)
    np.testing.assert_array_equal(load_image(tmp_path / "deep" / "x.png"), rgb)
    smooth = np.zeros((16, 16, 3), dtype=np.uint8)
    smooth[..., 0] = np.arange(16, dtype=np.uint8)[None, :] * 15
    smooth[..., 1] = 90
    save_image(tmp_path / "x.jpg", smooth)  # lossy, quality 95
    assert np.abs(load_image(tmp_path / "x.jpg").astype(int) - smooth).max() <= 12
    with pytest.raises(ValueError, match="format"):
        save_image(tmp_path / "x.gifx", rgb)
    with pytest.raises(ValueError, match="uint8"):
        save_image(tmp_path / "y.png", rgb.astype(np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "x.jpg"]


def test_failed_save_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "keep.png"
    old = np.full((4, 4), 9, dtype=np.uint8)
    save_image(target, old)

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(image_io, "atomic_write_bytes", boom)
    with pytest.raises(OSError, match="disk full"):
        save_image(target, np.zeros((4, 4), dtype=np.uint8))
    np.testing.assert_array_equal(load_label(target), old)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def test_save_png_requires_png_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.png"):
        image_io.save_png(tmp_path / "a.jpg", np.zeros((2, 2), dtype=np.uint8))
