"""The saved-scores folder of ``deeplab evaluate --save-logits``: the network's scores per
image, kept so that CRF experiments (``evaluate --from-logits``, ``deeplab tune-crf``) never
run the network again (the paper's CRF parameters were chosen this way, by
cross-validation on val images: paper section 5).

The folder holds one ``<name>.npz`` per image (``logits`` (L, h, w) float16 or float32,
``size`` (H, W), ``padded`` (H', W'); no pickle) and ``meta.json``, a JSON object with what
the scores belong to: ``class_names``, ``num_classes``, ``pad_to``, ``dtype``, ``model``
(the variant's name) and ``data`` (the data source, a ``DataSpec`` dict). Every reader and
writer of that folder goes through this module.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deeplab.io_utils import atomic_write_bytes, atomic_write_text

__all__ = [
    "LOGITS_META",
    "SavedLogits",
    "iter_saved_logits",
    "load_saved_logits",
    "read_meta",
    "save_logits",
    "saved_num_classes",
    "saved_path",
    "update_meta",
    "write_meta",
]

LOGITS_META = "meta.json"
"""The file name of a saved-scores folder's record of what its scores belong to."""


@dataclass(frozen=True)
class SavedLogits:
    """One image's saved network output.

    Attributes:
        name: the sample's name.
        logits: (L, h, w) float32 stride-8 scores of the padded image, or (L, H, W) scores
            on the image's grid for networks whose released test net crops or fuses at
            full resolution (``deeplab``, MSc; :meth:`deeplab.predict.Predictor.scores`).
        size: (H, W) of the image; ``full_resolution(logits, size)`` gives its scores.
        padded: (H', W') the network saw.
    """

    name: str
    logits: np.ndarray
    size: tuple[int, int]
    padded: tuple[int, int]


def saved_path(folder: str | os.PathLike[str], name: str) -> Path:
    """Where the scores of sample ``name`` are (or would be) kept in ``folder``."""
    return Path(folder) / f"{name}.npz"


def save_logits(
    folder: str | os.PathLike[str],
    name: str,
    logits: np.ndarray,
    size: tuple[int, int],
    padded: tuple[int, int],
    dtype: str = "float16",
) -> Path:
    """Write ``<folder>/<name>.npz`` (compressed; atomic). float16 keeps ~3 significant
    digits, far below what moves an argmax or the CRF in practice; pass "float32" for
    bit-exact re-scoring."""
    if dtype not in ("float16", "float32"):
        raise ValueError(f"logits dtype must be float16 or float32, got {dtype!r}")
    if "/" in name or "\\" in name or name in ("", ".", ".."):
        raise ValueError(f"sample name {name!r} cannot be a file name")
    path = saved_path(folder, name)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        logits=np.asarray(logits).astype(dtype),
        size=np.asarray(size, dtype=np.int64),
        padded=np.asarray(padded, dtype=np.int64),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load_saved_logits(path: str | os.PathLike[str]) -> SavedLogits:
    """Read one file written by :func:`save_logits` (no pickle)."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as data:
            logits = np.asarray(data["logits"], dtype=np.float32)
            size = tuple(int(v) for v in data["size"])
            padded = tuple(int(v) for v in data["padded"])
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{p}: not a saved-logits file ({exc})") from None
    if logits.ndim != 3 or len(size) != 2 or len(padded) != 2:
        raise ValueError(f"{p}: logits {logits.shape}, size {size}: expected (L, h, w), (H, W)")
    return SavedLogits(p.stem, logits, (size[0], size[1]), (padded[0], padded[1]))


def iter_saved_logits(
    folder: str | os.PathLike[str], names: Iterable[str] | None = None
) -> Iterator[SavedLogits]:
    """The saved scores in ``folder``: those of ``names`` in that order (a missing one is
    FileNotFoundError), or all ``*.npz`` sorted by name."""
    base = Path(folder)
    if not base.is_dir():
        raise FileNotFoundError(f"saved-logits folder not found: {base}")
    if names is None:
        paths: Iterable[Path] = sorted(base.glob("*.npz"))
    else:
        paths = (saved_path(base, n) for n in names)
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"no saved logits for {path.stem!r}: {path} is missing")
        yield load_saved_logits(path)


def read_meta(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The folder's ``meta.json`` record; empty when there is none (older folders)."""
    path = Path(folder) / LOGITS_META
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: not a JSON object")
    return meta


def write_meta(folder: str | os.PathLike[str], meta: Mapping[str, Any]) -> Path:
    """Replace the folder's ``meta.json`` with ``meta`` (atomic; creates the folder)."""
    path = Path(folder) / LOGITS_META
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(dict(meta), indent=2) + "\n")
    return path


def update_meta(folder: str | os.PathLike[str], **changes: Any) -> Path:
    """Set some fields of the folder's ``meta.json``, keeping the others."""
    return write_meta(folder, {**read_meta(folder), **changes})


def saved_num_classes(folder: str | os.PathLike[str]) -> int | None:
    """The number of score maps per image the folder records (None: not recorded)."""
    value = read_meta(folder).get("num_classes")
    return None if value is None else int(value)
