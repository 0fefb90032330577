"""A loopback HTTP server (127.0.0.1) for download tests: it serves files in the ways a real
server fails (drops, stalls, ignores Range, announces more than it sends). No network."""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Route:
    """How one path is served. ``drop_after``: bytes sent before the connection is cut,
    for the first ``drops`` requests; ``ranges``: whether ``Range`` requests are honoured;
    ``stall``: never answer; ``status``: an error status instead of the file;
    ``announce``: the Content-Length sent (default: the true length)."""

    body: bytes = b""
    ranges: bool = True
    drop_after: int | None = None
    drops: int = 0
    stall: bool = False
    status: int = 200
    announce: int | None = None
    requests: list[str | None] = field(default_factory=list)  # the Range header of each


class LoopbackServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.release = threading.Event()  # lets stalled handlers finish at shutdown
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                route = server.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                route.requests.append(self.headers.get("Range"))
                if route.stall:
                    server.release.wait(30)
                    return
                if route.status != 200:
                    self.send_error(route.status)
                    return
                body, start = route.body, 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match and route.ranges:
                    start = int(match.group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                part = body[start:]
                length = route.announce if route.announce is not None else len(part)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                if route.drop_after is not None and route.drops > 0:
                    route.drops -= 1
                    self.wfile.write(part[: route.drop_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(part)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def add(self, path: str, route: Route) -> str:
        self.routes[path] = route
        return self.url(path)


@contextmanager
def loopback_server() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.httpd.shutdown()
        server.httpd.server_close()
