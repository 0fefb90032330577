"""The web demo with hostile uploads: size caps (declared and streamed), non-images and
image bombs refused with 4xx, and nothing written to disk while it handles them."""

from __future__ import annotations

import builtins
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from reliability.targets import SERVE_MAX_UPLOAD, _serve_client
from reliability.test_images import _png_header


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _chunks(total: int, size: int = 8192) -> Iterator[bytes]:
    yield b"\x89PNG\r\n\x1a\n"
    sent = 8
    while sent < total:
        yield b"\0" * size
        sent += size


def test_a_streamed_upload_over_the_cap_is_cut_off() -> None:
    client, _ = _serve_client()
    # No Content-Length (chunked): the server must count as it reads.
    response = client.post("/api/images", content=_chunks(4 * SERVE_MAX_UPLOAD))
    assert response.status_code == 413 and "more than" in response.json()["detail"]
    response = client.post(
        "/api/images", content=b"x", headers={"content-length": str(SERVE_MAX_UPLOAD + 1)}
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("eps", 415),
        ("text", 415),
        ("truncated", 415),
        ("bomb", 413),
        ("wide", 413),
        ("no-plte", 200),
        ("sixteen-bit", 200),
        ("empty", 400),
    ],
)
def test_hostile_images_get_4xx_never_500(name: str, status: int) -> None:
    client, _ = _serve_client()
    rng = np.random.default_rng(0)
    small = _png(Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)))
    pal = Image.fromarray(rng.integers(0, 4, (20, 30), dtype=np.uint8))
    pal.putpalette([0, 0, 0, 255, 0, 0] * 128)
    from reliability.targets import _png_without_palette

    bodies = {
        "eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
        "text": b"<html>not an image</html>",
        "truncated": small[:60],
        "bomb": _png_header(100_000, 100_000),
        "wide": _png_header(2_000, 1_000),  # 2 M pixels: over this server's 200 k
        "no-plte": _png_without_palette(_png(pal)),
        "sixteen-bit": _png(Image.fromarray(rng.integers(0, 60000, (20, 30)).astype(np.uint16))),
        "empty": b"",
    }
    response = client.post("/api/images", content=bodies[name])
    assert response.status_code == status, response.text[:300]
    if status != 200:
        assert response.json()["detail"]


def test_nothing_is_written_to_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Uploads are parsed in memory: no temporary file, no file in the working folder."""
    client, image_id = _serve_client()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.chdir(tmp_path)
    opened: list[str] = []
    real_open = os.open

    def watch(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            opened.append(os.fspath(path))  # type: ignore[arg-type]
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    real_builtin_open = builtins.open

    def watch_builtin(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        if any(c in mode for c in "wax+"):
            opened.append(str(file))
        return real_builtin_open(file, mode, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "open", watch)  # tempfile.mkstemp and friends
    monkeypatch.setattr(builtins, "open", watch_builtin)
    image = _png(Image.fromarray(np.zeros((16, 24, 3), np.uint8)))
    boundary = "b0undary"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    assert client.post("/api/images", content=image).status_code == 200
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    assert client.post("/api/images", content=form, headers=headers).status_code == 200
    assert client.post(f"/api/images/{image_id}/crf", content=b'{"w1": 2}').status_code in (
        200,
        404,
    )
    assert client.post("/api/images", content=b"%!PS-Adobe-3.0 EPSF").status_code == 415
    assert list(scratch.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]
    assert opened == []
