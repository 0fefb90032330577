"""Synthetic segmentation scenes: the embedded default data for the demo and the tests.

Each scene has a textured, cluttered background (gradients, stripes, smooth noise, with
distractor blobs and streaks of random colours that are *not* objects) and one to a few
objects whose class is given by their shape only (:data:`SYNTHETIC_CLASSES`); colours and
textures are drawn independently of the class. Object colours mostly differ from the
background around them, so a colour-sensitive CRF can sharpen the blurred stride-8 output,
but a few low-contrast objects are kept on purpose. Labels are exact, with void (255) bands
on every label boundary as VOC has (never scored, paper section 5), and the image gets
sensor noise and a slight optical blur so its edges are not perfectly crisp.

Scene ``i`` is a pure function of ``(seed, i)``: any subset can be generated in any order.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from deeplab.conventions import IGNORE_INDEX
from deeplab.data.folder import write_folder_dataset
from deeplab.data.sample import Sample, SegmentationDataset
from deeplab.data.voc import write_voc_layout

__all__ = [
    "SYNTHETIC_CLASSES",
    "SyntheticScenes",
    "generate_scene",
    "void_band",
    "write_synthetic_dataset",
]

logger = logging.getLogger(__name__)

SYNTHETIC_CLASSES: tuple[str, ...] = ("background", "disc", "square", "triangle", "ring", "cross")
"""Class names; the label value is the index. Objects are classes 1..5."""

_Window = tuple[slice, slice]


# --------------------------------------------------------------------------- shapes
# Each shape maps (dy, dx) offsets from its centre (float32 arrays of one window, shaped
# (h, 1) and (1, w) and broadcast against each other), a size r
# (pixels) and a rotation to a boolean mask. Sizes are tuned so that all five shapes cover
# roughly the same area (about 2-3 r^2), so area says little about the class.


def _rotate(dy: np.ndarray, dx: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(angle), math.sin(angle)
    return dx * c + dy * s, -dx * s + dy * c


def _disc(dy: np.ndarray, dx: np.ndarray, r: float, angle: float) -> np.ndarray:
    return dy * dy + dx * dx <= r * r


def _square(dy: np.ndarray, dx: np.ndarray, r: float, angle: float) -> np.ndarray:
    u, v = _rotate(dy, dx, angle)
    half = 0.8 * r
    return (np.abs(u) <= half) & (np.abs(v) <= half)


def _triangle(dy: np.ndarray, dx: np.ndarray, r: float, angle: float) -> np.ndarray:
    # Equilateral: inside all three half-planes at the inradius (half the circumradius).
    circum = 1.3 * r
    mask = np.ones(np.broadcast_shapes(dy.shape, dx.shape), dtype=bool)
    for k in range(3):
        a = angle + 2.0 * math.pi * k / 3.0
        mask &= dx * math.cos(a) + dy * math.sin(a) <= 0.5 * circum
    return mask


def _ring(dy: np.ndarray, dx: np.ndarray, r: float, angle: float) -> np.ndarray:
    d2 = dy * dy + dx * dx
    return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)


def _cross(dy: np.ndarray, dx: np.ndarray, r: float, angle: float) -> np.ndarray:
    u, v = _rotate(dy, dx, angle)
    au, av = np.abs(u), np.abs(v)
    arm = 0.3 * r
    return ((au <= r) & (av <= arm)) | ((av <= r) & (au <= arm))


_SHAPES: dict[int, Callable[[np.ndarray, np.ndarray, float, float], np.ndarray]] = {
    1: _disc,
    2: _square,
    3: _triangle,
    4: _ring,
    5: _cross,
}
# Half-extent of each shape's bounding square, in units of r.
_EXTENT = {1: 1.0, 2: 0.8 * math.sqrt(2.0), 3: 1.3, 4: 1.0, 5: math.hypot(1.0, 0.3)}


def _amoeba(
    dy: np.ndarray, dx: np.ndarray, r: float, angle: float, harmonics: np.ndarray
) -> np.ndarray:
    """An irregular blob: a radius modulated by harmonics 2, 3 and 5 (never disc-like)."""
    u, v = _rotate(dy, dx, angle)
    phi = np.arctan2(v, u)
    radius = np.full(phi.shape, r, dtype=np.float32)
    for k, (amp, phase) in zip((2, 3, 5), harmonics, strict=True):
        radius += r * amp * np.sin(k * phi + phase)
    return u * u + v * v <= radius * radius


# --------------------------------------------------------------------------- textures


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Value noise in [0, 1]: a random grid every ``cell`` pixels, bilinearly interpolated."""
    gy = np.arange(h, dtype=np.float32) / cell
    gx = np.arange(w, dtype=np.float32) / cell
    grid = rng.random((int(gy[-1]) + 2, int(gx[-1]) + 2), dtype=np.float32)
    iy, ix = gy.astype(np.int64), gx.astype(np.int64)
    fy, fx = (gy - iy)[:, None], (gx - ix)[None, :]
    top = grid[iy][:, ix] * (1 - fx) + grid[iy][:, ix + 1] * fx
    bottom = grid[iy + 1][:, ix] * (1 - fx) + grid[iy + 1][:, ix + 1] * fx
    return top * (1 - fy) + bottom * fy


