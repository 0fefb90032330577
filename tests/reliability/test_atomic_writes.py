"""Interrupted writes: an exception or a SIGKILL in the middle of a write never leaves a
half-written file at the target path (deeplab.io_utils)."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deeplab.io_utils import atomic_write, atomic_write_bytes, atomic_write_text
from reliability.fuzzing import worker_env

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")

SIZE = 8 * 2**20

# Writes version 1, 2, 3, ... of an 8 MB file forever, each through atomic_write_bytes,
# saying "start N" just before each write. A version is a header line "version length
# sha256" and a body that differs per version.
WRITER = """
import hashlib, sys
from deeplab.io_utils import atomic_write_bytes
target, size = sys.argv[1], int(sys.argv[2])
version = 0
while True:
    version += 1
    body = bytes([version % 251]) * size
    data = f"{version} {size} {hashlib.sha256(body).hexdigest()}\\n".encode() + body
    print("start", version, flush=True)
    atomic_write_bytes(target, data)
"""


def _check_complete(path: Path) -> int:
    """The version of a complete file; AssertionError if it is partial or mixed."""
    data = path.read_bytes()
    head, _, body = data.partition(b"\n")
    version, size, digest = head.decode().split()
    assert len(body) == int(size), f"{len(body)} of {size} bytes"
    assert hashlib.sha256(body).hexdigest() == digest, "body of another version"
    assert body[:1] == bytes([int(version) % 251])
    return int(version)


def test_sigkill_during_writes_leaves_the_previous_version_or_nothing(tmp_path: Path) -> None:
    rng = random.Random(0)
    target = tmp_path / "checkpoint.bin"
    versions, interrupted = [], 0
    for kill in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(target), str(SIZE)],
            stdout=subprocess.PIPE,
            env=worker_env(),
        )
        # Let 0-2 writes complete, then kill a few milliseconds into the next one (an 8 MB
        # write and its fsync take 10-20 ms here).
        for _ in range(kill % 3 + 1):
            assert proc.stdout.readline().startswith(b"start")
        time.sleep(rng.uniform(0.0, 0.005))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        if target.exists():
            versions.append(_check_complete(target))
        else:
            assert not versions, "the target vanished after a complete write"
        leftovers = list(tmp_path.glob(".checkpoint.bin.*.tmp"))
        interrupted += bool(leftovers)
        for leftover in leftovers:  # a killed writer cannot clean up; the target is intact
            leftover.unlink()
    # The kills did land in the middle of writes, and each left a complete file behind.
    assert interrupted >= 3, f"only {interrupted} of 6 kills interrupted a write"
    assert versions


def test_an_exception_mid_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    atomic_write_text(target, "old, complete\n")
    with pytest.raises(RuntimeError, match="disk gone"), atomic_write(target) as handle:
        handle.write(b"new, half")
        raise RuntimeError("disk gone")
    assert target.read_text() == "old, complete\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    # A new file that fails is not created at all.
    with pytest.raises(KeyboardInterrupt), atomic_write(tmp_path / "new.bin") as handle:
        handle.write(b"x" * 1000)
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_a_failing_fsync_or_rename_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "labels.png"
    atomic_write_bytes(target, b"old")
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left")))
        with pytest.raises(OSError, match="No space left"):
            atomic_write_bytes(target, b"new" * 1000)
    with monkeypatch.context() as m:
        m.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(OSError(18, "cross-device")))
        with pytest.raises(OSError, match="cross-device"):
            atomic_write_bytes(target, b"new" * 1000)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.png"]


def test_the_writes_of_the_package_go_through_atomic_write() -> None:
    """Files the package writes for the user (labels, checkpoints, reports, configs) use
    io_utils; a direct open(..., 'w') / write_bytes / np.save to a path would not be atomic."""
    import ast

    src = Path(__file__).resolve().parents[2] / "src" / "deeplab"
    direct = []
    for path in sorted(src.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            mode = next(
                (a.value for a in node.args[1:2] if isinstance(a, ast.Constant)),
                next(
                    (
                        k.value.value
                        for k in node.keywords
                        if k.arg == "mode" and isinstance(k.value, ast.Constant)
                    ),
                    None,
                ),
            )
            # Path.write_bytes/write_text, not image_io's atomic functions of those names.
            method = (
                isinstance(func, ast.Attribute)
                and name in ("write_bytes", "write_text")
                and not (isinstance(func.value, ast.Name) and func.value.id == "image_io")
            )
            if (name == "open" and isinstance(mode, str) and "w" in mode) or method:
                direct.append(f"{path.relative_to(src)}:{node.lineno}: {name}")
    # The atomic helpers themselves, and appending to a JSONL log (one fsync'ed line at a
    # time: a kill loses at most the line being written, which the reader skips).
    allowed = ("io_utils.py", "image_io.py", "train/logs.py")
    assert [d for d in direct if not d.startswith(allowed)] == []


def test_killed_writers_temporary_files_are_removed_by_the_next_write(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(dead.stdout)
    target = tmp_path / "model.v1.safetensors"
    orphan = tmp_path / f".model.v1.safetensors.{dead_pid}.abc123.tmp"
    alive = tmp_path / f".model.v1.safetensors.{os.getppid()}.def456.tmp"  # a live writer
    other = tmp_path / f".other.png.{dead_pid}.ghi789.tmp"  # another target's, also dead
    user = tmp_path / ".notes.tmp"  # not a name atomic_write makes
    for f in (orphan, alive, other, user):
        f.write_bytes(b"half a file")
    atomic_write_bytes(target, b"whole")
    assert target.read_bytes() == b"whole"
    assert not orphan.exists() and not other.exists()
    assert alive.exists() and user.exists()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([target.name, alive.name, user.name])
