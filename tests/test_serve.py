"""The web demo: its JSON API on a real uvicorn server, and the page in headless Chromium.

The browser test drives Debian's chromium + chromium-driver through Selenium (never a
downloaded browser). It skips when they are missing, unless DEEPLAB_REQUIRE_BROWSER=1
(set by `make test` as root, which installs them): then it fails.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import re
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from deeplab.data import SyntheticScenes  # noqa: E402
from deeplab.models import load_network  # noqa: E402
from deeplab.serve import SegmentService, create_app, decode_image  # noqa: E402
from serve.helpers import free_port as _free_port  # noqa: E402
from serve.helpers import png_bytes as _png  # noqa: E402

MAX_UPLOAD = 3 * 2**20
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


@dataclass
class Server:
    url: str
    service: SegmentService


@pytest.fixture(scope="module")
def server(tiny_weights: Path) -> Iterator[Server]:
    """deeplab-largefov-tiny (fresh weights, synthetic classes) served on 127.0.0.1."""
    net = load_network(None, tiny_weights)
    service = SegmentService(net.model, net.info, cache_size=2, max_pixels=600_000)
    app = create_app(service, max_upload_bytes=MAX_UPLOAD)
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield Server(f"http://127.0.0.1:{port}", service)
    finally:
        uv.should_exit = True
        thread.join(timeout=10)


def _request(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        url, data=data, headers=headers or {}, method="POST" if data is not None else "GET"
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture(scope="module")
def scene_png() -> bytes:
    return _png(SyntheticScenes(1, size=(72, 96), seed=3)[0].image)


def test_upload_runs_network_once_and_crf_requests_only_the_crf(server: Server, scene_png: bytes):
    before = server.service.stats()
    status, first = _request(f"{server.url}/api/images", scene_png, {"Content-Type": "image/png"})
    assert status == 200, first
    assert (first["width"], first["height"]) == (96, 72)
    for key in ("image", "dcnn", "crf"):
        assert first[key].startswith("data:image/png;base64,")
    status, again = _request(
        f"{server.url}/api/images/{first['id']}/crf",
        json.dumps({"w1": 0, "w2": 0, "iterations": 2}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 200, again
    assert again["params"]["iterations"] == 2 and again["params"]["w1"] == 0
    after = server.service.stats()
    assert after["network_runs"] == before["network_runs"] + 1
    assert after["crf_runs"] == before["crf_runs"] + 2
    # Without pairwise terms the CRF's answer is the network's argmax: same overlay.
    assert again["crf"] == first["dcnn"]


def test_multipart_upload_is_parsed_in_memory(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Over Starlette's 1 MiB spooling threshold (a spooled upload would reach the disk):
    # an uncompressed PNG of a scene, whose smooth colours keep the CRF quick.
    buffer = io.BytesIO()
    scene = SyntheticScenes(1, size=(610, 610), seed=4)[0].image
    Image.fromarray(scene).save(buffer, format="PNG", compress_level=0)
    png = buffer.getvalue()
    assert len(png) > 2**20
    boundary = "deeplab-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="n.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{boundary}--\r\n".encode()
    )
    real_open, real_os_open = builtins.open, os.open
    writes: list[str] = []

    def guarded_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(c in mode for c in "wax+"):
            writes.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            writes.append(str(path))
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    status, result = _request(
        f"{server.url}/api/images",
        body,
        {"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    monkeypatch.undo()
    assert status == 200, result
    assert (result["width"], result["height"]) == (610, 610)
    assert writes == []


def _read_response(sock: socket.socket) -> str:
    """One HTTP response (headers and a Content-Length body), however it is split up."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
    while match and len(body) < int(match.group(1)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return (head + b"\r\n\r\n" + body).decode("latin-1")


def test_refuses_large_uploads_before_reading_them(server: Server) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        # Announce more than the limit and send no body at all: the answer must come anyway.
        sock.sendall(
            f"POST /api/images HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\n"
            f"Content-Length: {MAX_UPLOAD + 1}\r\n\r\n".encode()
        )
        reply = _read_response(sock)
    assert reply.startswith("HTTP/1.1 413"), reply
    assert "at most 3.0 MiB" in reply


def test_refuses_non_images_and_bad_parameters(server: Server, scene_png: bytes) -> None:
    status, body = _request(
        f"{server.url}/api/images", b"<svg xmlns='x'></svg>", {"Content-Type": "image/svg+xml"}
    )
    assert status == 415 and "not a readable image" in body["detail"]
    status, body = _request(f"{server.url}/api/images", b"", {"Content-Type": "image/png"})
    assert status == 400
    status, first = _request(f"{server.url}/api/images", scene_png, {"Content-Type": "image/png"})
    crf_url = f"{server.url}/api/images/{first['id']}/crf"
    for params, status_want in (
        ({"w1": -1}, 422),
        ({"iterations": 51}, 422),
        ({"theta_alpha": 0}, 422),
        ({"rm": 1}, 422),
    ):
        status, body = _request(
            crf_url, json.dumps(params).encode(), {"Content-Type": "application/json"}
        )
        assert status == status_want, (params, body)
    status, body = _request(f"{server.url}/api/images/nonexistent/crf", b"{}")
    assert status == 404
    status, body = _request(crf_url, b"{" + b" " * 100_000 + b"}")
    assert status == 413 and "too large" in body["detail"]


def test_decode_image_limits() -> None:
    small = _png(np.zeros((10, 20, 3), np.uint8))
    assert decode_image(small).shape == (10, 20, 3)
    from deeplab.serve import ServiceError

    with pytest.raises(ServiceError) as info:
        decode_image(small, max_pixels=199)
    assert info.value.status == 413 and "20x10 = 200 pixels" in info.value.message
    with pytest.raises(ServiceError) as info:
        decode_image(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")
    assert info.value.status == 415


def test_cache_keeps_the_most_recent_images(server: Server, scene_png: bytes) -> None:
    ids = [
        _request(f"{server.url}/api/images", scene_png, {"Content-Type": "image/png"})[1]["id"]
        for _ in range(3)
    ]
    assert len(set(ids)) == 3
    status, _ = _request(f"{server.url}/api/images/{ids[0]}/crf", b"{}")
    assert status == 404  # dropped: the cache holds 2
    status, _ = _request(f"{server.url}/api/images/{ids[2]}/crf", b"{}")
    assert status == 200


def _browser_paths() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def test_page_in_headless_chromium(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _browser_paths()
    if paths is None:
        if os.environ.get("DEEPLAB_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium / chromedriver not found but DEEPLAB_REQUIRE_BROWSER=1")
        pytest.skip("chromium and chromedriver are not installed (make test installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.common.selenium_manager import SeleniumManager
    from selenium.webdriver.support.ui import WebDriverWait

    def no_download(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Selenium Manager would look for (download) a browser or driver")

    monkeypatch.setattr(SeleniumManager, "binary_paths", no_download, raising=False)
    chromium, chromedriver = paths
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    scene = tmp_path / "scene.png"
    scene.write_bytes(_png(SyntheticScenes(1, size=(80, 120), seed=5)[0].image))
    before = server.service.stats()
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(server.url + "/")
        wait.until(lambda d: d.find_elements(By.ID, "slider-w1"))
        assert "Network: deeplab-largefov-tiny" in driver.find_element(By.ID, "network").text
        warning = driver.find_element(By.ID, "warning")  # synthetic weights: say so
        assert warning.is_displayed() and "deeplab convert" in warning.text
        assert len(warning.text) < 400  # a note, not a wall of commands
        # Before any upload: an empty state that says what to do, no image elements shown.
        empty = driver.find_element(By.ID, "empty")
        assert empty.is_displayed() and "Choose a photo" in empty.text
        assert not driver.find_element(By.ID, "results").is_displayed()
        _check_page(driver, tmp_path / "empty.png")
        info = json.loads(urllib.request.urlopen(server.url + "/api/info", timeout=30).read())
        for name, value in info["defaults"].items():
            if name == "normalization":
                continue
            slider = driver.find_element(By.ID, f"slider-{name}")
            low, high = float(slider.get_attribute("min")), float(slider.get_attribute("max"))
            assert low <= value <= high and float(slider.get_attribute("value")) == value, name
        _check_legend(driver, info)
        driver.find_element(By.ID, "file").send_keys(str(scene))

        def src(name: str) -> str:
            return driver.find_element(By.ID, name).get_attribute("src") or ""

        def runs() -> int:
            return int(driver.find_element(By.ID, "status").get_attribute("data-crf-runs"))

        wait.until(lambda d: src("img-dcnn").startswith("data:image/png") and runs() > 0)
        assert src("img-crf").startswith("data:image/png")
        assert src("img-input").startswith("data:image/png")
        first_runs = runs()
        slider = driver.find_element(By.ID, "slider-iterations")
        slider.send_keys(Keys.HOME)  # a real key press on the range input: 0 iterations
        wait.until(lambda d: runs() > first_runs)
        assert driver.find_element(By.ID, "value-iterations").text == "0"
        # Zero iterations: the CRF result is the network's argmax again.
        wait.until(lambda d: src("img-crf") == src("img-dcnn"))
        after = server.service.stats()
        assert after["network_runs"] == before["network_runs"] + 1
        assert after["crf_runs"] >= before["crf_runs"] + 2
        assert "error" not in driver.find_element(By.ID, "status").text
        _check_page(driver, tmp_path / "results.png")
        _check_legend(driver, info)
        # Labels are drawn over the image: at any opacity above 0 even an all-background
        # result differs from the input; at 0 the image shows through unchanged.
        base, labelled = (
            _pixels(driver.find_element(By.ID, name).find_element(By.XPATH, ".."))
            for name in ("base-dcnn", "img-dcnn")
        )
        image_panel = _pixels(driver.find_element(By.ID, "img-input").find_element(By.XPATH, ".."))
        assert base.shape == image_panel.shape
        assert np.abs(labelled.astype(int) - image_panel.astype(int)).mean() > 10
        driver.find_element(By.ID, "opacity").send_keys(Keys.HOME)
        wait.until(lambda d: d.find_element(By.ID, "opacity-value").text == "0.00")
        shown = _pixels(driver.find_element(By.ID, "img-dcnn").find_element(By.XPATH, ".."))
        assert np.abs(shown.astype(int) - image_panel.astype(int)).mean() < 2
        # A rejected upload: the previous results go, the error is in words.
        bad = tmp_path / "notes.png"
        bad.write_bytes(b"these are notes, not a picture")
        driver.find_element(By.ID, "file").send_keys(str(bad))
        wait.until(lambda d: "Error" in d.find_element(By.ID, "status").text)
        status = driver.find_element(By.ID, "status").text
        assert "not a readable image" in status, status
        assert not re.search(r"[A-Za-z]+(Error|Exception)\b|Traceback|\b[1-5]\d\d:", status), status
        assert not driver.find_element(By.ID, "results").is_displayed()
        assert driver.find_element(By.ID, "empty").is_displayed()
        assert not src("img-dcnn") and not src("img-crf") and not src("img-input")
        _check_page(driver, tmp_path / "rejected.png")
    finally:
        driver.quit()


def _pixels(element: Any) -> np.ndarray:
    """An element's screenshot as (H, W, 3) uint8."""
    return np.asarray(Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB"))


def _check_page(driver: Any, path: Path) -> None:
    """A screenshot, kept for a person to look at, and no broken image on it: every image
    the page shows has loaded."""
    driver.save_screenshot(str(path))
    assert Image.open(path).size[0] > 0
    broken = driver.execute_script(
        "return Array.from(document.images).filter((i) => i.getClientRects().length > 0"
        " && !(i.complete && i.naturalWidth > 0)).map((i) => i.id);"
    )
    assert broken == [], f"broken images shown: {broken}"


def _check_legend(driver: Any, info: dict[str, Any]) -> None:
    """The legend is on screen with every class's name and colour."""
    from selenium.webdriver.common.by import By

    legend = driver.find_element(By.ID, "legend")
    assert legend.is_displayed()
    pixels = _pixels(legend).reshape(-1, 3).astype(int)
    for name, colour in zip(info["classes"], info["palette"], strict=False):
        assert name in legend.text
        distance = np.abs(pixels - np.array(colour)).max(axis=1)
        assert (distance <= 3).sum() >= 25, f"the legend shows no {name} swatch {colour}"