def _texture(
    rng: np.random.Generator,
    ys: np.ndarray,
    xs: np.ndarray,
    colour_a: np.ndarray,
    colour_b: np.ndarray,
) -> np.ndarray:
    """A (h, w, 3) float32 texture mixing two colours: flat, gradient, stripes or noise.

    ``ys`` (h, 1) and ``xs`` (1, w) are absolute pixel coordinates, so stripes and
    gradients stay continuous however the window is cut.
    """
    h, w = ys.shape[0], xs.shape[1]
    kind = rng.integers(4)
    t: np.ndarray  # (h, w) blend weights in 0..1
    if kind == 0:  # flat
        t = np.zeros((h, w), dtype=np.float32)
    elif kind == 1:  # linear gradient across about the window
        a = rng.uniform(0.0, 2.0 * math.pi)
        proj = ys * math.sin(a) + xs * math.cos(a)
        lo, hi = float(proj.min()), float(proj.max())
        t = (proj - lo) / max(hi - lo, 1.0)
    elif kind == 2:  # stripes, soft or hard
        a = rng.uniform(0.0, math.pi)
        period = rng.uniform(5.0, 16.0)
        wave = np.sin((ys * math.sin(a) + xs * math.cos(a)) * (2.0 * math.pi / period))
        t = (wave > 0).astype(np.float32) if rng.random() < 0.5 else 0.5 + 0.5 * wave
    else:  # blotchy value noise
        t = _smooth_noise(rng, h, w, cell=rng.uniform(4.0, 14.0))
    t = np.broadcast_to(t, (h, w)).astype(np.float32)
    return colour_a + t[:, :, None] * (colour_b - colour_a)


def _near_colour(rng: np.random.Generator, colour: np.ndarray, spread: float) -> np.ndarray:
    return np.clip(colour + rng.normal(0.0, spread, 3), 0.0, 255.0).astype(np.float32)


# --------------------------------------------------------------------------- void bands


def _window_extreme(values: np.ndarray, radius: int, op: Callable[..., np.ndarray]) -> np.ndarray:
    """Max or min over a (2r+1) square window, edge-replicated, separably."""
    h, w = values.shape
    padded = np.pad(values, radius, mode="edge")
    rows = padded[0:h, :]
    for k in range(1, 2 * radius + 1):
        rows = op(rows, padded[k : k + h, :])
    out = rows[:, 0:w]
    for k in range(1, 2 * radius + 1):
        out = op(out, rows[:, k : k + w])
    return out


def void_band(label: np.ndarray, radius: int = 1) -> np.ndarray:
    """Pixels within Chebyshev distance ``radius`` of a different label: (H, W) bool.

    Marks ``radius`` pixels on each side of every label boundary, a band 2*radius wide.
    """
    if radius < 1:
        return np.zeros(label.shape, dtype=bool)
    return _window_extreme(label, radius, np.maximum) != _window_extreme(label, radius, np.minimum)


# --------------------------------------------------------------------------- scenes


