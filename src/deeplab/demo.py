"""The main job on the embedded default: refine coarse segmentations of synthetic scenes.

Scenes come from :class:`deeplab.data.SyntheticScenes`. Their coarse class scores mimic a
stride-8 DCNN (paper section 3): the true label map is average-pooled to the stride-8 grid,
perturbed with noise and bilinearly upsampled by 8, which blurs every boundary exactly as
the paper describes. The fully connected CRF then sharpens them (paper section 4).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from deeplab.crf import CRFParams, dense_crf_from_logits
from deeplab.data.classes import IGNORE_INDEX, colorize
from deeplab.data.image_io import save_png, write_text
from deeplab.data.synthetic import SyntheticScenes
from deeplab.metrics.confusion import ConfusionMatrix, markdown_table

log = logging.getLogger(__name__)

STRIDE = 8


def coarse_logits(
    label: np.ndarray, num_classes: int, rng: np.random.Generator, noise: float = 1.0
) -> np.ndarray:
    """(K, H, W) float32 scores of a simulated stride-8 network for an (H, W) label map."""
    h, w = label.shape
    valid = label != IGNORE_INDEX
    onehot = np.zeros((num_classes, h, w), np.float32)
    ys, xs = np.nonzero(valid)
    onehot[label[valid], ys, xs] = 1.0
    gh, gw = -(-h // STRIDE), -(-w // STRIDE)
    padded = np.zeros((num_classes, gh * STRIDE, gw * STRIDE), np.float32)
    padded[:, :h, :w] = onehot
    pooled = padded.reshape(num_classes, gh, STRIDE, gw, STRIDE).mean((2, 4))
    scores = 4.0 * pooled + rng.normal(0, noise, size=pooled.shape).astype(np.float32)
    # Bilinear upsampling by 8 with Caffe's geometry (align-corners), cropped to the image.
    full = np.stack(
        [
            np.array(
                Image.fromarray(s).resize(
                    ((gw - 1) * STRIDE + 1, (gh - 1) * STRIDE + 1), Image.BILINEAR
                )
            )
            for s in scores
        ]
    )
    out = np.zeros((num_classes, h, w), np.float32)
    hh, ww = min(h, full.shape[1]), min(w, full.shape[2])
    out[:, :hh, :ww] = full[:, :hh, :ww]
    if hh < h:
        out[:, hh:, :] = out[:, hh - 1 : hh, :]
    if ww < w:
        out[:, :, ww:] = out[:, :, ww - 1 : ww]
    return out


@dataclass
class DemoResult:
    """Confusion matrices of the coarse and the CRF-refined results, and written files."""

    coarse: ConfusionMatrix
    refined: ConfusionMatrix
    files: list[Path] = field(default_factory=list)


def run_demo(
    out_dir: str | Path,
    *,
    num_scenes: int = 8,
    seed: int = 0,
    params: CRFParams | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DemoResult:
    """Refine ``num_scenes`` synthetic scenes; write panels, results.md and results.json."""
    out = Path(out_dir)
    scenes = SyntheticScenes(num_scenes, seed=seed)
    names = scenes.class_names
    k = len(names)
    params = params or CRFParams.preset("deeplab")
    rng = np.random.default_rng(seed)
    result = DemoResult(ConfusionMatrix(k, names), ConfusionMatrix(k, names))
    for i, sample in enumerate(scenes):
        logits = coarse_logits(sample.label, k, rng)
        coarse = logits.argmax(0)
        refined = dense_crf_from_logits(sample.image, logits, params).argmax(0)
        result.coarse.update(coarse, sample.label)
        result.refined.update(refined, sample.label)
        panel = np.concatenate(
            [sample.image, colorize(coarse), colorize(refined), colorize(sample.label)], axis=1
        )
        path = out / f"{sample.name}.png"
        save_png(path, panel)
        result.files.append(path)
        if progress is not None:
            progress(i + 1, num_scenes)
    table = markdown_table({"coarse (stride 8)": result.coarse, "+ CRF": result.refined}, names)
    summary = (
        "# deeplab demo\n\n"
        f"{num_scenes} synthetic scenes; panels: image | coarse | CRF | ground truth.\n"
        f"CRF: {json.dumps(params.to_dict())}\n\n{table}\n"
    )
    write_text(out / "results.md", summary)
    write_text(
        out / "results.json",
        json.dumps(
            {
                "coarse": result.coarse.results(),
                "crf": result.refined.results(),
                "crf_params": params.to_dict(),
            },
            indent=2,
        ),
    )
    result.files += [out / "results.md", out / "results.json"]
    log.info("demo: mIoU %.4f -> %.4f", result.coarse.mean_iou(), result.refined.mean_iou())
    return result
