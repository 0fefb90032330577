"""Weights as data (:class:`WeightsRecord`) and checkpoints (safetensors + JSON metadata).

A record says where a file was published and what it scored. Where it knows the file's
own URL (``url``, with ``sha256`` where known) :mod:`deeplab.models.remote` downloads and
converts it on request (``deeplab convert NAME``, ``build_model(..., weights=NAME)``);
nothing downloads on import. The other files are fetched by hand, then ``deeplab convert``.

A checkpoint is one ``.safetensors`` file whose header metadata carries the JSON fields of
:class:`CheckpointMeta` (variant, class count and names, input convention, source). Loading
never unpickles: safetensors holds raw tensors only, and ``.pth`` sources are read with
``torch.load(weights_only=True)`` (:func:`read_state_dict`).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import struct
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_save

from deeplab.conventions import VOC_CLASSES
from deeplab.crf import CRFParams
from deeplab.io_utils import atomic_write_bytes
from deeplab.models.inputs import INPUT_CONVENTION

__all__ = [
    "VOC_CLASSES",
    "WEIGHTS",
    "CheckpointMeta",
    "WeightsRecord",
    "check_state_dict",
    "get_weights_record",
    "load_checkpoint",
    "read_state_dict",
    "save_checkpoint",
    "train_split_of",
    "weights_dir",
]

log = logging.getLogger(__name__)

FORMAT = "deeplab-checkpoint"
FORMAT_VERSION = 1

_PROJECT = "http://liangchiehchen.com/projects/DeepLab_Models.html"
_INIT = "http://www.cs.jhu.edu/~alanlab/ccvl/init_models/"
# torch.hub's rule: the hex digits after the last '-' start the file's sha256.
_TORCHVISION_VGG16 = "https://download.pytorch.org/models/vgg16-397923af.pth"


@dataclass(frozen=True)
class WeightsRecord:
    """Published weights for a variant. ``metrics``: VOC 2012 mean IoU (%) from the paper
    (Table 1/2, section 5) without and with the CRF; ``crf_preset``: the CRF parameters tuned
    for it (:attr:`crf_params`).

    Released DeepLab nets also say how to use and judge them: ``caffe_classifier`` (fc8's
    layer name in the ``.caffemodel``, mapped by ``deeplab convert``), ``test_crop`` (the
    side the released test net pads images to: 513, DeepLab 514), ``caffe_config`` (the
    released config folder), ``train_split`` (``train_aug``: the authors' ``train_iter_6000``
    files, fit to score on VOC val; ``trainval_aug``: ``train2_iter_8000``, the fine-tune
    behind the test-set scores, which has seen VOC val; ``None``: both solvers were released,
    so the file decides: :func:`train_split_of` reads it from the name and ``deeplab
    convert`` records it in the checkpoint) and ``pretrained`` (the data before VOC).
    """

    name: str
    variant: str
    source: str  # where the authors published it (a page, or the file itself)
    file_format: str  # "caffemodel" | "pth"
    input_convention: str = INPUT_CONVENTION
    class_names: tuple[str, ...] = VOC_CLASSES
    metrics: Mapping[str, float] = field(default_factory=dict)
    crf_preset: str | None = None
    notes: str = ""
    caffe_classifier: str | None = None
    test_crop: int | None = None
    caffe_config: str | None = None
    train_split: str | None = None
    pretrained: str = "ImageNet"
    url: str | None = None  # the file itself, when known: downloadable by name
    sha256: str | None = None  # its sha256 or a prefix (8+ hex digits); None: unknown

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) or None

    @property
    def filename(self) -> str:
        """Where :func:`weights_dir` expects the converted checkpoint."""
        return f"{self.name.replace(':', '-')}.safetensors"

    def checkpoint_name(self, variant: str, num_classes: int) -> str:
        """The converted checkpoint's file name for a network: :attr:`filename` for the
        record's own variant and classes; an ImageNet init (no classes) converted onto
        another network gets ``NAME.VARIANT.Nclasses.safetensors``."""
        if self.class_names or (variant, num_classes) == (self.variant, 21):
            return self.filename
        stem = self.filename.removesuffix(".safetensors")
        return f"{stem}.{variant}.{num_classes}classes.safetensors"

    @property
    def crf_params(self) -> CRFParams | None:
        """The CRF parameters of :attr:`crf_preset` (w1, w2, thetas, iterations)."""
        return None if self.crf_preset is None else CRFParams.preset(self.crf_preset)


_COCO = "ImageNet, then MS-COCO (then VOC 2012)"

WEIGHTS: dict[str, WeightsRecord] = {
    r.name: r
    for r in (
        WeightsRecord(
            "deeplab-voc12", "deeplab", _PROJECT, "caffemodel",
            metrics={"voc12_val_miou": 59.80, "voc12_val_miou_crf": 63.74},
            crf_preset="deeplab", caffe_classifier="fc8_pascal", test_crop=514,
            caffe_config="DeepLab",
        ),
        WeightsRecord(
            "deeplab-msc-voc12", "deeplab-msc", _PROJECT, "caffemodel",
            metrics={"voc12_val_miou": 61.30, "voc12_val_miou_crf": 65.21},
            crf_preset="deeplab-msc", caffe_classifier="fc8_pascal", test_crop=513,
            caffe_config="DeepLab-MSc",
        ),
        WeightsRecord(
            "deeplab-largefov-voc12", "deeplab-largefov",
            "http://www.cs.jhu.edu/~alanlab/ccvl/DeepLab-LargeFOV/", "caffemodel",
            metrics={"voc12_val_miou": 62.25, "voc12_val_miou_crf": 67.64,
                     "voc12_test_miou_crf": 70.3},
            crf_preset="deeplab-largefov", caffe_classifier="fc8_voc12", test_crop=513,
            caffe_config="DeepLab-LargeFOV", train_split="trainval_aug",
            notes="the file published there, train2_iter_8000.caffemodel, is the trainval_aug "
            "fine-tune behind the test score: it has seen VOC val, never score it on val",
        ),
        WeightsRecord(
            "deeplab-msc-largefov-voc12", "deeplab-msc-largefov",
            "http://www.cs.jhu.edu/~alanlab/ccvl/DeepLab-MSc-LargeFOV/", "caffemodel",
            metrics={"voc12_val_miou": 64.21, "voc12_val_miou_crf": 68.70,
                     "voc12_test_miou_crf": 71.6},
            crf_preset="deeplab-msc-largefov", caffe_classifier="fc8_voc12", test_crop=513,
            caffe_config="DeepLab-MSc-LargeFOV",
            notes="check whether the published file is a train_aug or trainval_aug model "
            "before scoring it on VOC val",
        ),
        WeightsRecord(
            "deeplab-coco-largefov-voc12", "deeplab-largefov", _PROJECT, "caffemodel",
            crf_preset="deeplab-largefov", caffe_classifier="fc8_voc12", test_crop=513,
            caffe_config="DeepLab-COCO-LargeFOV", pretrained=_COCO,
            notes="the LargeFOV network (its released configs are layer for layer "
            "DeepLab-LargeFOV's); its scores are not in the paper version followed here, and "
            "its own CRF values are not in the released configs: the preset is LargeFOV's",
        ),
        WeightsRecord(
            "deeplab-msc-coco-largefov-voc12", "deeplab-msc-largefov", _PROJECT, "caffemodel",
            crf_preset="deeplab-msc-largefov", caffe_classifier="fc8_voc12", test_crop=513,
            caffe_config="DeepLab-MSc-COCO-LargeFOV", pretrained=_COCO,
            notes="the MSc-LargeFOV network (its released configs are layer for layer "
            "DeepLab-MSc-LargeFOV's); its scores are not in the paper version followed here, "
            "and its own CRF values are not in the released configs: the preset is "
            "MSc-LargeFOV's",
        ),
        WeightsRecord(
            "vgg16_128", "deeplab", _INIT + "vgg16_128.caffemodel", "caffemodel",
            class_names=(), notes="ImageNet VGG-16, fc6 decimated to 4x4 (4096 channels); "
            "init for deeplab, deeplab-4x4 and deeplab-msc",
            url=_INIT + "vgg16_128.caffemodel",
        ),
        WeightsRecord(
            "vgg16_20M", "deeplab-largefov", _INIT + "vgg16_20M.caffemodel", "caffemodel",
            class_names=(), notes="ImageNet VGG-16, fc6 3x3 and fc6/fc7 1024 channels; "
            "init for the LargeFOV variants",
            url=_INIT + "vgg16_20M.caffemodel",
        ),
        WeightsRecord(
            "torchvision:vgg16", "deeplab-largefov", _TORCHVISION_VGG16, "pth",
            class_names=(), notes="torchvision's ImageNet VGG-16 (full fc6/fc7); converts "
            "onto any variant: input normalisation folded into conv1_1, fc6/fc7 decimated "
            "as the paper's (sections 3.1, 4.1), fc8 new",
            url=_TORCHVISION_VGG16, sha256="397923af",
        ),
    )
}  # fmt: skip


_RELEASED_FILES = (
    (re.compile(r"(^|[^0-9a-z])train2_iter_\d+"), "trainval_aug"),
    (re.compile(r"(^|[^0-9a-z])train_iter_\d+"), "train_aug"),
)


def train_split_of(filename: str | os.PathLike[str]) -> str | None:
    """The split a released ``.caffemodel`` was trained on, from the authors' file names:
    ``train_iter_N`` (``solver.prototxt``, train_aug: fit to score on VOC val) or
    ``train2_iter_N`` (``solver2.prototxt``, trainval_aug: has seen VOC val); None for
    any other name. Every released config folder carries both solvers, so the record of
    a net cannot say which file a user has: the name does."""
    name = Path(filename).name.lower()
    for pattern, split in _RELEASED_FILES:
        if pattern.search(name):
            return split
    return None


def get_weights_record(name: str) -> WeightsRecord:
    try:
        return WEIGHTS[name]
    except KeyError:
        raise ValueError(f"unknown weights {name!r}; known: {', '.join(WEIGHTS)}") from None


def weights_dir() -> Path:
    """Where converted checkpoints of :data:`WEIGHTS` are looked up by name:
    ``$DEEPLAB_WEIGHTS_DIR``, else ``~/.cache/deeplab``."""
    env = os.environ.get("DEEPLAB_WEIGHTS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "deeplab"


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about itself (stored as JSON in the safetensors header)."""

    variant: str
    num_classes: int
    class_names: tuple[str, ...] = ()
    input_convention: str = INPUT_CONVENTION
    source: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    def to_header(self) -> dict[str, str]:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        d["extra"] = dict(self.extra)
        return {"format": FORMAT, "format_version": str(FORMAT_VERSION), "meta": json.dumps(d)}

    @classmethod
    def from_header(cls, header: Mapping[str, str] | None, path: str) -> CheckpointMeta:
        if not header or header.get("format") != FORMAT or "meta" not in header:
            raise ValueError(f"{path}: not a deeplab checkpoint (no deeplab metadata)")
        if header.get("format_version") != str(FORMAT_VERSION):
            raise ValueError(
                f"{path}: unsupported checkpoint version {header.get('format_version')!r}"
            )
        try:
            d = json.loads(header["meta"])
            return cls(
                variant=str(d["variant"]),
                num_classes=int(d["num_classes"]),
                class_names=tuple(str(c) for c in d.get("class_names", ())),
                input_convention=str(d.get("input_convention", "")),
                source=str(d.get("source", "")),
                extra={str(k): str(v) for k, v in dict(d.get("extra", {})).items()},
            )
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
            # OverflowError: int(Infinity); RecursionError: metadata JSON nested too deeply.
            raise ValueError(f"{path}: malformed checkpoint metadata: {exc!r}") from None


