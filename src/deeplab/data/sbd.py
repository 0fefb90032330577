"""SBD (Hariharan et al. 2011) extra annotations and the ``train_aug`` split (paper section 5).

SBD layout (the ``benchmark_RELEASE`` archive)::

    benchmark_RELEASE/dataset/
      img/<name>.jpg
      cls/<name>.mat      MATLAB struct GTcls; GTcls.Segmentation is the (H, W) class map
      train.txt, val.txt  8,498 and 2,857 names

``train_aug`` = SBD train + SBD val + VOC train, minus VOC val, de-duplicated and sorted
(10,582 names on the full data); ``trainval_aug`` = ``train_aug`` + VOC val (12,031). The
paper trains on ``train_aug`` with labels from a ``SegmentationClassAug`` folder.
:func:`prepare_train_aug` (the ``deeplab prepare-voc`` command) writes that folder and the
two lists, once and explicitly: opening a dataset never writes.

``.mat`` files are read with ``scipy.io.loadmat`` (MATLAB v5 format parsing, no pickle),
after :func:`check_mat_file` has walked the file's element tags: scipy's compiled reader
indexes a 20-entry type table with the data type code of each element unchecked, so a
damaged or crafted file crashes the process (segfault, bus error) instead of raising.
"""

from __future__ import annotations

import io
import logging
import math
import os
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.io
from PIL import Image
from scipy.io.matlab import MatReadError

from deeplab.conventions import VOC_CLASSES
from deeplab.data import image_io
from deeplab.data.classes import write_label_png
from deeplab.data.sample import Sample, SegmentationDataset, check_same_size
from deeplab.data.voc import (
    AUG_LABEL_DIR,
    AUG_LIST_DIR,
    LABEL_DIR,
    check_listed_files,
    find_voc_root,
    read_name_list,
    write_name_list,
)

__all__ = [
    "TRAIN_AUG_SIZE",
    "SBDSegmentation",
    "TrainAugFiles",
    "build_segmentation_class_aug",
    "convert_sbd_labels",
    "find_sbd_root",
    "load_sbd_label",
    "prepare_train_aug",
    "train_aug_names",
    "trainval_aug_names",
    "write_aug_lists",
]

logger = logging.getLogger(__name__)

TRAIN_AUG_SIZE = 10582
"""Size of ``train_aug`` on the full SBD + VOC 2012 data (the paper's training set)."""


def train_aug_names(
    sbd_train: Iterable[str],
    sbd_val: Iterable[str],
    voc_train: Iterable[str],
    voc_val: Iterable[str],
) -> list[str]:
    """(SBD train ∪ SBD val ∪ VOC train) \\ VOC val, sorted: the paper's training list."""
    pool = set(sbd_train) | set(sbd_val) | set(voc_train)
    return sorted(pool - set(voc_val))


def trainval_aug_names(train_aug: Iterable[str], voc_val: Iterable[str]) -> list[str]:
    """``train_aug`` ∪ VOC val, sorted: the list for the final fine-tuning (never scored on val)."""
    return sorted(set(train_aug) | set(voc_val))


def find_sbd_root(root: str | os.PathLike[str]) -> Path:
    """Resolve ``root`` to the SBD ``dataset`` folder (the one holding ``img/`` and ``cls/``).

    Accepts that folder, ``benchmark_RELEASE``, or the folder above ``benchmark_RELEASE``.
    """
    base = Path(root)
    if not base.exists():
        raise FileNotFoundError(f"SBD root not found: {base}")
    for candidate in (base, base / "dataset", base / "benchmark_RELEASE" / "dataset"):
        if (candidate / "cls").is_dir() and (candidate / "img").is_dir():
            return candidate
    raise FileNotFoundError(
        f"{base} is not an SBD folder: no img/ and cls/ in it, nor in dataset/ or "
        f"benchmark_RELEASE/dataset/ below it"
    )


# -- MATLAB 5 element walk ------------------------------------------------------------------
# Data type codes scipy's reader has a dtype for: int8..uint32, single, double, int64,
# uint64, utf8, utf16, utf32. 14 is a matrix, 15 a compressed element (top level only).
_MAT_NUMERIC = frozenset({1, 2, 3, 4, 5, 6, 7, 9, 12, 13, 16, 17, 18})
_MI_MATRIX, _MI_COMPRESSED = 14, 15
# SBD nests three deep (struct -> cell -> sparse); scipy's reader recurses per level.
_MAT_MAX_DEPTH = 16
_MAT_MAX_DIMS = 32
_Order = Literal["little", "big"]


