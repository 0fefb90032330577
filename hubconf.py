"""torch.hub entry points for the DeepLab v1 networks of this checkout.

    model = torch.hub.load("/path/to/deeplab", "deeplab_largefov", source="local")
    model = torch.hub.load("/path/to/deeplab", "deeplab_largefov", source="local",
                           weights="deeplab-largefov-voc12")  # a converted checkpoint
    model = torch.hub.load("/path/to/deeplab", "deeplab_largefov_tiny", source="local")
                                                    # the shipped trained tiny model

Every entry point takes ``num_classes`` (default 21) and ``weights`` (``None``, a checkpoint
path, or a registered weights name found in ``$DEEPLAB_WEIGHTS_DIR``, downloaded and
converted there first only for the names whose file URL is known, such as
``"torchvision:vgg16"``). ``deeplab_largefov_tiny`` defaults to ``weights="shipped"``: the
checkpoint in ``src/deeplab/assets`` (CamVid street scenes, 11 classes;
"shipped-synthetic": the 6 synthetic-scene classes); ``weights=None`` gives a fresh one.
Models expect Caffe-convention input (BGR, 0..255, mean-subtracted, see
``deeplab.models.to_model_input``) and return stride-8 logits.
"""

from __future__ import annotations

import os as _os
import sys as _sys
from collections.abc import Callable as _Callable
from typing import Any as _Any

dependencies = ["torch", "numpy", "safetensors"]

# torch.hub puts the checkout on sys.path, but the package lives under src/.
# Names without a leading underscore are entry points for torch.hub.list().
_SRC = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "src")
if _SRC not in _sys.path:
    _sys.path.insert(0, _SRC)

import deeplab.models as _models  # noqa: E402


def _entry(name: str) -> _Callable[..., _Any]:
    variant = _models.get_variant(name)

    def entry(*, num_classes: int = 21, weights: str | None = None) -> _Any:
        return _models.build_model(name, num_classes=num_classes, weights=weights)

    entry.__name__ = name.replace("-", "_")
    entry.__doc__ = (
        f"{variant.paper_name}: {variant.description}.\n\n"
        "Args: num_classes (default 21); weights: None, a checkpoint path or a registered "
        "weights name (deeplab.models.WEIGHTS) converted into $DEEPLAB_WEIGHTS_DIR."
    )
    return entry


deeplab = _entry("deeplab")
deeplab_7x7 = _entry("deeplab-7x7")
deeplab_4x4 = _entry("deeplab-4x4")
deeplab_largefov = _entry("deeplab-largefov")
deeplab_msc = _entry("deeplab-msc")
deeplab_msc_largefov = _entry("deeplab-msc-largefov")


def deeplab_largefov_tiny(
    *, num_classes: int | None = None, weights: str | None = "shipped"
) -> _Any:
    """DeepLab-LargeFOV (tiny): the CPU demo network, by default with the shipped weights.

    Args: weights: "shipped" (default: trained from scratch on CamVid street scenes on a
    CPU, 11 classes: sky, building, pole, road, pavement, tree, sign, fence, car,
    pedestrian, bicyclist), "shipped-synthetic" (synthetic 128x128 scenes, 6 classes; not
    for photographs), None (fresh init), or a checkpoint path / registered weights name;
    num_classes: for a fresh network (default 21), else it must match the checkpoint.
    """
    if weights not in ("shipped", "shipped-synthetic"):
        return _models.build_model(
            "deeplab-largefov-tiny", num_classes=num_classes or 21, weights=weights
        )
    from deeplab.models import shipped_weights

    path = shipped_weights("camvid" if weights == "shipped" else "synthetic")
    if path is None:
        raise FileNotFoundError("this checkout has no src/deeplab/assets checkpoint")
    model = _models.load_model(path)
    if num_classes is not None and num_classes != model.num_classes:
        raise ValueError(
            f"the shipped checkpoint has {model.num_classes} classes, not {num_classes}: "
            "pass weights=None for a fresh network"
        )
    return model
