"""Heat maps of a CRF parameter search: mean IoU over theta_alpha x theta_beta, the two
bilateral-kernel widths the paper searches (section 5), at the best w1."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deeplab.crf import CRFParams
from deeplab.tune.result import TuneResult
from deeplab.tune.search_log import Entry
from deeplab.tune.space import AXES, clean_value, param_key

__all__ = ["heatmap_figure", "heatmap_slice", "plot_heatmap"]


def heatmap_slice(
    ranking: Sequence[Entry], best: CRFParams
) -> tuple[list[float], list[float], np.ndarray]:
    """(theta_alpha values, theta_beta values, mIoU matrix with NaN where not scored) of the
    grid points that share ``best``'s w1, w2, theta_gamma, iterations and normalization."""
    others = [a for a in AXES if a not in ("theta_alpha", "theta_beta")]
    points: dict[tuple[float, float], float] = {}
    for e in ranking:
        p = e.params
        if p is None or p.iterations != best.iterations or p.normalization != best.normalization:
            continue
        if all(clean_value(getattr(p, a)) == clean_value(getattr(best, a)) for a in others):
            points[(clean_value(p.theta_alpha), clean_value(p.theta_beta))] = e.mean_iou
    alphas = sorted({a for a, _ in points})
    betas = sorted({b for _, b in points})
    grid = np.full((len(alphas), len(betas)), np.nan)
    for (a, b), v in points.items():
        grid[alphas.index(a), betas.index(b)] = v
    return alphas, betas, grid


def _heatmap_panel(fig: Any, ax: Any, entries: Sequence[Entry], best: Entry, title: str) -> None:
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    assert best.params is not None
    alphas, betas, grid = heatmap_slice(entries, best.params)
    cmap = colormaps["viridis"].with_extremes(bad="#dddddd")
    image = ax.imshow(
        100 * np.ma.masked_invalid(grid),
        cmap=cmap,
        aspect="auto",
        interpolation="nearest",
        origin="lower",
    )
    fig.colorbar(image, ax=ax, label="mean IoU (%)")
    ax.set_xticks(
        range(len(betas)), labels=[f"{b:g}" for b in betas], rotation=90 if len(betas) > 12 else 0
    )
    ax.set_yticks(range(len(alphas)), labels=[f"{a:g}" for a in alphas])
    ax.set_xlabel(r"$\theta_\beta$ (colour std, pydensecrf srgb)")
    ax.set_ylabel(r"$\theta_\alpha$ (position std, px; pydensecrf sxy)")
    if len(alphas) * len(betas) <= 400:  # past that the numbers are unreadable
        finite = grid[np.isfinite(grid)]
        mid = float(finite.min() + finite.max()) / 2 if finite.size else 0.0
        for i, j in itertools.product(range(len(alphas)), range(len(betas))):
            if np.isfinite(grid[i, j]):
                ax.text(
                    j,
                    i,
                    f"{100 * grid[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="black" if grid[i, j] > mid else "white",
                )
    bi = alphas.index(clean_value(best.params.theta_alpha))
    bj = betas.index(clean_value(best.params.theta_beta))
    ax.add_patch(Rectangle((bj - 0.5, bi - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_title(title, fontsize=9)


def plot_heatmap(result: TuneResult, path: str | os.PathLike[str]) -> Path:
    """PNG heat map of mean IoU over theta_alpha x theta_beta at the best w1 (and w2,
    theta_gamma); every scored point of that slice is one cell, unscored cells grey.

    When the best w1 came from a refinement round (so its slice holds only the refinement
    window), a first panel shows the coarse grid at its own best w1 for the wider view.
    """
    from deeplab.metrics.plots import save_figure

    return save_figure(heatmap_figure(result), path)


def heatmap_figure(result: TuneResult) -> Any:
    """The matplotlib Figure :func:`plot_heatmap` saves. Titles are on two lines so that
    they fit the narrowest figure (one panel of a small grid)."""
    from matplotlib.figure import Figure

    best = result.best
    coarse_keys = {param_key(p) for p in result.space.grid()}
    coarse = [e for e in result.ranking if e.key in coarse_keys]
    panels: list[tuple[list[Entry], Entry, str]] = []
    if coarse and coarse[0].params is not None:
        top = coarse[0].params
        if any(
            clean_value(getattr(top, a)) != clean_value(getattr(best.params, a))
            for a in ("w1", "w2", "theta_gamma")
        ):
            panels.append(
                (
                    coarse,
                    coarse[0],
                    f"coarse grid, w1 = {top.w1:g}\nbest there {100 * coarse[0].mean_iou:.2f}%",
                )
            )
    p = result.best_params
    panels.append(
        (
            result.ranking,
            best,
            f"all rounds, w1 = {p.w1:g}, w2 = {p.w2:g}, "
            f"$\\theta_\\gamma$ = {p.theta_gamma:g}\nbest {100 * best.mean_iou:.2f}%",
        )
    )
    sizes = [heatmap_slice(entries, b.params)[2].shape for entries, b, _ in panels if b.params]
    width = sum(max(4.5, 0.7 * cols + 2.4) for _, cols in sizes)
    height = max(4.0, 0.42 * max(rows for rows, _ in sizes) + 1.8)
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (entries, b, title) in zip(axes, panels, strict=True):
        _heatmap_panel(fig, ax, entries, b, title)
    fig.suptitle(
        f"CRF search on {len(result.images)} images: mean IoU (%)\n"
        f"best in red; no CRF {100 * result.no_crf.mean_iou:.2f}%",
        fontsize=10,
    )
    return fig