class _MatStream:
    """Sequential reads over a byte range, or lazily over a zlib stream (so that a small
    compressed element that inflates to gigabytes is never held in memory)."""

    def __init__(self, data: bytes | memoryview, budget: list[int] | None, compressed: bool):
        self._data = memoryview(data)
        self._pos = 0
        self._zlib = zlib.decompressobj() if compressed else None
        self._out = bytearray()
        self._budget = budget  # [bytes still allowed to inflate], shared by the file

    def read(self, n: int) -> bytes:
        if self._zlib is None:
            if n > len(self._data) - self._pos:
                raise ValueError("truncated element")
            self._pos += n
            return bytes(self._data[self._pos - n : self._pos])
        while len(self._out) < n:
            self._inflate(n - len(self._out))
        out = bytes(self._out[:n])
        del self._out[:n]
        return out

    def skip(self, n: int) -> None:
        if self._zlib is None:
            if n > len(self._data) - self._pos:
                raise ValueError("truncated element")
            self._pos += n
            return
        while n > 0:  # inflated a megabyte at a time and dropped, never held
            if not self._out:
                self._inflate(min(n, 1 << 20))
            take = min(n, len(self._out))
            del self._out[:take]
            n -= take

    def _inflate(self, want: int) -> None:
        assert self._zlib is not None
        source = self._zlib.unconsumed_tail or self._data[self._pos :]
        self._pos = len(self._data)
        if self._zlib.eof or not source:
            raise ValueError("compressed element ends early")
        try:
            chunk = self._zlib.decompress(source, max(want, 1 << 16))
        except zlib.error as exc:
            raise ValueError(f"corrupt compressed element ({exc})") from None
        if self._budget is not None:
            self._budget[0] -= len(chunk)
            if self._budget[0] < 0:
                raise ValueError(
                    "compressed elements inflate to more than 8 bytes per pixel of Pillow's "
                    "decompression-bomb limit PIL.Image.MAX_IMAGE_PIXELS; raise the limit if "
                    "the file is trusted"
                )
        self._out += chunk


def _mat_tag(stream: _MatStream, order: _Order) -> tuple[int, int, bytes | None]:
    """(data type, byte count, payload of a small element or None) of the next tag."""
    tag = stream.read(8)
    word = int.from_bytes(tag[:4], order)
    if word >> 16:  # small data element: type and size packed in 4 bytes, data in the next 4
        size = word >> 16
        if size > 4:
            raise ValueError(f"small data element of {size} bytes (at most 4)")
        return word & 0xFFFF, size, tag[4 : 4 + size]
    return word, int.from_bytes(tag[4:], order), None


def _check_dims(dims: bytes, order: _Order) -> None:
    if len(dims) > 4 * _MAT_MAX_DIMS:
        raise ValueError(f"an array with more than {_MAT_MAX_DIMS} dimensions")
    count = math.prod(int.from_bytes(dims[i : i + 4], order) for i in range(0, len(dims) - 3, 4))
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and count > limit:
        raise ValueError(
            f"an array of {count} elements is over Pillow's decompression-bomb limit "
            f"PIL.Image.MAX_IMAGE_PIXELS = {limit}; raise the limit if the file is trusted"
        )


def _walk_matrix(stream: _MatStream, size: int, order: _Order, depth: int) -> None:
    """Check the elements of a matrix body of ``size`` bytes: known type codes only, at
    most PIL.Image.MAX_IMAGE_PIXELS elements per array, nesting at most 16 deep."""
    if depth > _MAT_MAX_DEPTH:
        raise ValueError(f"arrays nested more than {_MAT_MAX_DEPTH} deep")
    index = 0
    while size > 0:
        if size < 8:
            raise ValueError("matrix ends inside an element tag")
        mdtype, nbytes, small = _mat_tag(stream, order)
        size -= 8
        index += 1
        dims = index == 2 and mdtype in (5, 6)  # int32 (uint32 in some tools) dimensions
        if small is not None:
            if mdtype not in _MAT_NUMERIC:
                raise ValueError(f"unknown MATLAB data type code {mdtype} in a small element")
            if dims:
                _check_dims(small, order)
            continue
        if nbytes > size:
            raise ValueError(f"element of {nbytes} bytes in a matrix with {size} left")
        if mdtype == _MI_MATRIX:
            _walk_matrix(stream, nbytes, order, depth + 1)
        elif mdtype not in _MAT_NUMERIC:
            raise ValueError(f"unknown MATLAB data type code {mdtype}")
        elif dims:
            _check_dims(stream.read(nbytes), order)
        else:
            stream.skip(nbytes)
        padding = min(-nbytes % 8, size - nbytes)  # the last element may go unpadded
        stream.skip(padding)
        size -= nbytes + padding


