"""Safe image and label-mask reading, atomic image writing.

Every failure names the file: a missing file raises FileNotFoundError, anything unreadable
(truncated, corrupt, not an image, over Pillow's decompression-bomb limit, a colour label
mask) raises ValueError. Images come back as (H, W, 3) uint8 RGB, label masks as (H, W)
uint8 class indices: a palette ('P') PNG keeps its indices, it is never converted to RGB.

EXIF orientation is deliberately ignored: annotations are drawn on the stored pixel grid.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import struct
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from deeplab.io_utils import atomic_write_bytes

__all__ = [
    "load_image",
    "load_label",
    "open_checked",
    "save_image",
    "save_png",
    "write_bytes",
    "write_text",
]

logger = logging.getLogger(__name__)

# Errors Pillow raises while decoding damaged files (beyond OSError for truncation).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)

# The raster formats images and masks come in. Pillow would otherwise try every plugin it
# has, including EPS, which it renders by running Ghostscript on the file: a file must
# never make us run a program.
READ_FORMATS = ("PNG", "JPEG", "BMP", "PPM", "TIFF", "GIF", "WEBP")  # JPEG covers MPO

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
# 16-bit grayscale and 32-bit integer: read as integers, range-checked, then 8 bits.
_INTEGER_MODES = _SIXTEEN_BIT_MODES | {"I"}
_DIRECT_CONVERT_MODES = frozenset(
    {"1", "L", "P", "LA", "La", "PA", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"}
)


@contextlib.contextmanager
def open_checked(path: str | os.PathLike[str], what: str = "image") -> Iterator[Image.Image]:
    """Open and fully decode an image file, turning every failure into a clear error.

    ``what`` ("image", "label mask") only words the messages. The image is decoded inside
    (``load()``) so that truncation is found here, not later in a conversion.
    """
    p = Path(path)
    if not p.is_file():
        if p.exists():
            raise ValueError(f"{what} path is not a regular file: {p}")
        raise FileNotFoundError(f"{what} file not found: {p}")
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            # Pillow warns between MAX_IMAGE_PIXELS and twice that; we refuse the whole range
            # below with our own error, so its warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(p, formats=READ_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ValueError(
            f"{what} {p} is too large to decode safely ({exc}); raise "
            f"PIL.Image.MAX_IMAGE_PIXELS if the file is trusted"
        ) from exc
    except UnidentifiedImageError as exc:
        raise ValueError(
            f"{what} {p} is not a readable image file (unknown or corrupt format; "
            f"accepted: {', '.join(READ_FORMATS)})"
        ) from exc
    except _DECODE_ERRORS as exc:
        raise ValueError(f"{what} {p} could not be opened: {exc}") from exc
    with image:
        width, height = image.size
        if limit is not None and width * height > limit:
            raise ValueError(
                f"{what} {p} is {width}x{height} = {width * height} pixels, over Pillow's "
                f"decompression-bomb limit PIL.Image.MAX_IMAGE_PIXELS = {limit}; raise the "
                f"limit if the file is trusted"
            )
        try:
            image.load()
        except _DECODE_ERRORS as exc:
            raise ValueError(f"{what} {p} is truncated or corrupt: {exc}") from exc
        yield image


def _sixteen_bit_to_uint8(values: np.ndarray) -> np.ndarray:
    # 0..65535 -> 0..255 by rounding value / 257 (65535 = 255 * 257), exact for 8-bit data
    # that was stored as v * 257.
    return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _integer_values(image: Image.Image, what: str, top: int, hint: str) -> np.ndarray:
    """The pixel values of a 16- or 32-bit integer image, refused unless all lie in 0..top
    (``what`` names the file in the message, ``hint`` says what to do instead)."""
    values = np.array(image)
    if values.size and (values.min() < 0 or values.max() > top):
        raise ValueError(
            f"{what} ({image.mode}) has values {values.min()}..{values.max()} outside "
            f"0..{top}; {hint}"
        )
    return values


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB.

    Grayscale, palette, CMYK and YCbCr are converted to RGB; an alpha channel is dropped;
    16-bit grayscale is scaled to 8 bits. Floating-point and other unusual modes are refused.
    """
    p = Path(path)
    with open_checked(p, "image") as image:
        mode = image.mode
        if mode == "RGB":
            return np.array(image, dtype=np.uint8)
        if mode in _INTEGER_MODES:
            values = _integer_values(image, f"image {p}", 65535, "convert it to 8-bit RGB first")
            logger.debug("%s: %s image scaled to 8 bits", p, mode)
            gray = _sixteen_bit_to_uint8(values)
            return np.repeat(gray[:, :, None], 3, axis=2)
        if mode in ("P", "PA") and not image.getpalette():
            # A PNG of colour type 3 without its PLTE chunk: Pillow would paint it black.
            raise ValueError(f"image {p} is a palette image without a palette: colours unknown")
        if mode in _DIRECT_CONVERT_MODES:
            if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
                logger.debug("%s: alpha channel dropped", p)
            if mode == "CMYK":
                logger.info("%s: CMYK image converted to RGB without colour management", p)
            return np.array(image.convert("RGB"), dtype=np.uint8)
        raise ValueError(
            f"image {p} has unsupported mode {mode!r}; expected an 8-bit RGB, grayscale, "
            f"palette, CMYK or 16-bit grayscale image"
        )


