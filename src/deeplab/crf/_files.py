"""The one file the CRF writes (its parameters as JSON), written so that a reader never
sees half of it; kept here so that the CRF depends on nothing else in the package."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def _read_umask() -> int:
    # The mask can only be read by setting it: done once, at import, so that no other
    # thread creates a file in the moment it is changed.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk and rename it
    over ``path`` (atomic on POSIX and Windows within one file system). On any error the
    temporary file is removed and ``path`` keeps its previous content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # The package's writers name temporary files .NAME.<pid>.<random>.tmp and clean up those
    # of dead processes: the same pattern lets them clean up after this one too.
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
    )
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        with contextlib.suppress(OSError, NotImplementedError):
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