def check_mat_file(data: bytes) -> None:
    """Raise ValueError unless ``data`` is a MATLAB 5 file whose elements scipy can read
    safely (see the module docstring). MATLAB 7.3 files pass: scipy refuses them itself."""
    if len(data) < 128 or 0 in data[:4]:
        raise ValueError("not a MATLAB 5 .mat file (a MATLAB 4 file, or too short)")
    # scipy's version test: the major version is byte 124 or 125 depending on byte order.
    major = data[125 if data[126] == ord("I") else 124]
    if major == 2:
        return
    if major != 1:
        raise ValueError(f"unknown .mat file version {major}")
    order: _Order = "little" if data[126:128] == b"IM" else "big"
    limit = Image.MAX_IMAGE_PIXELS
    budget = None if limit is None else [8 * limit + (1 << 20)]
    stream = _MatStream(memoryview(data)[128:], budget, compressed=False)
    remaining = len(data) - 128
    while remaining > 0:
        if remaining < 8:
            raise ValueError("the file ends inside an element tag")
        mdtype, nbytes, small = _mat_tag(stream, order)
        remaining -= 8
        if small is not None or nbytes > remaining:
            raise ValueError(f"variable of {nbytes} bytes with {remaining} bytes left")
        if mdtype == _MI_COMPRESSED:
            inner = _MatStream(stream.read(nbytes), budget, compressed=True)
            kind, size, small = _mat_tag(inner, order)
            if kind != _MI_MATRIX or small is not None:
                raise ValueError(f"compressed variable of type {kind}, expected a matrix")
            _walk_matrix(inner, size, order, 1)
        elif mdtype == _MI_MATRIX:
            _walk_matrix(stream, nbytes, order, 1)
        else:
            raise ValueError(f"variable of MATLAB data type {mdtype}, expected a matrix")
        remaining -= nbytes


# Everything scipy's reader raises on a damaged file that got past check_mat_file.
_MAT_ERRORS = (ValueError, TypeError, OSError, EOFError, zlib.error, IndexError, KeyError,
               AttributeError, ZeroDivisionError, OverflowError, UnboundLocalError,
               MatReadError)  # fmt: skip


