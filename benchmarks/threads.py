"""Default threads against --threads 1 for the torch commands, quiet and beside a busy process.

    python benchmarks/threads.py              # about 4 minutes on 2 cores
    python benchmarks/threads.py --repeats 3  # medians of 3 runs per case

Each command runs as a user would start it (a fresh process, wall time from start to
exit): ``deeplab demo`` (the shipped checkpoint on 100 held-out scenes), ``deeplab
train`` (the tiny config, 40 iterations) and ``deeplab evaluate`` (the shipped
checkpoint on 40 synthetic scenes with the tuned CRF, inline). Each is timed with default
options and with ``--threads 1``, on the machine as it is ("quiet": run it with nothing
else of yours running) and with one competing process spinning on one core. The two
settings alternate run by run. Prints a Markdown table of medians; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "src" / "deeplab" / "assets"


def commands(tmp: Path) -> dict[str, list[str]]:
    deeplab = [sys.executable, "-m", "deeplab"]
    config = ROOT / "configs" / "deeplab-largefov-tiny-synthetic.json"
    weights = ASSETS / "deeplab-largefov-tiny-synthetic.safetensors"
    return {
        "demo": [*deeplab, "demo", "--out", str(tmp / "demo"), "--no-progress"],
        "train (tiny, 40 iterations)": [
            *deeplab, "train", "--config", str(config),
            "--data", "synthetic", "--synthetic-size", "128", "128", "--iterations", "40",
            "--out", str(tmp / "train"), "--no-progress",
        ],
        "evaluate (40 scenes, CRF)": [
            *deeplab, "evaluate", "--weights", str(weights),
            "--data", "synthetic", "--synthetic-count", "40", "--synthetic-size", "128", "128",
            "--synthetic-seed", "1", "--crf", str(ASSETS / "crf-synthetic.json"),
            "--workers", "0", "--out", str(tmp / "eval"), "--no-progress",
        ],
    }  # fmt: skip


@contextlib.contextmanager
def busy_process(on: bool) -> Iterator[None]:
    """Another process spinning on one core for the duration of the block (if ``on``)."""
    if not on:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


def run(cmd: list[str], out_dir: Path) -> float:
    subprocess.run(["rm", "-rf", str(out_dir)], check=True)
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs per case (default 2)")
    args = parser.parse_args()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs; load average at start: {load}; medians of {args.repeats}")
    print()
    print("| command | machine | default (s) | --threads 1 (s) | default / --threads 1 |")
    print("|---|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name, cmd in commands(tmp).items():
            out_dir = Path(cmd[cmd.index("--out") + 1])
            run(cmd, out_dir)  # warm caches (numba, file system) once
            for busy in (False, True):
                default, one = [], []
                with busy_process(busy):
                    for _ in range(args.repeats):
                        default.append(run(cmd, out_dir))
                        one.append(run([*cmd, "--threads", "1"], out_dir))
                d, o = statistics.median(default), statistics.median(one)
                machine = "one busy process" if busy else "quiet"
                print(f"| {name} | {machine} | {d:.1f} | {o:.1f} | {d / o:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
