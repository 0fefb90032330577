"""The network a training run starts from: fresh, or loaded from ``recipe.init``.

Paper section 5 (training): the DCNN starts from ImageNet-pretrained VGG-16 (converted as
paper section 3 describes), its 1000-way classifier replaced by a fresh one for the
dataset's classes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from deeplab.models import WEIGHTS, DeepLab, build_model, convert_file
from deeplab.models.convert import map_deeplab
from deeplab.models.remote import download_weights
from deeplab.models.weights import read_state_dict, weights_dir
from deeplab.train.recipe import Recipe, classifier_parameter

__all__ = ["initial_model", "resolve_init"]

log = logging.getLogger(__name__)


def resolve_init(init: str) -> Path:
    """``recipe.init`` -> a weights file: a registered name's converted checkpoint in
    :func:`weights_dir`, else its published file (downloaded once, hash-checked, converted
    by :func:`initial_model`); anything else is a path."""
    if init in WEIGHTS:
        record = WEIGHTS[init]
        path = weights_dir() / record.filename
        if not path.exists() and record.url:
            return download_weights(record)
        return path
    return Path(init)


def _load_safetensors(model: DeepLab, path: Path, recipe: Recipe, num_classes: int) -> None:
    """Copy a DeepLab checkpoint's tensors into ``model``; classifier tensors of another
    class count are skipped and stay fresh."""
    own = model.state_dict()
    state = {
        k: v
        for k, v in read_state_dict(path).items()
        if not (classifier_parameter(k) and k in own and v.shape != own[k].shape)
    }
    dropped = sorted(set(own) - set(state))
    mapped, report = map_deeplab(state, recipe.model, num_classes)
    with torch.no_grad():
        for key, tensor in mapped.items():
            own[key].copy_(tensor)
    if report.missing:
        log.info("init %s: fresh %s", path, ", ".join(report.missing))
    if dropped:
        log.info("init %s has another class count: fresh %s", path, ", ".join(dropped))


def initial_model(recipe: Recipe, num_classes: int) -> DeepLab:
    """The network a run starts from: fresh (He / Gaussian init), or ``recipe.init``.

    Initial weights with another class count (e.g. ImageNet or VOC weights for a 6-class
    dataset) load everything but the final classifier layers, which stay fresh (paper
    section 5: fc8 is new).
    ``freeze_base`` None keeps the MSc default (base frozen, paper section 4.3).
    """
    model = build_model(recipe.model, num_classes=num_classes)
    if recipe.init is not None:
        path = resolve_init(recipe.init)
        if not path.exists():
            hint = (
                f" (run `deeplab convert` on the file from {WEIGHTS[recipe.init].source})"
                if recipe.init in WEIGHTS
                else ""
            )
            raise FileNotFoundError(f"initial weights not found: {path}{hint}; or pass --init none")
        if path.suffix == ".safetensors":
            _load_safetensors(model, path, recipe, num_classes)
        else:
            converted, _ = convert_file(path, recipe.model, num_classes)
            model.load_state_dict(converted.state_dict())
        log.info("initialised %s from %s", recipe.model, path)
    if model.variant.msc and recipe.init is None and recipe.freeze_base is not False:
        log.warning(
            "%s: the MSc branches will train on a frozen, untrained base; pass the trained "
            "base network with --init (paper section 4.3)",
            recipe.model,
        )
    if model.variant.msc or recipe.freeze_base is not None:
        frozen = model.variant.msc if recipe.freeze_base is None else recipe.freeze_base
        model.freeze_base(frozen, train_fc8=recipe.train_fc8)
    return model