def load_sbd_label(path: str | os.PathLike[str]) -> np.ndarray:
    """Read ``GTcls.Segmentation`` from an SBD ``cls/*.mat`` file as (H, W) uint8."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"SBD label file not found: {p}")
    data = p.read_bytes()
    try:
        check_mat_file(data)
        # The bytes just checked, not the file again: it could have changed meanwhile.
        contents = scipy.io.loadmat(
            io.BytesIO(data), struct_as_record=False, squeeze_me=False, variable_names=["GTcls"]
        )
    except NotImplementedError as exc:
        # scipy raises this for MATLAB v7.3 (HDF5) files, which SBD does not use.
        raise ValueError(f"SBD label file {p} is a MATLAB v7.3 file, not supported") from exc
    except _MAT_ERRORS as exc:
        raise ValueError(f"SBD label file {p} is not a readable .mat file: {exc}") from exc
    gt = contents.get("GTcls")
    if gt is None:
        raise ValueError(f"SBD label file {p} has no GTcls variable")
    # Unsqueezed, a struct is a (1, 1) object array: the label keeps its own shape even
    # when it is 1 x W (squeeze_me would make that a vector, or a 1 x 1 label a scalar).
    gt = np.asarray(gt)
    struct = gt.item() if gt.dtype == object and gt.size == 1 else None
    seg = getattr(struct, "Segmentation", None)
    if seg is None:
        raise ValueError(f"SBD label file {p}: GTcls has no Segmentation field")
    seg = np.asarray(seg)
    if seg.ndim != 2 or seg.size == 0:
        raise ValueError(f"SBD label file {p}: Segmentation has shape {seg.shape}, expected (H, W)")
    if not (np.issubdtype(seg.dtype, np.integer) or np.issubdtype(seg.dtype, np.floating)):
        raise ValueError(f"SBD label file {p}: Segmentation has dtype {seg.dtype}")
    if np.issubdtype(seg.dtype, np.floating) and not np.array_equal(seg, np.round(seg)):
        raise ValueError(f"SBD label file {p}: Segmentation has non-integer values")
    if seg.min() < 0 or seg.max() > 255:
        raise ValueError(
            f"SBD label file {p}: Segmentation values {seg.min()}..{seg.max()} do not fit 0..255"
        )
    return seg.astype(np.uint8)


class SBDSegmentation(SegmentationDataset):
    """An SBD split (``train`` or ``val``) as a sequence of :class:`Sample`.

    SBD labels have no void borders: every pixel is a class in 0..20.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        check_files: bool = True,
    ) -> None:
        self.root = find_sbd_root(root)
        self.split = split
        self.list_file = self.root / f"{split}.txt"
        self.names = read_name_list(self.list_file)
        self.class_names = VOC_CLASSES
        if not self.names:
            raise ValueError(f"SBD list {self.list_file} is empty")
        if check_files:
            check_listed_files(self.names, self.image_path, self.label_path, self.list_file)

    def image_path(self, name: str) -> Path:
        return self.root / "img" / f"{name}.jpg"

    def label_path(self, name: str) -> Path:
        return self.root / "cls" / f"{name}.mat"

    def _load(self, index: int) -> Sample:
        name = self.names[index]
        image = image_io.load_image(self.image_path(name))
        label = load_sbd_label(self.label_path(name))
        check_same_size(image, label, self.image_path(name), self.label_path(name))
        return Sample(name=name, image=image, label=label)


def _sbd_names(root: Path) -> set[str]:
    """Every image SBD labels: its train and val lists together."""
    return set(read_name_list(root / "train.txt")) | set(read_name_list(root / "val.txt"))


def _write_labels(
    out: Path,
    names: Iterable[str],
    load: Callable[[str], np.ndarray],
    overwrite: bool,
    source: str,
) -> int:
    """Write ``load(name)`` as ``out/<name>.png`` (palette PNG, atomically) for each name,
    keeping existing files unless ``overwrite`` (so an interrupted run resumes). ``source``
    ("SBD", "VOC") words the log line. Returns how many were written."""
    written = 0
    for name in names:
        target = out / f"{name}.png"
        if target.exists() and not overwrite:
            continue
        write_label_png(target, load(name))
        written += 1
    logger.info("wrote %d %s labels to %s", written, source, out)
    return written


def convert_sbd_labels(
    sbd_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    names: Sequence[str] | None = None,
    overwrite: bool = False,
) -> int:
    """Write SBD ``cls/*.mat`` labels as VOC-palette PNGs into ``out_dir``.

    ``names`` defaults to SBD train + val. Existing PNGs are kept unless ``overwrite``, so an
    interrupted conversion resumes (each PNG is written atomically). Returns how many were
    written.
    """
    root = find_sbd_root(sbd_root)
    if names is None:
        names = sorted(_sbd_names(root))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return _write_labels(
        out, names, lambda name: load_sbd_label(root / "cls" / f"{name}.mat"), overwrite, "SBD"
    )