def load_label(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a label mask as (H, W) uint8 class indices (255 = void).

    Accepted: palette ('P', the VOC format: indices kept, palette ignored), 8-bit grayscale
    ('L'), 1-bit ('1' -> 0/1) and 16/32-bit integer masks whose values fit in 0..255.
    Colour (RGB/RGBA) masks are refused: their colours must be mapped to indices first
    (``deeplab.data.classes.rgb_to_label``).
    """
    p = Path(path)
    with open_checked(p, "label mask") as image:
        mode = image.mode
        if mode in ("P", "L"):
            return np.array(image, dtype=np.uint8)
        if mode == "1":
            return np.array(image, dtype=np.uint8)
        if mode in _INTEGER_MODES:
            values = _integer_values(
                image, f"label mask {p}", 255, "class indices must be 0..254 plus 255 for void"
            )
            return values.astype(np.uint8)
        if mode in ("RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV"):
            raise ValueError(
                f"label mask {p} is a colour image (mode {mode}); expected a palette ('P') or "
                f"grayscale ('L') PNG of class indices. Map the colours to indices first, e.g. "
                f"with deeplab.data.classes.rgb_to_label"
            )
        raise ValueError(
            f"label mask {p} has unsupported mode {mode!r}; expected a palette ('P') or "
            f"grayscale ('L') PNG of class indices"
        )


_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".ppm": "PPM"}


def save_image(
    path: str | os.PathLike[str], image: Image.Image | np.ndarray, **params: Any
) -> None:
    """Write an image atomically; the format follows the suffix (.png, .jpg, .jpeg, .bmp, .ppm).

    ``image`` is a PIL image or a (H, W) / (H, W, 3) uint8 array. JPEGs default to quality 95.
    Extra keyword arguments go to ``PIL.Image.Image.save``.
    """
    p = Path(path)
    fmt = _FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the image format of {p}; use one of {sorted(_FORMATS)}")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(
                f"array images must be (H, W) or (H, W, 3) uint8, got {image.shape} {image.dtype}"
            )
        image = Image.fromarray(np.ascontiguousarray(image))
    if fmt == "JPEG":
        params.setdefault("quality", 95)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    write_bytes(p, buffer.getvalue())


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomic write (``deeplab.io_utils.atomic_write_bytes``), creating missing folders."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(p, data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomic UTF-8 text write, creating missing folders."""
    write_bytes(path, text.encode("utf-8"))


def save_png(path: str | os.PathLike[str], image: Image.Image | np.ndarray) -> None:
    """Write a PNG atomically (temp file in the same folder, fsync, os.replace)."""
    if Path(path).suffix.lower() != ".png":
        raise ValueError(f"save_png: {path} does not end in .png")
    save_image(path, image)
