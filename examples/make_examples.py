"""Regenerate the example inputs the README's commands use (deterministic).

    .venv/bin/python examples/make_examples.py

- ``scene.png``: held-out synthetic scene 0 of seed 1 (128x128 RGB), the scale and kind of
  picture the shipped ``deeplab-largefov-tiny`` checkpoint was trained on.
- ``scene_probs.npy``: the shipped network's class probabilities for it, (6, 128, 128)
  float16 (softmax of the upsampled scores), the ``--probs`` input of ``deeplab crf``.
- ``scene_scribbles.png``: a coarse annotation in the classic dense-CRF style, for
  ``deeplab crf --labels ... --unknown black``: the ground truth kept only 6 px and more
  away from every boundary, black (palette entry 0) for "unknown" elsewhere; palette
  entry 1 (grey) is the background, 2 and up the objects in VOC colours.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from scipy import ndimage

from deeplab.data import SyntheticScenes
from deeplab.data.classes import VOC_PALETTE, write_label_png
from deeplab.data.image_io import save_png, write_bytes
from deeplab.models import load_model, shipped_weights
from deeplab.predict import Predictor

HERE = Path(__file__).resolve().parent
MARGIN = 6  # px of "unknown" kept on each side of a boundary


def scribbles(label: np.ndarray) -> np.ndarray:
    """0 = unknown, 1 = background, 1 + k = class k, known only far from boundaries."""
    out = np.zeros(label.shape, np.uint8)
    for value in np.unique(label):
        if value == 255:
            continue
        inside = ndimage.binary_erosion(label == value, iterations=MARGIN, border_value=1)
        out[inside] = value + 1
    return out


def main() -> None:
    scene = SyntheticScenes(1, size=(128, 128), seed=1)[0]
    save_png(HERE / "scene.png", scene.image)
    weights = shipped_weights()
    if weights is None:
        raise SystemExit("the shipped checkpoint is missing: src/deeplab/assets")
    logits = Predictor(load_model(weights)).logits(scene.image)
    z = np.exp(logits - logits.max(0, keepdims=True))
    probs = (z / z.sum(0, keepdims=True)).astype(np.float16)
    buffer = io.BytesIO()
    np.save(buffer, probs, allow_pickle=False)
    write_bytes(HERE / "scene_probs.npy", buffer.getvalue())
    palette = VOC_PALETTE.copy()
    palette[1:] = VOC_PALETTE[:-1]  # shift by one: entry 0 black = unknown
    palette[0] = (0, 0, 0)
    palette[1] = (128, 128, 128)
    write_label_png(HERE / "scene_scribbles.png", scribbles(scene.label), palette)
    print(f"wrote scene.png, scene_probs.npy {probs.shape}, scene_scribbles.png to {HERE}")


if __name__ == "__main__":
    main()
