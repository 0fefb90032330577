"""The authors' released DeepLab configs (``../shared/reference/deeplab-public``) for tests.

Which of our variants each released config folder is, how to read its prototxts (with the
run script's substitutions), and narrow random weights named and shaped after a prototxt.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from .prototxt import Message, read_prototxt

# As tests/conftest.py: $DEEPLAB_SHARED, else the `shared` folder beside the checkout.
SHARED = Path(os.environ.get("DEEPLAB_SHARED", Path(__file__).resolve().parents[3] / "shared"))
CONFIGS = SHARED / "reference" / "deeplab-public" / "config"

RELEASED: dict[str, str] = {
    "DeepLab": "deeplab",
    "vgg128_noup-2015-08": "deeplab",
    "DeepLab-MSc": "deeplab-msc",
    "DeepLab-LargeFOV": "deeplab-largefov",
    "deeplab_largeFOV-corenel": "deeplab-largefov",
    "DeepLab-COCO-LargeFOV": "deeplab-largefov",
    "DeepLab-MSc-LargeFOV": "deeplab-msc-largefov",
    "DeepLab-MSc-COCO-LargeFOV": "deeplab-msc-largefov",
}
"""Released config folder -> our variant (the COCO ones are the same networks)."""

MAIN = ("DeepLab", "DeepLab-MSc", "DeepLab-LargeFOV", "DeepLab-MSc-LargeFOV")
"""The four released networks."""

# What run_pascal.sh + sub.sed fill in for VOC 2012.
VARIABLES = {"NUM_LABELS": "21", "EXP": "voc12"}

NARROW = {64: 8, 128: 8, 256: 16, 512: 16, 1024: 32, 4096: 32}
"""Full-size layer width -> the narrow width the numerical tests use (classes stay 21)."""


def config_dir(name: str) -> Path:
    path = CONFIGS / name
    if not path.is_dir():
        pytest.skip(f"released configs not found at {path}")
    return path


def read_net(name: str, which: str) -> Message:
    """``train``, ``test``, ``solver`` or ``solver2`` of a released config folder."""
    return read_prototxt(config_dir(name) / f"{which}.prototxt", VARIABLES)


def layers(net: Message) -> list[Message]:
    return [m for m in net.all("layers") + net.all("layer") if isinstance(m, Message)]


def in_phase(layer: Message, phase: str) -> bool:
    phases = [inc.one("phase") for inc in layer.all("include")]
    return not phases or phase in phases


def conv_shapes(net: Message, narrow: bool = False) -> dict[str, tuple[int, int, int]]:
    """(out channels, in channels, kernel) of every CONVOLUTION of ``net`` in its order;
    ``narrow``: widths narrowed by :data:`NARROW`. Input channels follow the blobs."""
    channels = {"data": 3}
    out: dict[str, tuple[int, int, int]] = {}
    for layer in layers(net):
        if not in_phase(layer, "TRAIN") or str(layer.one("type")) == "IMAGE_SEG_DATA":
            continue
        bottoms = [str(b) for b in layer.all("bottom")]
        tops = [str(t) for t in layer.all("top")]
        if "label" in bottoms or not tops:
            continue
        if str(layer.one("type")) == "CONVOLUTION":
            p = layer.sub("convolution_param")
            width = int(p.one("num_output"))
            if narrow:
                width = NARROW.get(width, width)
            out[str(layer.one("name"))] = (width, channels[bottoms[0]], int(p.one("kernel_size")))
            channels[tops[0]] = width
        else:
            channels[tops[0]] = channels[bottoms[0]]
    return out


def narrow_weights(net: Message, rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """Random float32 (weight, bias) for every CONVOLUTION of ``net``, narrowed."""
    out: dict[str, list[np.ndarray]] = {}
    for name, (width, cin, k) in conv_shapes(net, narrow=True).items():
        scale = (2.0 / (cin * k * k)) ** 0.5
        out[name] = [
            (rng.standard_normal((width, cin, k, k)) * scale).astype(np.float32),
            (rng.standard_normal(width) * 0.1).astype(np.float32),
        ]
    return out