def safetensors_bytes(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> bytes:
    """``safetensors.torch.save`` with the metadata keys in sorted order.

    safetensors writes its metadata map in hash order, which changes from one process to
    the next: the same weights would give files with different bytes. Sorting them makes
    a file's sha256 a function of its content (a reproducible training run reproduces the
    file bit for bit).
    """
    payload = safetensors_save(dict(tensors), metadata=dict(metadata) if metadata else None)
    (size,) = struct.unpack("<Q", payload[:8])
    header = json.loads(payload[8 : 8 + size])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data section stays 8-byte aligned
    return struct.pack("<Q", len(text)) + text + payload[8 + size :]


def save_checkpoint(
    path: str | os.PathLike[str], state_dict: Mapping[str, torch.Tensor], meta: CheckpointMeta
) -> None:
    """Write ``state_dict`` + ``meta`` to a ``.safetensors`` file, atomically."""
    if meta.class_names and len(meta.class_names) != meta.num_classes:
        raise ValueError(f"{len(meta.class_names)} class names for {meta.num_classes} classes")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    atomic_write_bytes(path, safetensors_bytes(tensors, meta.to_header()))
    log.info("saved %d tensors (%s) to %s", len(tensors), meta.variant, os.fspath(path))


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """Read a checkpoint written by :func:`save_checkpoint`: (state dict, metadata)."""
    name = os.fspath(path)
    if not os.path.exists(name):
        raise FileNotFoundError(f"checkpoint not found: {name}")
    try:
        with safe_open(name, framework="pt", device="cpu") as handle:
            meta = CheckpointMeta.from_header(handle.metadata(), name)
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except SafetensorError as exc:
        raise ValueError(f"{name}: not a readable safetensors file: {exc}") from None
    return tensors, meta


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a ``.pth``/``.pt`` (``torch.load(weights_only=True)``: no arbitrary
    unpickling) or a plain ``.safetensors`` file. A ``{"state_dict": ...}`` or
    ``{"model": ...}`` wrapper is unwrapped."""
    name = os.fspath(path)
    try:
        if name.endswith(".safetensors"):
            with safe_open(name, framework="pt", device="cpu") as handle:
                return {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        obj = torch.load(name, map_location="cpu", weights_only=True)
    except (SafetensorError, pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ValueError(f"{name}: cannot read weights: {exc}") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{name}: expected a state dict of tensors")
    return dict(obj)


def check_state_dict(
    expected: Mapping[str, torch.Tensor | tuple[int, ...]], got: Mapping[str, torch.Tensor]
) -> list[str]:
    """Differences between a model's state dict (or key -> shape) and loaded tensors: one
    line per mismatched shape (name, expected, got), missing and unexpected key."""

    def shape(v: torch.Tensor | tuple[int, ...]) -> tuple[int, ...]:
        return tuple(v.shape) if isinstance(v, torch.Tensor) else tuple(v)

    problems = [
        f"shape mismatch {k}: expected {shape(v)}, got {tuple(got[k].shape)}"
        for k, v in expected.items()
        if k in got and shape(v) != tuple(got[k].shape)
    ]
    problems += [f"missing {k} {shape(v)}" for k, v in expected.items() if k not in got]
    problems += [f"unexpected {k} {tuple(v.shape)}" for k, v in got.items() if k not in expected]
    return problems
