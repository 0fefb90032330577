"""deeplab.download against a loopback server: good, truncated, wrong-hash, dropped and silent
downloads. Every failure is a clear DownloadError and leaves nothing in the cache folder."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from deeplab.download import DownloadError, fetch, hash_prefix_of
from download_server import Route, loopback_server

PAYLOAD = bytes(range(256)) * 1024  # 256 KiB: several read chunks
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server():
    with loopback_server() as s:
        yield s


def test_hash_prefix_follows_torch_hub_names() -> None:
    assert hash_prefix_of("vgg16-397923af.pth") == "397923af"
    assert hash_prefix_of("https://x/models/resnet50-0676ba61.pth") == "0676ba61"
    assert hash_prefix_of("vgg16.pth") is None
    assert hash_prefix_of("model-1234.pth") is None  # fewer than 8 hex digits


def test_good_download_checks_the_hash_and_reports_progress(server, tmp_path: Path) -> None:
    url = server.add(f"/w-{DIGEST[:8]}.pth", Route(PAYLOAD))
    seen: list[tuple[int, int | None]] = []
    dest = tmp_path / "cache" / "w.pth"
    digest = fetch(url, dest, sha256=hash_prefix_of(url), progress=lambda d, t: seen.append((d, t)))
    assert digest == DIGEST and dest.read_bytes() == PAYLOAD
    assert seen[0] == (0, len(PAYLOAD)) and seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["w.pth"]
    # Present and complete: not fetched again.
    assert fetch(url, dest, sha256=DIGEST) == DIGEST
    assert len(server.routes[f"/w-{DIGEST[:8]}.pth"].requests) == 1


def test_unknown_hash_is_written_beside_the_file(server, tmp_path: Path) -> None:
    url = server.add("/released.caffemodel", Route(PAYLOAD))
    assert fetch(url, tmp_path / "released.caffemodel") == DIGEST
    line = (tmp_path / "released.caffemodel.sha256").read_text()
    assert line == f"{DIGEST}  released.caffemodel\n"


def test_wrong_hash_keeps_nothing(server, tmp_path: Path) -> None:
    url = server.add("/w.pth", Route(PAYLOAD))
    with pytest.raises(
        DownloadError,
        match=rf"sha256 of the downloaded file is {DIGEST}, "
        r"expected 00000000\.\.\.",
    ):
        fetch(url, tmp_path / "w.pth", sha256="00000000")
    assert list(tmp_path.iterdir()) == []


def test_truncated_file_fails_the_hash(server, tmp_path: Path) -> None:
    # The server sends (and announces) only part of the file: complete as far as HTTP goes.
    url = server.add("/w.pth", Route(PAYLOAD[:1000]))
    with pytest.raises(DownloadError, match="sha256"):
        fetch(url, tmp_path / "w.pth", sha256=DIGEST)
    assert list(tmp_path.iterdir()) == []


def test_connection_that_keeps_dropping_gives_up_cleanly(server, tmp_path: Path) -> None:
    route = Route(PAYLOAD, drop_after=5000, drops=99)
    url = server.add("/w.pth", route)
    with pytest.raises(
        DownloadError,
        match=r"connection closed after \d+ of \d+ bytes "
        r"\(gave up after 3 attempts\)",
    ):
        fetch(url, tmp_path / "w.pth", sha256=DIGEST)
    assert list(tmp_path.iterdir()) == []
    # Each retry asked for the rest only.
    assert route.requests == [None, "bytes=5000-", "bytes=10000-"]


def test_dropped_connection_resumes_with_range(server, tmp_path: Path) -> None:
    route = Route(PAYLOAD, drop_after=70_000, drops=1)
    url = server.add("/w.pth", route)
    seen: list[int] = []
    assert (
        fetch(url, tmp_path / "w.pth", sha256=DIGEST, progress=lambda d, t: seen.append(d))
        == DIGEST
    )
    assert route.requests == [None, "bytes=70000-"]
    assert (tmp_path / "w.pth").read_bytes() == PAYLOAD
    assert seen[-1] == len(PAYLOAD)


def test_dropped_connection_restarts_when_the_server_ignores_range(server, tmp_path) -> None:
    route = Route(PAYLOAD, drop_after=70_000, drops=1, ranges=False)
    url = server.add("/w.pth", route)
    assert fetch(url, tmp_path / "w.pth", sha256=DIGEST) == DIGEST
    assert route.requests == [None, "bytes=70000-"]  # asked, got the whole file: restarted
    assert (tmp_path / "w.pth").read_bytes() == PAYLOAD


def test_server_that_never_answers_times_out(server, tmp_path: Path) -> None:
    url = server.add("/w.pth", Route(PAYLOAD, stall=True))
    with pytest.raises(DownloadError, match=r"no answer within 0.3 s \(gave up after 2 attempts"):
        fetch(url, tmp_path / "w.pth", sha256=DIGEST, timeout=0.3, attempts=2)
    assert list(tmp_path.iterdir()) == []
    # A later call (the server fixed) downloads cleanly into the same folder.
    server.routes["/w.pth"] = Route(PAYLOAD)
    assert fetch(url, tmp_path / "w.pth", sha256=DIGEST) == DIGEST


def test_http_errors_and_refused_connections_are_named(server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"/missing.pth: HTTP 404"):
        fetch(server.url("/missing.pth"), tmp_path / "w.pth")
    url = server.add("/broken.pth", Route(PAYLOAD, status=503))
    with pytest.raises(DownloadError, match=r"HTTP 503.*gave up after 2 attempts"):
        fetch(url, tmp_path / "w.pth", attempts=2)
    closed = server.url("/w.pth")
    server.httpd.server_close()  # nothing listens on the port any more
    with pytest.raises(DownloadError, match="cannot connect"):
        fetch(closed, tmp_path / "w.pth", timeout=2)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_are_value_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hex digits"):
        fetch("http://127.0.0.1:9/x", tmp_path / "x", sha256="not-hex")
    with pytest.raises(ValueError, match="attempts"):
        fetch("http://127.0.0.1:9/x", tmp_path / "x", attempts=0)


def test_nothing_connects_on_import() -> None:
    # Importing the package and building the command line must not touch the network.
    code = (
        "import socket\n"
        "def refuse(*a, **k):\n"
        "    raise AssertionError('network used on import')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "import deeplab, deeplab.crf, deeplab.download, deeplab.models, deeplab.cli\n"
        "deeplab.cli.build_parser()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_tests_cannot_reach_the_network(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="tests do not use the network"):
        fetch("http://192.0.2.1/w.pth", tmp_path / "w.pth", timeout=1)
    assert list(tmp_path.iterdir()) == []
