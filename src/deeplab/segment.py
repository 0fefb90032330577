"""Segment image files: network (+ CRF) -> label PNGs, colour overlays, probabilities.

::

    from deeplab.models import load_network, resolve_crf
    from deeplab.predict import Predictor
    from deeplab.segment import expand_inputs, segment_files

    net = load_network(None, None)                # the shipped CamVid tiny model
    predictor = Predictor(net.model, crf=resolve_crf("auto", net.info))
    inputs, problems = expand_inputs(["photos/"])
    summary = segment_files(predictor, inputs, "seg/")

The network and the CRF are :class:`deeplab.predict.Predictor`'s (paper sections 3 and 4);
which weights run is :func:`deeplab.models.load_network`'s. This module reads the files,
names the outputs and writes them.
"""

from __future__ import annotations

import glob
import io
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deeplab.data.classes import colorize, write_label_png
from deeplab.data.image_io import load_image, save_image, write_bytes
from deeplab.data.palettes import background_label, palette_for
from deeplab.io_utils import DiskFullError
from deeplab.predict import Predictor

__all__ = [
    "IMAGE_SUFFIXES",
    "InputFile",
    "SegmentSummary",
    "expand_inputs",
    "overlay",
    "segment_files",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp", ".gif")


def overlay(
    image: np.ndarray,
    labels: np.ndarray,
    alpha: float = 0.55,
    palette: np.ndarray | None = None,
    background: int | None = 0,
) -> np.ndarray:
    """The image with the label colours (``palette``, default VOC's) blended in; the
    ``background`` label (None: none) is left as is."""
    colours = colorize(labels, palette).astype(np.float32)
    mix = image.astype(np.float32)
    fg = labels != background if background is not None else np.ones(labels.shape, bool)
    mix[fg] = (1 - alpha) * mix[fg] + alpha * colours[fg]
    return np.clip(mix + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class InputFile:
    """An image to segment and the output name (relative, no suffix) its results get."""

    path: Path
    name: str


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def expand_inputs(specs: Iterable[str | os.PathLike[str]]) -> tuple[list[InputFile], list[str]]:
    """Files, folders (searched recursively for images) and glob patterns -> inputs, and a
    message per spec that matched nothing. Output names keep a folder's sub-paths; clashes
    get a ``-2``, ``-3``... suffix; the same file named twice is segmented once."""
    found: list[tuple[Path, str]] = []
    problems: list[str] = []
    for spec in specs:
        text = os.fspath(spec)
        p = Path(text)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if _is_image(f))
            if not files:
                problems.append(f"{text}: folder has no images ({', '.join(IMAGE_SUFFIXES)})")
            found += [(f, f.relative_to(p).with_suffix("").as_posix()) for f in files]
        elif p.is_file():
            found.append((p, p.stem))
        elif glob.has_magic(text):
            files = sorted(Path(m) for m in glob.glob(text, recursive=True) if _is_image(Path(m)))
            if not files:
                problems.append(f"{text}: no image matches this pattern")
            found += [(f, f.stem) for f in files]
        else:
            problems.append(f"{text}: no such file or folder")
    inputs: list[InputFile] = []
    seen_paths: set[Path] = set()
    used: set[str] = set()
    for path, name in found:
        key = path.resolve()
        if key in seen_paths:
            continue
        seen_paths.add(key)
        unique, n = name, 1
        while unique in used:
            n += 1
            unique = f"{name}-{n}"
        used.add(unique)
        inputs.append(InputFile(path, unique))
    return inputs, problems


@dataclass
class SegmentSummary:
    """Per-file outcome of :func:`segment_files`: written paths, and failures with reasons."""

    written: dict[Path, list[Path]] = field(default_factory=dict)
    failed: dict[Path, str] = field(default_factory=dict)
    skipped: list[Path] = field(default_factory=list)  # outputs already there (``resume``)

    @property
    def ok(self) -> bool:
        return not self.failed


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def segment_files(
    predictor: Predictor,
    inputs: Sequence[InputFile],
    out_dir: str | os.PathLike[str],
    *,
    overlays: bool = True,
    save_probs: bool = False,
    probs_dtype: str = "float16",
    on_file: Callable[[InputFile, str | None], None] | None = None,
    resume: bool = False,
) -> SegmentSummary:
    """Segment every input with ``predictor`` (:meth:`Predictor.segment`); write
    ``<name>.png`` (palette label PNG), ``<name>_overlay.jpg`` and, with ``save_probs``,
    ``<name>_probs.npy`` (L, H, W) under ``out_dir``, each atomically. A file that cannot be
    read or is too large is recorded in ``failed`` and skipped; ``on_file(input, error or
    None)`` is called after each file.

    A full disk (:class:`deeplab.io_utils.DiskFullError`) ends the run: the outputs already
    written stay, and ``resume`` then skips every input whose outputs all exist."""
    if probs_dtype not in ("float16", "float32"):
        raise ValueError(f"probs dtype must be float16 or float32, got {probs_dtype!r}")
    out = Path(out_dir)
    palette = palette_for(predictor.class_names)
    background = background_label(predictor.class_names)
    protected = {i.path.resolve() for i in inputs}
    summary = SegmentSummary()
    for item in inputs:
        error: str | None = None
        try:
            targets = {"labels": out / f"{item.name}.png"}
            if overlays:
                targets["overlay"] = out / f"{item.name}_overlay.jpg"
            if save_probs:
                targets["probs"] = out / f"{item.name}_probs.npy"
            clash = [t for t in targets.values() if t.resolve() in protected]
            if clash:
                raise ValueError(f"output {clash[0]} would overwrite an input image")
            if resume and all(t.is_file() for t in targets.values()):
                summary.skipped.append(item.path)
                if on_file is not None:
                    on_file(item, None)
                continue
            image = load_image(item.path)
            result = predictor.segment(image, keep_probs=save_probs)
            write_label_png(targets["labels"], result.labels, palette)
            if overlays:
                mixed = overlay(image, result.labels, palette=palette, background=background)
                save_image(targets["overlay"], mixed, quality=90)
            if save_probs and result.probs is not None:
                write_bytes(targets["probs"], _npy_bytes(result.probs.astype(probs_dtype)))
            summary.written[item.path] = list(targets.values())
        except MemoryError as exc:
            error = f"too large: {exc}"
        except DiskFullError:
            raise  # the next files would fail as well
        except (OSError, ValueError) as exc:
            error = str(exc)
        if error is not None:
            summary.failed[item.path] = error
            log.info("skipped %s: %s", item.path, error)
        if on_file is not None:
            on_file(item, error)
    return summary