def build_segmentation_class_aug(
    voc_root: str | os.PathLike[str],
    sbd_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    prefer: Literal["voc", "sbd"] = "voc",
    overwrite: bool = False,
) -> Path:
    """Fill a ``SegmentationClassAug`` folder: SBD labels plus VOC's own for VOC trainval.

    For an image annotated by both, ``prefer="voc"`` keeps VOC's label (it has the 255
    border bands the evaluation ignores); ``"sbd"`` keeps SBD's. ``out_dir`` defaults to
    ``<voc_root>/SegmentationClassAug``. Returns the folder.
    """
    if prefer not in ("voc", "sbd"):
        raise ValueError(f"prefer must be 'voc' or 'sbd', got {prefer!r}")
    voc = find_voc_root(voc_root)
    sbd = find_sbd_root(sbd_root)
    out = Path(out_dir) if out_dir is not None else voc / AUG_LABEL_DIR
    voc_names = set(read_name_list(voc / "ImageSets" / "Segmentation" / "trainval.txt"))
    sbd_names = _sbd_names(sbd)
    sbd_only = sorted(sbd_names - voc_names) if prefer == "voc" else sorted(sbd_names)
    convert_sbd_labels(sbd, out, names=sbd_only, overwrite=overwrite)
    voc_only = sorted(voc_names) if prefer == "voc" else sorted(voc_names - sbd_names)
    # Re-encode rather than copy bytes: the output is then guaranteed to be a 'P' PNG of
    # indices whatever tool produced the source.
    _write_labels(
        out,
        voc_only,
        lambda name: image_io.load_label(voc / LABEL_DIR / f"{name}.png"),
        overwrite,
        "VOC",
    )
    return out


def write_aug_lists(
    voc_root: str | os.PathLike[str],
    sbd_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Path]:
    """Write ``train_aug.txt`` and ``trainval_aug.txt`` (default ``ImageSets/SegmentationAug``).

    Returns {"train_aug": path, "trainval_aug": path}.
    """
    voc = find_voc_root(voc_root)
    sbd = find_sbd_root(sbd_root)
    lists = voc / "ImageSets" / "Segmentation"
    voc_train = read_name_list(lists / "train.txt")
    voc_val = read_name_list(lists / "val.txt")
    train_aug = train_aug_names(
        read_name_list(sbd / "train.txt"), read_name_list(sbd / "val.txt"), voc_train, voc_val
    )
    trainval_aug = trainval_aug_names(train_aug, voc_val)
    if len(voc_train) == 1464 and len(voc_val) == 1449 and len(train_aug) != TRAIN_AUG_SIZE:
        logger.warning(
            "train_aug has %d names, the paper's has %d: is the SBD copy complete?",
            len(train_aug),
            TRAIN_AUG_SIZE,
        )
    out = Path(out_dir) if out_dir is not None else voc / AUG_LIST_DIR
    paths = {"train_aug": out / "train_aug.txt", "trainval_aug": out / "trainval_aug.txt"}
    write_name_list(paths["train_aug"], train_aug)
    write_name_list(paths["trainval_aug"], trainval_aug)
    logger.info(
        "wrote train_aug (%d) and trainval_aug (%d) to %s", len(train_aug), len(trainval_aug), out
    )
    return paths


@dataclass(frozen=True)
class TrainAugFiles:
    """What :func:`prepare_train_aug` wrote."""

    labels: Path
    """The ``SegmentationClassAug`` folder: one label PNG per ``trainval_aug`` name."""
    train_aug: Path
    """``ImageSets/SegmentationAug/train_aug.txt``."""
    trainval_aug: Path
    """``ImageSets/SegmentationAug/trainval_aug.txt``."""


def prepare_train_aug(
    voc_root: str | os.PathLike[str],
    sbd_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> TrainAugFiles:
    """Write what the ``train_aug`` and ``trainval_aug`` splits read (paper section 5).

    Under ``out_dir`` (default: the VOC folder): ``SegmentationClassAug/`` (SBD's labels plus
    VOC's own for VOC trainval, see :func:`build_segmentation_class_aug`) and
    ``ImageSets/SegmentationAug/{train_aug,trainval_aug}.txt``. The labels come first and
    the lists last, so an interrupted run leaves no list naming a missing label; running it
    again resumes (existing PNGs are kept unless ``overwrite``). This is the one place that
    writes them: :func:`deeplab.data.build_dataset` only reads.
    """
    voc = find_voc_root(voc_root)
    out = Path(out_dir) if out_dir is not None else voc
    labels = build_segmentation_class_aug(
        voc, sbd_root, out_dir=out / AUG_LABEL_DIR, overwrite=overwrite
    )
    lists = write_aug_lists(voc, sbd_root, out_dir=out / AUG_LIST_DIR)
    return TrainAugFiles(
        labels=labels, train_aug=lists["train_aug"], trainval_aug=lists["trainval_aug"]
    )
