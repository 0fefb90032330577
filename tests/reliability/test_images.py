"""Images and label masks people feed: truncated, odd modes, 16-bit, crafted headers, EPS."""

from __future__ import annotations

import io
import re
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

from deeplab.data.image_io import load_image, load_label
from reliability.strategies import PNG_SIGNATURE, png_chunk
from reliability.targets import _png_without_palette

LOADERS = [load_image, load_label]


def _png_header(width: int, height: int, depth: int = 8, colour: int = 0) -> bytes:
    """A PNG whose IHDR claims width x height, with one empty IDAT: nothing to decode."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b""))
        + png_chunk(b"IEND", b"")
    )


def _encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize(
    ("width", "height", "message"),
    [
        (100_000, 100_000, "too large to decode safely"),  # 10^10 pixels: Pillow refuses
        (12_000, 12_000, "decompression-bomb limit"),  # between the limit and twice it
        (2**31 - 1, 2**31 - 1, "too large"),
    ],
)
def test_huge_dimensions_in_the_header_are_refused_without_allocating(
    tmp_path: Path, loader, width: int, height: int, message: str
) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(width, height))
    assert path.stat().st_size < 100
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=message) as info:
            loader(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "bomb.png" in str(info.value) and "MAX_IMAGE_PIXELS" in str(info.value)
    assert peak < 4 * 2**20  # what the header claims is never allocated


@pytest.mark.parametrize("loader", LOADERS)
def test_every_truncation_is_a_clear_error(tmp_path: Path, loader) -> None:
    rng = np.random.default_rng(0)
    files = {
        "png": _encode(Image.fromarray(rng.integers(0, 21, (16, 16), dtype=np.uint8))),
        "jpg": _encode(Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)), "JPEG"),
    }
    for suffix, data in files.items():
        for cut in range(0, len(data) - 1, 3):
            path = tmp_path / f"cut{cut}.{suffix}"
            path.write_bytes(data[:cut])
            try:
                loader(path)
            except ValueError as exc:
                assert path.name in str(exc)
            # A JPEG cut inside its last bytes may still decode (Pillow pads it): fine.
            path.unlink()


def test_sixteen_bit_grayscale(tmp_path: Path) -> None:
    values = np.array([[0, 257, 65535], [1000, 30000, 60000]], dtype=np.uint16)
    path = tmp_path / "depth.png"
    Image.fromarray(values).save(path)
    image = load_image(path)
    assert image.dtype == np.uint8 and image.shape == (2, 3, 3)
    np.testing.assert_array_equal(image[..., 0], np.round(values / 257).astype(np.uint8))
    with pytest.raises(ValueError, match=r"depth\.png.*values 0\.\.65535"):
        load_label(path)
    small = tmp_path / "mask16.png"
    Image.fromarray(np.array([[0, 255], [3, 20]], dtype=np.uint16)).save(small)
    np.testing.assert_array_equal(load_label(small), [[0, 255], [3, 20]])


def test_palette_png_without_its_palette(tmp_path: Path) -> None:
    indices = np.arange(12, dtype=np.uint8).reshape(3, 4)
    image = Image.fromarray(indices)
    image.putpalette([0, 0, 0, 255, 0, 0] * 128)
    path = tmp_path / "no_plte.png"
    path.write_bytes(_png_without_palette(_encode(image)))
    # A mask means its indices: they are kept.
    np.testing.assert_array_equal(load_label(path), indices)
    # An image's colours are unknown: refused (Pillow would have painted it black).
    with pytest.raises(ValueError, match=r"no_plte\.png.*without a palette"):
        load_image(path)


@pytest.mark.parametrize(
    ("make", "fmt", "loader", "message"),
    [
        (lambda: Image.new("F", (3, 2)), "TIFF", load_image, "unsupported mode 'F'"),
        (lambda: Image.new("F", (3, 2)), "TIFF", load_label, "unsupported mode 'F'"),
        (lambda: Image.fromarray(np.full((2, 3), -5, np.int32)), "TIFF", load_image, "outside"),
        (lambda: Image.fromarray(np.full((2, 3), -5, np.int32)), "TIFF", load_label, "-5"),
        (lambda: Image.new("LA", (3, 2)), "PNG", load_label, "unsupported mode 'LA'"),
        (lambda: Image.new("RGBA", (3, 2)), "PNG", load_label, "colour image"),
        (lambda: Image.new("RGB", (3, 2)), "JPEG", load_label, "colour image"),
        (lambda: Image.new("CMYK", (3, 2)), "JPEG", load_label, "colour image"),
    ],
)
def test_wrong_modes_are_refused_with_the_mode(
    tmp_path: Path, make, fmt: str, loader, message: str
) -> None:
    path = tmp_path / f"odd.{fmt.lower()}"
    path.write_bytes(_encode(make(), fmt))
    with pytest.raises(ValueError, match=message):
        loader(path)


@pytest.mark.parametrize(
    ("mode", "expected_shape"),
    [("1", (2, 3)), ("L", (2, 3)), ("P", (2, 3)), ("I;16", (2, 3))],
)
def test_mask_modes_that_hold_indices_load(tmp_path: Path, mode: str, expected_shape) -> None:
    path = tmp_path / "mask.png"
    Image.new(mode, (3, 2)).save(path)
    mask = load_label(path)
    assert mask.shape == expected_shape and mask.dtype == np.uint8


@pytest.mark.parametrize("loader", LOADERS)
def test_an_eps_file_never_reaches_ghostscript(
    tmp_path: Path, loader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: Image.open accepted any Pillow format, and Pillow renders EPS by running
    Ghostscript on the file. The loaders now open raster formats only."""
    calls: list[object] = []

    def ghostscript(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise OSError("Ghostscript would have run here")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)
    path = tmp_path / "photo.jpg"  # the name does not matter: Pillow sniffs the content
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n%%EOF\n")
    with pytest.raises(ValueError, match=r"photo\.jpg.*accepted: PNG, JPEG"):
        loader(path)
    assert calls == []


@pytest.mark.parametrize("loader", LOADERS)
def test_not_an_image_missing_or_a_folder(tmp_path: Path, loader) -> None:
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ("notes.png", "empty.png"):
        with pytest.raises(ValueError, match=re.escape(name)):
            loader(tmp_path / name)
    with pytest.raises(FileNotFoundError, match=r"gone\.png"):
        loader(tmp_path / "gone.png")
    with pytest.raises(ValueError, match="not a regular file"):
        loader(tmp_path)
