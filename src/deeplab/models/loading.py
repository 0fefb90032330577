"""Build models, load and save checkpoints, convert foreign weight files.

:func:`build_model` is the one constructor of the package: a variant name (a row of
:data:`~deeplab.models.variants.VARIANTS`), a class count and, optionally, weights.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from deeplab.models.caffe import read_caffemodel
from deeplab.models.convert import (
    ConversionReport,
    map_caffe,
    map_deeplab,
    map_torchvision_vgg16,
)
from deeplab.models.deeplab import DeepLab
from deeplab.models.inputs import INPUT_CONVENTION
from deeplab.models.remote import converted_checkpoint
from deeplab.models.variants import Variant, get_variant
from deeplab.models.weights import (
    VOC_CLASSES,
    WEIGHTS,
    CheckpointMeta,
    check_state_dict,
    load_checkpoint,
    read_state_dict,
    save_checkpoint,
    weights_dir,
)

__all__ = ["build_model", "convert_file", "load_model", "save_model"]

log = logging.getLogger(__name__)

WeightsArg = str | os.PathLike[str] | None


def _resolve(
    weights: str | os.PathLike[str], variant: str | None = None, num_classes: int | None = None
) -> Path:
    """A registered weights name -> its converted checkpoint in :func:`weights_dir`,
    downloaded and converted first when the record knows the file's URL
    (:func:`~deeplab.models.remote.converted_checkpoint`); anything else is a path."""
    if isinstance(weights, str) and weights in WEIGHTS:
        record = WEIGHTS[weights]
        if record.url:
            return converted_checkpoint(record, variant, num_classes)
        path = weights_dir() / record.filename
        if not path.exists():
            raise FileNotFoundError(
                f"no converted checkpoint for {weights!r} at {path}. No file URL is known "
                f"for it, so nothing is downloaded: fetch the {record.file_format} from "
                f"{record.source} yourself, then run "
                f"`deeplab convert FILE --variant {record.variant} --out {path}`"
            )
        return path
    return Path(weights)


def build_model(
    name: str | Variant, *, num_classes: int = 21, weights: WeightsArg = None
) -> DeepLab:
    """A DeepLab network (paper section 3): ``forward`` maps (B,3,H,W) Caffe-convention
    images to (B,num_classes,h,w) stride-8 logits.

    ``weights``: ``None`` (fresh initialisation), a checkpoint path written by
    :func:`save_model` / ``deeplab convert``, or a :data:`~deeplab.models.weights.WEIGHTS`
    name: its converted checkpoint in :func:`~deeplab.models.weights.weights_dir`,
    downloaded (hash-checked) and converted there on first use when the record knows the
    file's URL (``"torchvision:vgg16"``, ``"vgg16_20M"``, ``"vgg16_128"``: ImageNet inits
    converted onto this variant, fc8 new).
    A checkpoint for another variant or class count raises ValueError listing every
    mismatched, missing and unexpected tensor. MSc models come back with their base frozen
    (paper section 4.3; fc8 still learns in ``deeplab-msc``, as in the released DeepLab-MSc;
    undo with ``model.freeze_base(False)``).
    """
    variant = get_variant(name)
    model = DeepLab(variant, num_classes)
    model.class_names = VOC_CLASSES if num_classes == len(VOC_CLASSES) else ()
    if weights is not None:
        path = _resolve(weights, variant.name, num_classes)
        tensors, meta = load_checkpoint(path)
        problems = check_state_dict(model.state_dict(), tensors)
        if meta.variant != variant.name:
            problems.insert(
                0, f"variant: expected {variant.name!r}, checkpoint is {meta.variant!r}"
            )
        if meta.num_classes != num_classes:
            problems.insert(
                0, f"num_classes: expected {num_classes}, checkpoint has {meta.num_classes}"
            )
        if meta.input_convention != INPUT_CONVENTION:
            problems.append(
                f"input convention {meta.input_convention!r} is not {INPUT_CONVENTION!r}"
            )
        if problems:
            raise ValueError(
                f"{path}: checkpoint does not fit {variant.name!r} with {num_classes} classes:"
                "\n  " + "\n  ".join(problems)
            )
        model.load_state_dict(tensors, strict=True)
        model.class_names = meta.class_names
        log.info("loaded %s (%s, %d classes) from %s", variant.name, meta.source, num_classes, path)
    if variant.msc:
        model.freeze_base()
    return model


def load_model(path: str | os.PathLike[str]) -> DeepLab:
    """Build the variant a checkpoint names, with its class count, and load it."""
    _, meta = load_checkpoint(path)
    return build_model(meta.variant, num_classes=meta.num_classes, weights=path)


def save_model(
    model: DeepLab,
    path: str | os.PathLike[str],
    *,
    class_names: tuple[str, ...] | None = None,
    source: str = "",
    extra: Mapping[str, str] | None = None,
) -> None:
    """Save ``model`` as a checkpoint :func:`build_model` / :func:`load_model` can read."""
    names = tuple(class_names) if class_names is not None else tuple(model.class_names)
    meta = CheckpointMeta(
        variant=model.variant.name,
        num_classes=model.num_classes,
        class_names=names,
        source=source,
        extra=dict(extra or {}),
    )
    save_checkpoint(path, model.state_dict(), meta)


def _source_format(keys: list[str]) -> str:
    if any(k.startswith("features.") for k in keys):
        return "torchvision-vgg16"
    if any(k.removeprefix("module.").startswith("conv1_1.") for k in keys):
        return "deeplab"
    raise ValueError(
        "unrecognised state dict: expected torchvision VGG-16 keys (features.N.*) or "
        f"DeepLab keys (conv1_1.weight, ...); first keys: {keys[:5]}"
    )


def convert_file(
    src: str | os.PathLike[str], variant: str | Variant, num_classes: int = 21
) -> tuple[DeepLab, ConversionReport]:
    """Read ``.caffemodel``, ``.pth``/``.pt`` or ``.safetensors`` weights and map them onto
    a fresh ``variant`` model. Tensors the source lacks (e.g. a new fc8) keep their fresh
    initialisation; the report lists mapped, missing and unexpected tensors."""
    name = os.fspath(src)
    if not os.path.exists(name):
        raise FileNotFoundError(f"no such file: {name}")
    v = get_variant(variant)
    if name.endswith(".caffemodel"):
        layers = read_caffemodel(name)
        mapped, report = map_caffe(
            {k: [torch.from_numpy(b) for b in blobs] for k, blobs in layers.items()},
            v,
            num_classes,
        )
    elif name.endswith((".pth", ".pt", ".safetensors")):
        state = read_state_dict(name)
        kind = _source_format(list(state))
        mapper = map_torchvision_vgg16 if kind == "torchvision-vgg16" else map_deeplab
        mapped, report = mapper(state, v, num_classes)
    else:
        raise ValueError(f"{name}: unknown weights format (want .caffemodel, .pth, .safetensors)")
    model = DeepLab(v, num_classes)
    model.class_names = VOC_CLASSES if num_classes == len(VOC_CLASSES) else ()
    with torch.no_grad():
        own = model.state_dict()
        for key, tensor in mapped.items():
            own[key].copy_(tensor)
    log.info(
        "converted %s: %d mapped, %d missing, %d unexpected",
        name,
        len(report.mapped),
        len(report.missing),
        len(report.unexpected),
    )
    return model, report
