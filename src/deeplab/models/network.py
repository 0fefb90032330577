"""Which network and weights a run uses, said out loud (:class:`NetworkInfo`).

``load_network(model, weights)`` resolves what the command line names: a checkpoint file,
a registered converted checkpoint (:data:`~deeplab.models.WEIGHTS`), ``"none"`` (an
untrained network) or nothing (the shipped CamVid ``deeplab-largefov-tiny``,
:mod:`deeplab.models.shipped`). Weights that were not trained on photographs (the shipped
synthetic-scene model, an untrained network) are flagged ``kind != "real"`` and
:func:`real_weights_hint` says how to get real ones: convert the authors' Caffe models with
``deeplab convert`` or train on VOC. :func:`resolve_crf` picks the CRF (paper section 4)
that goes with a network.

::

    from deeplab.models import load_network, resolve_crf
    from deeplab.predict import Predictor

    net = load_network(None, None)                # the shipped CamVid tiny model
    predictor = Predictor(net.model, crf=resolve_crf("auto", net.info))
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deeplab.crf import CRFParams
from deeplab.data.camvid import CAMVID_CLASSES
from deeplab.data.synthetic import SYNTHETIC_CLASSES
from deeplab.models.deeplab import DeepLab
from deeplab.models.loading import build_model
from deeplab.models.shipped import (
    SHIPPED_MODEL,
    SHIPPED_NOTE,
    SHIPPED_WEIGHTS,
    shipped_crf_params,
    shipped_weights,
)
from deeplab.models.variants import get_variant
from deeplab.models.weights import WEIGHTS, load_checkpoint, weights_dir

__all__ = ["Network", "NetworkInfo", "load_network", "real_weights_hint", "resolve_crf"]

log = logging.getLogger(__name__)


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

    model: DeepLab
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
