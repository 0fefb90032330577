"""Fetch a published weights file into the cache, checked against its hash.

Used by registered weights names (:mod:`deeplab.models.weights`): nothing downloads on
import, only when a command or :func:`deeplab.models.build_model` asks for a name whose
record knows a URL. Needs the standard library only.

- The file is written to a temporary file beside the target and renamed over it only once
  complete and checked (:func:`deeplab.io_utils.atomic_write`): an error, a wrong hash or a
  kill never leaves a partial file under the target's name, and the temporary file is
  removed on any error (a killed process's is removed by the next writer in that folder).
- A connection that drops or stalls is retried: from where it stopped when the server
  honours an HTTP ``Range`` request (206), else from the start.
- ``sha256``: a full hex digest, or a prefix of one (at least 8 hex digits) as torch.hub
  reads it from a file name such as ``vgg16-397923af.pth`` (:func:`hash_prefix_of`). With
  no known hash the digest is returned and written beside the file (``NAME.sha256``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from http.client import HTTPException
from pathlib import Path
from typing import IO, Any

from deeplab.io_utils import atomic_write, atomic_write_text

__all__ = ["DownloadError", "ProgressCallback", "fetch", "hash_prefix_of"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, "int | None"], None]
"""Called as ``progress(bytes_so_far, total_bytes_or_None)`` while a file downloads."""

CHUNK = 1 << 16
USER_AGENT = "deeplab-weights"
_HUB_HASH = re.compile(r"-([0-9a-f]{8,64})\.[^.]+$")
_HEX = re.compile(r"[0-9a-f]{8,64}")


class DownloadError(OSError):
    """A download that failed: the URL and why (status, timeout, dropped, wrong hash)."""


class _DroppedError(Exception):
    """The transfer stopped before the announced length; retried from where it stopped."""


def hash_prefix_of(filename: str) -> str | None:
    """torch.hub's rule: the hex digits after the last '-' of a file name are the start of
    its sha256 (``vgg16-397923af.pth`` -> ``397923af``); None when the name has none."""
    match = _HUB_HASH.search(Path(filename).name)
    return match.group(1) if match else None


def fetch(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    timeout: float = 30.0,
    attempts: int = 3,
    progress: ProgressCallback | None = None,
) -> str:
    """Download ``url`` to ``dest`` (atomically) and return the file's sha256 hex digest.

    ``sha256``: the expected digest or its first 8+ hex digits (checked before the file is
    put in place); ``None`` writes ``DEST.sha256`` (sha256sum's format) beside the file.
    ``timeout``: seconds without an answer (connecting or between two reads) before an
    attempt is given up; ``attempts``: tries in all for a dropped or stalled connection.
    An existing ``dest`` is taken as downloaded (it can only be there complete and checked).
    Raises :class:`DownloadError` (an ``OSError``) naming the URL and the reason.
    """
    target = Path(dest)
    expected = None if sha256 is None else sha256.lower()
    if expected is not None and not _HEX.fullmatch(expected):
        raise ValueError(f"sha256 {sha256!r}: expected 8 to 64 hex digits")
    if attempts < 1 or not timeout > 0:
        raise ValueError(f"attempts ({attempts}) must be >= 1 and timeout ({timeout}) > 0")
    if target.is_file():
        log.info("%s already downloaded", target)
        return _sha256_of(target)
    log.info("downloading %s to %s", url, target)
    with atomic_write(target, "wb") as handle:
        digest = _download(url, handle, timeout, attempts, progress)
        if expected is not None and not digest.startswith(expected):
            raise DownloadError(
                f"{url}: sha256 of the downloaded file is {digest}, expected "
                f"{expected}{'...' if len(expected) < 64 else ''}: nothing was kept"
            )
    if expected is None:
        atomic_write_text(f"{target}.sha256", f"{digest}  {target.name}\n")
        log.warning("%s: no published hash; sha256 %s (written to %s.sha256)", url, digest, target)
    return digest


class _Progress:
    """Bytes written so far and their running hash, across the attempts of one download."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.hasher = hashlib.sha256()
        self.done = 0

    def restart(self) -> None:
        self.handle.seek(0)
        self.handle.truncate()
        self.hasher = hashlib.sha256()
        self.done = 0

    def add(self, chunk: bytes) -> None:
        self.handle.write(chunk)
        self.hasher.update(chunk)
        self.done += len(chunk)


def _download(
    url: str,
    handle: IO[bytes],
    timeout: float,
    attempts: int,
    progress: ProgressCallback | None,
) -> str:
    state = _Progress(handle)
    for attempt in range(1, attempts + 1):
        try:
            _transfer(url, state, timeout, progress)
            return state.hasher.hexdigest()
        except _DroppedError as exc:
            reason = str(exc)
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
            reason = f"HTTP {exc.code} {exc.reason}"
        except TimeoutError:
            reason = f"no answer within {timeout:g} s"
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                reason = f"no answer within {timeout:g} s"
            elif isinstance(exc.reason, ConnectionRefusedError | socket.gaierror):
                raise DownloadError(f"{url}: cannot connect: {exc.reason}") from None
            else:
                reason = f"connection failed: {exc.reason}"
        except (ConnectionError, HTTPException) as exc:
            reason = f"connection dropped: {exc!r}"
        if attempt < attempts:
            log.warning(
                "%s: %s (attempt %d of %d); retrying from byte %d",
                url,
                reason,
                attempt,
                attempts,
                state.done,
            )
    raise DownloadError(f"{url}: {reason} (gave up after {attempts} attempts)")


def _transfer(
    url: str, state: _Progress, timeout: float, progress: ProgressCallback | None
) -> None:
    """One HTTP request, appending to ``state`` from the bytes it already holds."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if state.done:
        request.add_header("Range", f"bytes={state.done}-")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        status = getattr(response, "status", 200)
        if state.done and not (status == 206 and _range_start(response) == state.done):
            # The server ignored the Range request (200): start over from an empty file.
            log.info("%s: cannot resume (HTTP %s); restarting from the start", url, status)
            state.restart()
        length = response.headers.get("Content-Length")
        total = state.done + int(length) if length and length.isdigit() else None
        if progress is not None:
            progress(state.done, total)
        while chunk := response.read(CHUNK):
            state.add(chunk)
            if progress is not None:
                progress(state.done, total)
    if total is not None and state.done < total:
        raise _DroppedError(f"connection closed after {state.done} of {total} bytes")


def _range_start(response: Any) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _sha256_of(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()
