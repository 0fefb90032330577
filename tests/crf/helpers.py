"""Inputs for CRF tests: real photos and smooth, network-like unaries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im.convert("RGB"))


def load_labels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im)


def black_index(path: Path) -> int:
    """Palette index of black, the "unknown" colour of the classic dense-CRF annotations."""
    with Image.open(path) as im:
        palette = np.array(im.getpalette()).reshape(-1, 3)
        used = np.unique(np.array(im))
    black = [int(i) for i in used if not palette[i].any()]
    if len(black) != 1:
        raise ValueError(f"{path}: expected exactly one black palette entry in use")
    return black[0]


def smooth_logits(
    num_labels: int, height: int, width: int, seed: int = 0, scale: float = 3.0
) -> np.ndarray:
    """(L, H, W) float32 scores like a stride-8 network's, bilinearly upsampled."""
    rng = np.random.default_rng(seed)
    gh, gw = height // 8 + 2, width // 8 + 2
    coarse = rng.normal(size=(num_labels, gh, gw)).astype(np.float32) * scale
    ys = np.linspace(0, gh - 1, height)
    xs = np.linspace(0, gw - 1, width)
    y0 = np.floor(ys).astype(int).clip(0, gh - 2)
    x0 = np.floor(xs).astype(int).clip(0, gw - 2)
    fy = (ys - y0)[None, :, None]
    fx = (xs - x0)[None, None, :]
    a = coarse[:, y0][:, :, x0]
    b = coarse[:, y0][:, :, x0 + 1]
    c = coarse[:, y0 + 1][:, :, x0]
    d = coarse[:, y0 + 1][:, :, x0 + 1]
    top = a * (1 - fx) + b * fx
    bot = c * (1 - fx) + d * fx
    return (top * (1 - fy) + bot * fy).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(0, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(0, keepdims=True)).astype(np.float32)
