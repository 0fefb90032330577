"""The demo under load on a real uvicorn server: the queue refuses beyond its size before
reading the body, a client that leaves frees its place, the time limit, concurrent uploads
beyond the cache, and SIGTERM on `deeplab serve`."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from deeplab.data import SyntheticScenes  # noqa: E402
from deeplab.models import load_network  # noqa: E402
from deeplab.serve import SegmentService, create_app  # noqa: E402

from .helpers import free_port as _free_port  # noqa: E402
from .helpers import png_bytes as _png  # noqa: E402


@contextmanager
def _serving(app: Any) -> Iterator[int]:
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=15)


class Gate:
    """Holds every network run at its start until opened (a job that takes as long as the
    test wants)."""

    def __init__(self, service: SegmentService) -> None:
        self.entered = threading.Semaphore(0)
        self.open = threading.Event()
        real = service.predictor.stride8_logits

        def held(image: np.ndarray) -> np.ndarray:
            self.entered.release()
            assert self.open.wait(60), "the test never opened the gate"
            return real(image)

        service.predictor.stride8_logits = held  # type: ignore[method-assign]

    def wait_entered(self) -> None:
        assert self.entered.acquire(timeout=60), "no job reached the network"


def _service(tiny_weights: Path, **kwargs: Any) -> SegmentService:
    net = load_network(None, tiny_weights)
    return SegmentService(net.model, net.info, **kwargs)


def _raw_post(port: int, path: str, body: bytes, *, send_body: bool = True) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + (body if send_body else b"")
    )
    return sock


def _reply(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, Any]]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, json.loads(body or b"{}")


def _wait_for(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def scene() -> bytes:
    return _png(SyntheticScenes(1, size=(64, 80), seed=2)[0].image)


def test_the_queue_refuses_beyond_its_size_before_reading_the_body(
    tiny_weights: Path, scene: bytes
) -> None:
    service = _service(tiny_weights)
    gate = Gate(service)
    app = create_app(service, queue_size=2)
    with _serving(app) as port:
        running = _raw_post(port, "/api/images", scene)
        gate.wait_entered()
        waiting = _raw_post(port, "/api/images", scene)
        _wait_for(lambda: app.state.jobs.state()["admitted"] == 2, "two admitted jobs")
        # The third announces its body and sends none: the refusal comes anyway, at once.
        refused = _raw_post(port, "/api/images", scene, send_body=False)
        status, headers, body = _reply(refused)
        assert status == 503 and "busy" in body["detail"]
        assert int(headers["retry-after"]) >= 1
        refused.close()
        # One that sends its whole body still reads its 503 (no reset on the way).
        refused = _raw_post(port, "/api/images", scene + b"\0" * 300_000)
        assert _reply(refused)[0] == 503
        refused.close()
        gate.open.set()
        for sock in (running, waiting):
            status, _, body = _reply(sock)
            sock.close()
            assert status == 200 and body["crf"].startswith("data:image/png")
        state = app.state.jobs.state()
        assert (state["served"], state["refused"], state["admitted"]) == (2, 2, 0)


def test_a_client_that_leaves_frees_its_place_and_its_work_is_dropped(
    tiny_weights: Path, scene: bytes
) -> None:
    service = _service(tiny_weights)
    gate = Gate(service)
    app = create_app(service, queue_size=2)
    jobs = app.state.jobs
    with _serving(app) as port:
        running = _raw_post(port, "/api/images", scene)
        gate.wait_entered()
        waiting = _raw_post(port, "/api/images", scene)
        _wait_for(lambda: jobs.state()["admitted"] == 2, "two admitted jobs")
        refused = _raw_post(port, "/api/images", scene)
        assert _reply(refused)[0] == 503
        refused.close()
        waiting.close()  # left while waiting: its place is free at once
        _wait_for(lambda: jobs.state()["admitted"] == 1, "the waiting job's place")
        running.close()  # left while its network ran: place freed, the CRF never runs
        _wait_for(lambda: jobs.state()["admitted"] == 0, "the running job's place")
        assert jobs.state()["dropped"] == 2
        after = _raw_post(port, "/api/images", scene)
        gate.open.set()
        status, _, body = _reply(after)
        after.close()
        assert status == 200, body
        # The dropped running job's network pass had started; neither dropped job got a
        # CRF run or an answer.
        stats = service.stats()
        assert stats["network_runs"] == 2 and stats["crf_runs"] == 1


def test_a_request_past_the_time_limit_gets_a_clear_504(tiny_weights: Path, scene: bytes) -> None:
    service = _service(tiny_weights)
    gate = Gate(service)
    app = create_app(service, queue_size=2, time_limit=0.5)
    with _serving(app) as port:
        sock = _raw_post(port, "/api/images", scene)
        status, _, body = _reply(sock)
        sock.close()
        gate.open.set()
    assert status == 504 and "did not finish within" in body["detail"]
    _wait_for(lambda: app.state.jobs.state()["admitted"] == 0, "the place back")


def test_concurrent_uploads_beyond_the_cache_each_get_their_own_results(
    tiny_weights: Path,
) -> None:
    service = _service(tiny_weights, cache_size=1)
    app = create_app(service, queue_size=8, workers=3)
    sizes = [(48 + 8 * i, 56 + 8 * i) for i in range(6)]
    images = [_png(SyntheticScenes(1, size=s, seed=i)[0].image) for i, s in enumerate(sizes)]

    with _serving(app) as port:

        def post(data: bytes) -> tuple[int, dict[str, Any], dict[str, Any]]:
            sock = _raw_post(port, "/api/images", data)
            try:
                status, _, body = _reply(sock)
            finally:
                sock.close()
            return status, body, {}

        with ThreadPoolExecutor(len(images)) as pool:
            answers = list(pool.map(post, images))
    for (h, w), (status, body, _) in zip(sizes, answers, strict=True):
        assert status == 200, body
        assert (body["height"], body["width"]) == (h, w)
        for key in ("dcnn", "crf"):
            png = base64.b64decode(body[key].split(",", 1)[1])
            assert Image.open(io.BytesIO(png)).size == (w, h)
    assert len({body["id"] for _, body, _ in answers}) == len(images)
    assert service.stats()["cached_images"] == 1


def test_sigterm_stops_accepting_ends_jobs_and_exits(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "deeplab", "serve", "--port", str(port), "--queue", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "deeplab serve did not start"
                time.sleep(0.2)
        # Two jobs big enough to be running and waiting when the signal comes.
        big = _png(SyntheticScenes(1, size=(900, 1100), seed=1)[0].image)
        socks = [_raw_post(port, "/api/images", big) for _ in range(2)]

        def health() -> dict[str, Any]:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return _reply(s)[2]

        _wait_for(lambda: health()["jobs"]["admitted"] == 2, "two admitted jobs", 60)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        for sock in socks:
            status, _, body = _reply(sock)
            sock.close()
            assert status == 200 or (status == 503 and "shutting down" in body["detail"]), body
        returncode = proc.wait(timeout=30)
        took = time.monotonic() - sent
        assert took < 15, f"the server took {took:.1f} s to stop"
        # uvicorn ends by re-raising the signal it handled: killed by SIGTERM, after the
        # graceful stop.
        assert returncode in (0, -signal.SIGTERM), returncode
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
