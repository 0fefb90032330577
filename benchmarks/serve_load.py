"""`deeplab serve` under load, on loopback: concurrent clients uploading photos.

    python benchmarks/serve_load.py                       # 1, 4, 16, 64 clients; 1 and 4 MP
    python benchmarks/serve_load.py --clients 1 4 --sizes 1 --requests 1   # a quick look
    python benchmarks/serve_load.py -- --queue 4 --timeout 60   # after --: serve's options

Starts `deeplab serve` (default settings and the shipped model unless options follow
`--`) on 127.0.0.1 and, for each photo size and number of clients, lets every client
upload ``--requests`` JPEGs one after the other (each new upload waits for the previous
answer) while a monitor asks for ``/api/info`` every 50 ms. Prints per level: uploads
served (200), refused (503; p95 of the time to the refusal), failed (anything else:
other statuses, resets, timeouts), latency p50/p95 of the served ones, ``/api/info`` p95
during the level and the server's peak resident memory (sampled every 20 ms; the last
column is the kernel's high-water mark since the server started). Nothing is asserted.
Bounded: at most ``--level-seconds`` per level (no new upload starts after it) and
``--timeout`` per request.

The photo is the VOC image the CRF benchmarks use, resized, when the shared data is
there (upscaled, so smoother than a camera's photo of that size), else a synthetic scene
with sensor-like noise; both are sent as JPEG (quality 90).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "tests" / "data" / "voc_mini" / "VOC2012" / "JPEGImages" / "2007_000033.jpg"
HOST = "127.0.0.1"  # loopback only: this script never talks to another machine


def make_jpeg(megapixels: float, seed: int = 0) -> bytes:
    """A 4:3 photo of about ``megapixels`` as JPEG bytes (module docstring)."""
    height = int((megapixels * 1e6 * 3 / 4) ** 0.5)
    width = height * 4 // 3
    if PHOTO.is_file():
        with Image.open(PHOTO) as im:
            image = np.array(im.convert("RGB").resize((width, height), Image.BICUBIC))
    else:
        from deeplab.data import SyntheticScenes

        scene = SyntheticScenes(1, size=(height, width), seed=seed)[0].image
        noise = np.random.default_rng(seed).normal(0, 6, scene.shape)
        image = np.clip(scene + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB (Linux)."""
    values = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                values[key] = int(value.split()[0])
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


@dataclass
class Level:
    served: list[float] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    info: list[float] = field(default_factory=list)
    peak_kib: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def upload(port: int, body: bytes, timeout: float) -> tuple[str, float]:
    start = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", "/api/images", body=body, headers={"Content-Type": "image/jpeg"})
        response = conn.getresponse()
        data = response.read()
        status = response.status
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}", time.perf_counter() - start
    finally:
        conn.close()
    seconds = time.perf_counter() - start
    if status == 200:
        return ("ok" if json.loads(data).get("crf") else "200 without results"), seconds
    return ("refused" if status == 503 else f"HTTP {status}"), seconds


def run_level(port: int, pid: int, body: bytes, clients: int, args: argparse.Namespace) -> Level:
    level = Level()
    stop_at = time.monotonic() + args.level_seconds
    done = threading.Event()

    def client() -> None:
        for _ in range(args.requests):
            if time.monotonic() > stop_at:
                return
            outcome, seconds = upload(port, body, args.timeout)
            with level.lock:
                if outcome == "ok":
                    level.served.append(seconds)
                elif outcome == "refused":
                    level.refused.append(seconds)
                else:
                    level.failures[outcome] += 1

    def monitor() -> None:
        while not done.is_set():
            start = time.perf_counter()
            try:
                conn = http.client.HTTPConnection(HOST, port, timeout=10)
                conn.request("GET", "/api/info")
                conn.getresponse().read()
                conn.close()
                level.info.append(time.perf_counter() - start)
            except (OSError, http.client.HTTPException):
                level.info.append(float("inf"))
            done.wait(0.05)

    def memory() -> None:
        while not done.is_set():
            level.peak_kib = max(level.peak_kib, rss_kib(pid)[0])
            done.wait(0.02)

    helpers = [threading.Thread(target=f, daemon=True) for f in (monitor, memory)]
    workers = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in helpers + workers:
        t.start()
    for t in workers:
        t.join()
    done.set()
    for t in helpers:
        t.join()
    return level


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1.0, 4.0], help="megapixels")
    parser.add_argument("--requests", type=int, default=2, help="uploads per client")
    parser.add_argument("--level-seconds", type=float, default=300.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="per request (client)")
    parser.add_argument("serve_args", nargs="*", help="options for deeplab serve (after --)")
    args = parser.parse_args()
    if max(args.clients) > 256 or args.requests > 100:
        parser.error("at most 256 clients and 100 uploads per client")

    port = free_port()
    command = [sys.executable, "-m", "deeplab", "serve", "--port", str(port), *args.serve_args]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                sys.exit("deeplab serve ended: " + server.stderr.read().decode()[-2000:])
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit("deeplab serve did not start within 120 s")
                time.sleep(0.2)
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        conn.request("GET", "/api/info")
        info = json.loads(conn.getresponse().read())
        conn.close()
        print(
            f"deeplab serve {' '.join(args.serve_args) or '(default settings)'}: queue "
            f"{info['queue_size']}, time limit {info['time_limit_s']:.0f} s, CRF on at most "
            f"{info['crf_max_pixels'] / 1e6:.1f} MP; {args.requests} upload(s) per client; "
            f"RSS after start {rss_kib(server.pid)[0] / 1024:.0f} MiB"
        )
        print(
            "\n| photo | clients | served | refused (503), p95 | failed | latency p50 / p95 (s) "
            "| /api/info p95 (ms) | peak RSS (MiB) | high-water (MiB) |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for megapixels in args.sizes:
            body = make_jpeg(megapixels)
            for clients in args.clients:
                level = run_level(port, server.pid, body, clients, args)
                failed = sum(level.failures.values())
                refused = f"{len(level.refused)}"
                if level.refused:
                    refused += f", {percentile(level.refused, 95) * 1000:.0f} ms"
                why = f" ({dict(level.failures)})" if failed else ""
                print(
                    f"| {megapixels:g} MP ({len(body) / 2**20:.1f} MiB) | {clients} | "
                    f"{len(level.served)} | {refused} | {failed}{why} | "
                    f"{percentile(level.served, 50):.1f} / {percentile(level.served, 95):.1f} | "
                    f"{percentile(level.info, 95) * 1000:.0f} | {level.peak_kib / 1024:.0f} | "
                    f"{rss_kib(server.pid)[1] / 1024:.0f} |",
                    flush=True,
                )
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
