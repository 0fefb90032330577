"""A self-contained HTML report of an evaluation: one file, every image inlined.

Images are embedded as base64 PNG ``data:`` URIs, so the report opens anywhere (mail it,
archive it) and loads nothing from the network. All text is HTML-escaped.

Contents: a summary (key/value lines), the mean IoU table (per class, without and with
the CRF), figures (e.g. the trimap curves of paper Fig. 5), and per scene the image, the
DCNN result, the DCNN+CRF result and the ground truth side by side, optionally followed by
belief maps (the probability of one class, e.g. after CRF iterations 1, 2 and 10 as in
paper Fig. 2).
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from deeplab.data.classes import VOC_PALETTE, colorize
from deeplab.io_utils import atomic_write_text
from deeplab.metrics.confusion import ConfusionMatrix

__all__ = [
    "Figure",
    "ReportData",
    "ScenePanel",
    "belief_image",
    "colour_bar",
    "png_bytes",
    "png_data_uri",
    "render_html",
    "write_report",
]


def png_bytes(image: np.ndarray) -> bytes:
    """(H, W) or (H, W, 3) uint8 -> PNG file bytes."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W[, 3]) uint8 image, got {arr.shape} {arr.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def png_data_uri(image: np.ndarray | bytes) -> str:
    """A ``data:image/png;base64,...`` URI of an image array or of PNG bytes."""
    data = image if isinstance(image, bytes) else png_bytes(image)
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("png_data_uri: the bytes are not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def belief_image(prob: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """An (H, W) probability map in [0, 1] -> (H, W, 3) uint8 through a matplotlib colour
    map (blue 0 .. red 1 with "jet", the paper's Fig. 2 look)."""
    from matplotlib import colormaps

    p = np.clip(np.nan_to_num(np.asarray(prob, dtype=np.float32)), 0.0, 1.0)
    if p.ndim != 2:
        raise ValueError(f"belief map must be (H, W), got {p.shape}")
    rgba = colormaps[cmap](p)
    return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


@dataclass
class ScenePanel:
    """One scene of the report: image, DCNN and DCNN+CRF labels, ground truth (void 255
    drawn in the palette's void colour), and (title, probability map) belief maps of
    ``belief_class``."""

    name: str
    image: np.ndarray
    dcnn: np.ndarray
    crf: np.ndarray
    truth: np.ndarray
    belief_class: str = ""
    beliefs: list[tuple[str, np.ndarray]] = field(default_factory=list)


@dataclass
class Figure:
    """A PNG figure with a caption."""

    title: str
    png: bytes
    caption: str = ""


@dataclass
class ReportData:
    """Everything :func:`render_html` shows. ``methods`` maps a row name to its confusion
    matrix (e.g. {"DCNN": ..., "DCNN+CRF": ...})."""

    title: str
    class_names: tuple[str, ...]
    methods: dict[str, ConfusionMatrix]
    summary: list[tuple[str, str]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    panels: list[ScenePanel] = field(default_factory=list)
    palette: np.ndarray | None = None
    """(256, 3) uint8 colours of the label values (None: the VOC palette)."""


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .5em}
td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{font-weight:600}
dd{margin:0}.row{display:flex;gap:.5em;flex-wrap:wrap;margin:.3em 0}
figure{margin:0}figcaption{font-size:.85em;text-align:center;color:#555}
img.px{image-rendering:pixelated;width:220px}.swatch{display:inline-block;width:1em;
height:1em;vertical-align:middle;border:1px solid #999;margin-right:.3em}
.legend span{margin-right:1em;white-space:nowrap}img.plot{max-width:100%}
.cbar{display:flex;gap:.3em;align-items:stretch}img.cbar{width:16px;height:220px;
image-rendering:pixelated;border:1px solid #999}.ticks{display:flex;flex-direction:column;
justify-content:space-between;height:220px;font-size:.8em}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _pct(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def _iou_table(data: ReportData) -> str:
    names = data.class_names
    head = "".join(f"<th>{_e(n)}</th>" for n in names)
    rows = []
    for method, cm in data.methods.items():
        cells = "".join(f'<td class="num">{_pct(v)}</td>' for v in cm.iou_per_class())
        rows.append(
            f"<tr><th>{_e(method)}</th>{cells}<td class='num'><b>{_pct(cm.mean_iou())}</b>"
            f"</td><td class='num'>{_pct(cm.pixel_accuracy())}</td></tr>"
        )
    return (
        f"<table><tr><th>method</th>{head}<th>mean IoU</th><th>pixel acc.</th></tr>"
        + "".join(rows)
        + "</table><p>IoU per class (%) over all scenes; void (255) pixels are not scored.</p>"
    )


def _legend(names: Sequence[str], palette: np.ndarray) -> str:
    items = []
    for i, name in enumerate(names):
        r, g, b = (int(v) for v in palette[i])
        items.append(
            f'<span><i class="swatch" style="background:rgb({r},{g},{b})"></i>{_e(name)}</span>'
        )
    r, g, b = (int(v) for v in palette[255])
    items.append(f'<span><i class="swatch" style="background:rgb({r},{g},{b})"></i>void</span>')
    return f'<p class="legend">{"".join(items)}</p>'


def _tile(image: np.ndarray, caption: str) -> str:
    return (
        f'<figure><img class="px" alt="{_e(caption)}" src="{png_data_uri(image)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def colour_bar(cmap: str = "jet", height: int = 128) -> str:
    """HTML of the belief maps' colour scale: a vertical strip from 1 (top) to 0 with ticks."""
    strip = np.repeat(np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None], 4, axis=1)
    ticks = "".join(f"<span>{v}</span>" for v in ("1.0", "0.5", "0.0"))
    return (
        f'<figure><div class="cbar"><img class="cbar" alt="colour scale, 0 to 1" '
        f'src="{png_data_uri(belief_image(strip, cmap))}"><div class="ticks">{ticks}</div>'
        "</div><figcaption>probability</figcaption></figure>"
    )


def _panel(panel: ScenePanel, palette: np.ndarray) -> str:
    parts = [
        f"<h3>{_e(panel.name)}</h3>",
        '<div class="row">',
        _tile(panel.image, "image"),
        _tile(colorize(panel.dcnn, palette), "DCNN"),
        _tile(colorize(panel.crf, palette), "DCNN + CRF"),
        _tile(colorize(panel.truth, palette), "ground truth"),
        "</div>",
    ]
    if panel.beliefs:
        parts.append(f"<p>Belief maps: probability of <b>{_e(panel.belief_class)}</b></p>")
        parts.append('<div class="row">')
        parts += [_tile(belief_image(p), title) for title, p in panel.beliefs]
        parts.append(colour_bar())
        parts.append("</div>")
    return "\n".join(parts)


def render_html(data: ReportData) -> str:
    """The report as one HTML document (module docstring)."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(data.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(data.title)}</h1>",
    ]
    if data.summary:
        out.append("<dl>")
        out += [f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in data.summary]
        out.append("</dl>")
    if data.methods:
        out += ["<h2>Mean IoU</h2>", _iou_table(data)]
    for fig in data.figures:
        out.append(f"<h2>{_e(fig.title)}</h2>")
        out.append(f'<img class="plot" alt="{_e(fig.title)}" src="{png_data_uri(fig.png)}">')
        if fig.caption:
            out.append(f"<p>{_e(fig.caption)}</p>")
    if data.panels:
        palette = VOC_PALETTE if data.palette is None else np.asarray(data.palette, np.uint8)
        out += ["<h2>Scenes</h2>", _legend(data.class_names, palette)]
        out += [_panel(p, palette) for p in data.panels]
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(path: str | os.PathLike[str], data: ReportData) -> Path:
    """Render and write the report atomically; returns the path."""
    target = Path(path)
    atomic_write_text(target, render_html(data))
    return target