def _window(cy: float, cx: float, half: float, h: int, w: int) -> _Window | None:
    y0, y1 = max(math.floor(cy - half), 0), min(math.ceil(cy + half) + 1, h)
    x0, x1 = max(math.floor(cx - half), 0), min(math.ceil(cx + half) + 1, w)
    if y0 >= y1 or x0 >= x1:
        return None
    return slice(y0, y1), slice(x0, x1)


def generate_scene(
    seed: int,
    index: int,
    size: tuple[int, int] = (200, 200),
    max_objects: int = 4,
    radius_range: tuple[float, float] = (0.09, 0.2),
    void_radius: int = 1,
    min_contrast: float = 70.0,
    low_contrast_prob: float = 0.1,
    noise_sigma: float = 5.0,
) -> Sample:
    """Generate scene ``index`` of the family ``seed``: a :class:`Sample` of size (H, W).

    Args:
        size: (H, W), at least 32x32.
        max_objects: 1..max_objects objects (classes 1..5 drawn uniformly, repeats allowed).
        radius_range: object size r as fractions of min(H, W).
        void_radius: void band of this many pixels on each side of label boundaries (0: none).
        min_contrast: wanted RGB distance between an object's mean colour and the mean of
            the background it covers.
        low_contrast_prob: share of objects exempt from ``min_contrast`` (hard cases).
        noise_sigma: std of the per-pixel Gaussian noise added to the image.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    h, w = int(size[0]), int(size[1])
    if h < 32 or w < 32:
        raise ValueError(f"scene size must be at least 32x32, got {h}x{w}")
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}")
    # A SeedSequence over (seed, index): independent streams, no dependence on other scenes.
    rng = np.random.default_rng([seed, index])
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    short = float(min(h, w))

    # Background: a full-frame texture between two unrelated colours.
    canvas = _texture(rng, ys, xs, rng.uniform(0, 255, 3), rng.uniform(0, 255, 3))
    label = np.zeros((h, w), dtype=np.uint8)

    # Clutter that belongs to the background class: irregular blobs and streaks.
    for _ in range(int(rng.integers(2, 7))):
        r = rng.uniform(0.05, 0.14) * short
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        win = _window(cy, cx, 1.9 * r, h, w)
        harmonics = np.stack([rng.uniform(0.18, 0.35, 3), rng.uniform(0, 2 * math.pi, 3)], axis=1)
        angle = rng.uniform(0, 2 * math.pi)
        colour = rng.uniform(0, 255, 3)
        if win is None:
            continue
        wy, wx = ys[win[0]], xs[:, win[1]]
        mask = _amoeba(wy - cy, wx - cx, r, angle, harmonics)
        tex = _texture(rng, wy, wx, colour, _near_colour(rng, colour, 40.0))
        canvas[win][mask] = tex[mask]
    for _ in range(int(rng.integers(0, 4))):
        y0, x0, y1, x1 = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, w)
        half_width = rng.uniform(0.8, 2.5)
        colour = rng.uniform(0, 255, 3).astype(np.float32)
        win = _window((y0 + y1) / 2, (x0 + x1) / 2, math.hypot(y1 - y0, x1 - x0) / 2 + 3, h, w)
        if win is None:
            continue
        wy, wx = ys[win[0]], xs[:, win[1]]
        sy, sx = y1 - y0, x1 - x0
        t = np.clip(((wy - y0) * sy + (wx - x0) * sx) / max(sy * sy + sx * sx, 1e-6), 0.0, 1.0)
        dist2 = (wy - (y0 + t * sy)) ** 2 + (wx - (x0 + t * sx)) ** 2
        canvas[win][dist2 <= half_width**2] = colour

    # Objects: shape = class; placement rejects heavy overlap so shapes stay recognisable.
    occupied = np.zeros((h, w), dtype=bool)
    for n in range(int(rng.integers(1, max_objects + 1))):
        cls = int(rng.integers(1, len(_SHAPES) + 1))
        r = rng.uniform(*radius_range) * short
        angle = rng.uniform(0, 2 * math.pi)
        half = _EXTENT[cls] * r + 1
        placed = None
        for _attempt in range(8):
            cy = rng.uniform(0.6 * r, h - 0.6 * r)
            cx = rng.uniform(0.6 * r, w - 0.6 * r)
            win = _window(cy, cx, half, h, w)
            if win is None:
                continue
            mask = _SHAPES[cls](ys[win[0]] - cy, xs[:, win[1]] - cx, r, angle)
            area = int(mask.sum())
            if area < 20:
                continue
            if n == 0 or int((mask & occupied[win]).sum()) <= 0.15 * area:
                placed = (win, mask)
                break
        if placed is None:
            continue
        win, mask = placed
        local_mean = canvas[win][mask].mean(axis=0)
        need = 0.0 if rng.random() < low_contrast_prob else min_contrast
        best = rng.uniform(0, 255, 3).astype(np.float32)
        best_dist = float(np.linalg.norm(best - local_mean))
        for _try in range(9):
            if best_dist >= need:
                break
            candidate = rng.uniform(0, 255, 3).astype(np.float32)
            dist = float(np.linalg.norm(candidate - local_mean))
            if dist > best_dist:
                best, best_dist = candidate, dist
        tex = _texture(rng, ys[win[0]], xs[:, win[1]], best, _near_colour(rng, best, 30.0))
        canvas[win][mask] = tex[mask]
        label[win][mask] = cls
        occupied[win] |= mask

    # Optics and sensor: a [1, 2, 1] blur both ways, then Gaussian noise.
    blurred = canvas.copy()
    blurred[1:-1] = 0.25 * canvas[:-2] + 0.5 * canvas[1:-1] + 0.25 * canvas[2:]
    canvas = blurred.copy()
    canvas[:, 1:-1] = 0.25 * blurred[:, :-2] + 0.5 * blurred[:, 1:-1] + 0.25 * blurred[:, 2:]
    if noise_sigma > 0:
        canvas += rng.standard_normal((h, w, 3), dtype=np.float32) * noise_sigma
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)

    label[void_band(label, void_radius)] = IGNORE_INDEX
    return Sample(name=f"scene_{index:06d}", image=image, label=label)


class SyntheticScenes(SegmentationDataset):
    """``num_images`` synthetic scenes of ``size`` (H, W), generated on demand from ``seed``.

    Nothing is cached: ``ds[i]`` regenerates scene i (a few ms). Keyword options go to
    :func:`generate_scene`.
    """

    def __init__(
        self,
        num_images: int,
        size: tuple[int, int] = (200, 200),
        seed: int = 0,
        **options: Any,
    ) -> None:
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.size = (int(size[0]), int(size[1]))
        self.seed = int(seed)
        self.options = dict(options)
        self.class_names = SYNTHETIC_CLASSES
        self.names = [f"scene_{i:06d}" for i in range(num_images)]
        # Fail now, not in a DataLoader worker, on a bad option.
        generate_scene(self.seed, 0, self.size, **self.options)

    def _load(self, index: int) -> Sample:
        return generate_scene(self.seed, index, self.size, **self.options)


def write_synthetic_dataset(
    out_dir: str | os.PathLike[str],
    num_images: int,
    layout: Literal["folder", "voc"] = "folder",
    size: tuple[int, int] = (200, 200),
    seed: int = 0,
    num_val: int = 0,
) -> Path:
    """Generate ``num_images`` scenes and write them to disk.

    ``layout="folder"`` writes ``images/*.png``, ``masks/*.png`` and ``classes.txt`` (read by
    :class:`deeplab.data.folder.FolderDataset`); ``"voc"`` writes the VOC 2012 layout under
    ``out_dir`` with the last ``num_val`` scenes as ``val`` (read by
    :class:`deeplab.data.voc.VOCSegmentation` with ``class_names=SYNTHETIC_CLASSES``).
    """
    scenes = SyntheticScenes(num_images, size=size, seed=seed)
    if layout == "folder":
        if num_val:
            raise ValueError("num_val applies to the 'voc' layout only")
        return write_folder_dataset(scenes, out_dir)
    if layout == "voc":
        if not 0 <= num_val <= num_images:
            raise ValueError(f"num_val must be in 0..{num_images}, got {num_val}")
        val = scenes.names[num_images - num_val :] if num_val else []
        return write_voc_layout(scenes, out_dir, val_names=val)
    raise ValueError(f"layout must be 'folder' or 'voc', got {layout!r}")
