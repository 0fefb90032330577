"""Segment image files: network (+ CRF) -> label PNGs, colour overlays, probabilities.

::

    from deeplab.segment import load_network, resolve_crf, Segmenter

    net = load_network(None, None)                # the shipped CamVid tiny model
    seg = Segmenter(net.model, resolve_crf("auto", net))
    result = seg.segment(image)                   # (H, W, 3) uint8 RGB
    result.labels, result.dcnn_labels, result.probs

Which weights a run uses is always spelled out (:class:`NetworkInfo`). The default is the
shipped ``deeplab-largefov-tiny`` trained on CamVid street scenes (11 classes) on a CPU;
``NetworkInfo.note`` says so. Weights that were not trained on photographs (the shipped
synthetic-scene model, an untrained network) are flagged ``kind != "real"`` and
:func:`real_weights_hint` says how to get real ones: convert the authors' Caffe models with
``deeplab convert`` or train on VOC.

The shipped files live in the package (``deeplab/assets``) and are found with
:mod:`importlib.resources`, so they work from a wheel as from a checkout.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import io
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deeplab.crf import CRFParams, dense_crf_from_logits
from deeplab.crf import dense as crf_dense
from deeplab.data.camvid import CAMVID_CLASSES
from deeplab.data.classes import colorize, write_label_png
from deeplab.data.image_io import load_image, save_image, write_bytes
from deeplab.data.palettes import background_label, palette_for
from deeplab.data.synthetic import SYNTHETIC_CLASSES
from deeplab.io_utils import DiskFullError
from deeplab.models import WEIGHTS, build_model, get_variant, load_checkpoint
from deeplab.models.weights import weights_dir
from deeplab.predict import Predictor

__all__ = [
    "IMAGE_SUFFIXES",
    "SHIPPED_CAMVID",
    "SHIPPED_CRF",
    "SHIPPED_MODEL",
    "SHIPPED_NOTE",
    "SHIPPED_WEIGHTS",
    "SYNTHETIC_CRF",
    "SYNTHETIC_WEIGHTS",
    "InputFile",
    "NetworkInfo",
    "Segmentation",
    "Segmenter",
    "expand_inputs",
    "load_network",
    "overlay",
    "real_weights_hint",
    "resolve_crf",
    "segment_files",
    "shipped_camvid_root",
    "shipped_crf_params",
    "shipped_weights",
]

log = logging.getLogger(__name__)

SHIPPED_MODEL = "deeplab-largefov-tiny"
SHIPPED_WEIGHTS = "deeplab-largefov-tiny-camvid.safetensors"
SHIPPED_CRF = "crf-camvid.json"
SHIPPED_CAMVID = "camvid"
SYNTHETIC_WEIGHTS = "deeplab-largefov-tiny-synthetic.safetensors"
SYNTHETIC_CRF = "crf-synthetic.json"
SHIPPED_NOTE = (
    "the shipped model knows street scenes (CamVid: sky, building, pole, road, pavement, "
    "tree, sign, fence, car, pedestrian, bicyclist) and was trained from scratch on a 2-core "
    "CPU; a photo of anything else still gets labels from these 11 classes"
)
_SHIPPED = {
    "camvid": (SHIPPED_WEIGHTS, SHIPPED_CRF),
    "synthetic": (SYNTHETIC_WEIGHTS, SYNTHETIC_CRF),
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp", ".gif")

# Keeps files extracted from a zipped install alive until the interpreter exits.
_ASSET_FILES = contextlib.ExitStack()
atexit.register(_ASSET_FILES.close)


def _asset(name: str, folder: bool = False) -> Path | None:
    """A file (or ``folder``) of ``deeplab/assets`` as a real path, or None when the
    package lacks it."""
    ref = resources.files("deeplab").joinpath("assets").joinpath(name)
    if not (ref.is_dir() if folder else ref.is_file()):
        return None
    if isinstance(ref, Path):
        return ref
    return Path(_ASSET_FILES.enter_context(resources.as_file(ref)))


def _shipped(data: str) -> tuple[str, str]:
    try:
        return _SHIPPED[data]
    except KeyError:
        raise ValueError(f"no shipped model for {data!r}; known: {sorted(_SHIPPED)}") from None


def shipped_weights(data: str = "camvid") -> Path | None:
    """The packaged ``deeplab-largefov-tiny`` checkpoint trained on ``data``: "camvid"
    (the default network) or "synthetic" (the synthetic scenes of the tests and
    ``deeplab demo --data synthetic``)."""
    return _asset(_shipped(data)[0])


def shipped_crf_params(data: str = "camvid") -> CRFParams | None:
    """CRF parameters tuned for the shipped checkpoint of ``data``, if the package has them."""
    path = _asset(_shipped(data)[1])
    return None if path is None else CRFParams.load(path)


def shipped_camvid_root() -> Path | None:
    """The CamVid val photos shipped with the package (CamVid layout, split "val")."""
    return _asset(SHIPPED_CAMVID, folder=True)


# --------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class NetworkInfo:
    """Which network and weights a run uses.

    ``kind``: "real" (weights for photographs: converted or trained on real data),
    "synthetic" (trained on :class:`deeplab.data.SyntheticScenes`) or "untrained".
    """

    variant: str
    num_classes: int
    class_names: tuple[str, ...]
    weights: str
    source: str
    kind: str
    note: str = ""

    def describe(self) -> str:
        classes = ", ".join(self.class_names) if self.class_names else "unnamed"
        origin = f" ({self.source})" if self.source else ""
        return (
            f"{self.variant}, {self.num_classes} classes [{classes}], "
            f"weights {self.weights}{origin}"
        )


@dataclass
class Network:
    """A network in eval mode and what it is."""

    model: nn.Module
    info: NetworkInfo


def real_weights_hint(variant: str = "deeplab-largefov") -> str:
    """How to get weights that segment photographs (nothing is downloaded by this package)."""
    name = variant if variant != SHIPPED_MODEL else "deeplab-largefov"
    records = [r for r in WEIGHTS.values() if r.variant == name and r.class_names]
    if not records:
        records = [WEIGHTS["deeplab-largefov-voc12"]]
        name = "deeplab-largefov"
    record = records[0]
    target = weights_dir() / record.filename
    return (
        f"for photographs, convert the authors' {name} Caffe model ({record.source}) with "
        f"`deeplab convert FILE.caffemodel --variant {name} --out {target}` and pass "
        f"`--model {name} --weights {record.name}`, or train on PASCAL VOC "
        f"(`deeplab train --model {name} --data voc --voc-root VOC2012 ...`)"
    )


def _kind(class_names: Sequence[str]) -> str:
    return "synthetic" if tuple(class_names) == SYNTHETIC_CLASSES else "real"


def _trained_on(class_names: Sequence[str]) -> str | None:
    """ "camvid" / "synthetic" for networks with those classes (their shipped CRF fits)."""
    names = tuple(class_names)
    return {CAMVID_CLASSES: "camvid", SYNTHETIC_CLASSES: "synthetic"}.get(names)


def _default_weights(model: str | None) -> str:
    """The checkpoint used when no --weights is given for ``model``."""
    if model is None or get_variant(model).name == SHIPPED_MODEL:
        path = shipped_weights()
        if path is None:
            raise FileNotFoundError(
                f"this installation has no shipped checkpoint deeplab/assets/{SHIPPED_WEIGHTS}; "
                "pass --weights FILE (or 'none' for an untrained network); " + real_weights_hint()
            )
        return os.fspath(path)
    variant = get_variant(model).name
    for record in WEIGHTS.values():
        found = (weights_dir() / record.filename).is_file()
        if record.variant == variant and record.class_names and found:
            return record.name
    raise FileNotFoundError(
        f"no weights for {variant}: pass --weights FILE; " + real_weights_hint(variant)
    )


def load_network(
    model: str | None,
    weights: str | os.PathLike[str] | None,
    *,
    num_classes: int = 21,
) -> Network:
    """Build ``model`` with ``weights`` and say what they are.

    ``weights``: a checkpoint path, a registered :data:`~deeplab.models.WEIGHTS` name,
    ``"none"`` (an untrained network with ``num_classes`` classes) or None (the default:
    the shipped CamVid checkpoint for ``deeplab-largefov-tiny`` / no model, else the
    variant's converted VOC checkpoint if it is in :func:`~deeplab.models.weights.weights_dir`).
    A checkpoint that does not fit ``model`` is a ValueError listing the differences.
    """
    spec = _default_weights(model) if weights is None else os.fspath(weights)
    if spec.lower() == "none":
        variant = get_variant(model or SHIPPED_MODEL).name
        net = build_model(variant, num_classes=num_classes).eval()
        info = NetworkInfo(variant, num_classes, tuple(net.class_names), "none", "", "untrained")
        return Network(net, info)
    if spec in WEIGHTS:
        record = WEIGHTS[spec]
        path = weights_dir() / record.filename
        if not path.is_file():
            raise FileNotFoundError(
                f"no converted checkpoint for {spec!r} at {path}; "
                + real_weights_hint(record.variant)
            )
    else:
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"weights file not found: {path}")
    _, meta = load_checkpoint(path)
    variant = get_variant(model or meta.variant).name
    net = build_model(variant, num_classes=meta.num_classes, weights=path).eval()
    names = tuple(meta.class_names)
    shipped = shipped_weights()
    note = SHIPPED_NOTE if shipped is not None and _same_file(path, shipped) else ""
    info = NetworkInfo(
        variant, meta.num_classes, names, os.fspath(path), meta.source, _kind(names), note
    )
    log.info("network: %s", info.describe())
    return Network(net, info)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def resolve_crf(spec: str | os.PathLike[str] | None, info: NetworkInfo) -> CRFParams | None:
    """``--crf``: "none"/None (no CRF), "auto" (the parameters tuned for the shipped CamVid
    or synthetic model, for networks with their classes; else the variant's preset), a
    preset name or a JSON file."""
    if spec is None or str(spec).lower() == "none":
        return None
    if str(spec) == "auto":
        data = _trained_on(info.class_names)
        if data is not None:
            tuned = shipped_crf_params(data)
            if tuned is not None:
                return tuned
        return CRFParams.preset(get_variant(info.variant).crf_preset or "deeplab-largefov")
    return CRFParams.resolve(os.fspath(spec))


# --------------------------------------------------------------------------- segmenting


@dataclass
class Segmentation:
    """One image's result: ``labels`` (H, W) uint8 (after the CRF when one ran),
    ``dcnn_labels`` the network's own argmax, ``probs`` (L, H, W) float32 (CRF marginals,
    else the softmax) when asked for."""

    labels: np.ndarray
    dcnn_labels: np.ndarray
    probs: np.ndarray | None = None


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=0, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=0, keepdims=True)
    return z


class Segmenter:
    """Whole-image inference (:class:`deeplab.predict.Predictor`) plus the optional CRF."""

    def __init__(
        self,
        model: nn.Module,
        crf: CRFParams | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.predictor = Predictor(model, device)
        self.crf = crf
        self.num_classes = int(getattr(model, "num_classes", 0)) or None
        names = tuple(getattr(model, "class_names", ()) or ())
        self.palette = palette_for(names)
        self.background = background_label(names)

    def check_size(self, height: int, width: int) -> None:
        """MemoryError with the figures when the CRF could not hold this image in memory."""
        if self.crf is not None and self.num_classes is not None:
            crf_dense.check_memory(height, width, self.num_classes)

    def segment(self, image: np.ndarray, keep_probs: bool = False) -> Segmentation:
        """Labels of an (H, W, 3) uint8 RGB image (see :class:`Segmentation`)."""
        self.check_size(*image.shape[:2])
        logits = self.predictor.logits(image)
        dcnn = np.asarray(logits.argmax(0), dtype=np.uint8)
        if self.crf is None:
            return Segmentation(dcnn, dcnn, _softmax(logits) if keep_probs else None)
        q = dense_crf_from_logits(image, logits, self.crf)
        labels = np.asarray(q.argmax(0), dtype=np.uint8)
        return Segmentation(labels, dcnn, q if keep_probs else None)


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
    segmenter: Segmenter,
    inputs: Sequence[InputFile],
    out_dir: str | os.PathLike[str],
    *,
    overlays: bool = True,
    save_probs: bool = False,
    probs_dtype: str = "float16",
    on_file: Callable[[InputFile, str | None], None] | None = None,
    resume: bool = False,
) -> SegmentSummary:
    """Segment every input; write ``<name>.png`` (palette label PNG), ``<name>_overlay.jpg``
    and, with ``save_probs``, ``<name>_probs.npy`` (L, H, W) under ``out_dir``, each
    atomically. A file that cannot be read or is too large is recorded in ``failed`` and
    skipped; ``on_file(input, error or None)`` is called after each file.

    A full disk (:class:`deeplab.io_utils.DiskFullError`) ends the run: the outputs already
    written stay, and ``resume`` then skips every input whose outputs all exist."""
    if probs_dtype not in ("float16", "float32"):
        raise ValueError(f"probs dtype must be float16 or float32, got {probs_dtype!r}")
    out = Path(out_dir)
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
            result = segmenter.segment(image, keep_probs=save_probs)
            write_label_png(targets["labels"], result.labels, segmenter.palette)
            if overlays:
                mixed = overlay(
                    image, result.labels, palette=segmenter.palette,
                    background=segmenter.background,
                )  # fmt: skip
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
