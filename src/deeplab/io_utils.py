"""File I/O shared by the whole package: atomic writes, and JSON files read with one-line
errors (:func:`read_json`).

A reader (another process, a crashed run resumed later) must never see a half-written
checkpoint, label PNG or report: we write to a temporary file in the destination folder,
flush and fsync it, then ``os.replace`` it over the target, which is atomic on POSIX and
Windows when both paths are on the same file system (hence the same folder).

A process killed between the two leaves its temporary file behind. Temporary names carry
the writer's process id (``.NAME.<pid>.<random>.tmp``); the first write of a process into a
folder removes the temporary files there whose process no longer exists (once per folder:
a folder of many outputs is not listed again for every file).

A full disk (or quota) is reported as :class:`DiskFullError`, naming the file, the bytes the
write needed and the bytes free; the target keeps its previous content and the temporary
file is removed, so the run that failed can be resumed once space is made.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "DiskFullError",
    "append_synced",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "read_json",
    "reporting_disk_full",
]

_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class DiskFullError(OSError):
    """A write failed for want of space: which file, how many bytes, how many were free.

    ``errno`` is the original ENOSPC or EDQUOT, so code that tests for those still works.
    """

    def __init__(self, code: int, path: Path, needed: int | None, free: int | None) -> None:
        super().__init__(code, os.strerror(code), str(path))
        self.path, self.needed, self.free = path, needed, free

    def __str__(self) -> str:
        need = "an unknown number of bytes" if self.needed is None else _size(self.needed)
        free = "the free space is unknown" if self.free is None else f"{_size(self.free)} free"
        return (
            f"{self.strerror} while writing {self.path}: it needs {need}, {free} there; "
            "make space and run again (what was finished is kept)"
        )


def _size(n: int) -> str:
    return f"{n} bytes ({n / 1e6:.1f} MB)" if n >= 10_000 else f"{n} bytes"


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


@contextlib.contextmanager
def reporting_disk_full(path: str | os.PathLike[str], needed: int | None) -> Iterator[None]:
    """Turn an ENOSPC/EDQUOT ``OSError`` raised inside into a :class:`DiskFullError` about
    ``path`` (``needed`` bytes; None if unknown). Other errors pass unchanged."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as exc:
        code = exc.errno
        if code is None or code not in _FULL:
            raise
        target = Path(path)
        raise DiskFullError(code, target, needed, _free_bytes(target.parent)) from exc


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once at import so that no other thread
    # can create a file during the moment the mask is 0.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str],
    mode: str = "wb",
    encoding: str | None = None,
    size: int | None = None,
) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path``.

    ``mode`` is ``"wb"`` or ``"w"`` (text, UTF-8 unless ``encoding`` says otherwise). On an
    exception the temporary file is removed and ``path`` is left untouched. The parent
    folder is created if needed. ``size`` (bytes, if known) goes into a
    :class:`DiskFullError`'s message.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    target = Path(path)
    with reporting_disk_full(target, size), _atomic_write(target, mode, encoding) as handle:
        yield handle


@contextlib.contextmanager
def _atomic_write(target: Path, mode: str, encoding: str | None) -> Iterator[IO[Any]]:
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(target.parent)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent
    )
    tmp = Path(tmp_name)
    try:
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        with contextlib.suppress(OSError, NotImplementedError):
            os.chmod(fd, 0o666 & ~_UMASK)
        if mode == "wb":
            handle: IO[Any] = os.fdopen(fd, "wb")
        else:
            handle = os.fdopen(fd, "w", encoding=encoding or "utf-8", newline="")
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but is not ours, or the platform cannot tell: keep its file
    return True


_TEMP_NAME = re.compile(r"^\..+\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")
_cleaned: set[tuple[int, str]] = set()  # (pid, folder) pairs already cleaned


def _remove_orphans(folder: Path) -> None:
    """Delete the temporary files in ``folder`` left by writers that were killed."""
    key = (os.getpid(), str(folder))
    if key in _cleaned:
        return
    _cleaned.add(key)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None or int(match["pid"]) == os.getpid():
            continue
        if not _pid_alive(int(match["pid"])):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (e.g. Windows).
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, "wb", size=len(data)) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write_bytes(path, text.encode(encoding))


def append_synced(path: str | os.PathLike[str], text: str) -> None:
    """Append ``text`` (UTF-8) to ``path`` in one write, flushed and fsync'ed: for logs of
    one line per record, where a kill loses at most the line being written (readers drop a
    partial last line). A full disk is a :class:`DiskFullError`."""
    data = text.encode("utf-8")
    with reporting_disk_full(path, len(data)), open(path, "ab") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def read_json(path: str | os.PathLike[str], what: str = "JSON") -> Any:
    """The value in a JSON file. Text that is not UTF-8, not valid JSON (``what`` names
    what it should be) or nested too deeply is a one-line ValueError naming the file; a
    missing file raises FileNotFoundError."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    except ValueError as exc:  # JSONDecodeError, or an integer of over 4300 digits
        raise ValueError(f"{p}: not valid {what} ({exc})") from None
    except RecursionError:
        raise ValueError(f"{p}: JSON nested too deeply") from None
