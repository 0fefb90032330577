"""The report's heat maps of mean IoU over theta_alpha x theta_beta."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from deeplab.crf import CRFParams
from deeplab.tune import (
    Range,
    SearchSpace,
    TuneResult,
    heatmap_slice,
    plot_heatmap,
    rank_entries,
)

from .helpers import entry as _entry


def test_heatmap_slice_takes_the_best_w1() -> None:
    entries = [
        _entry(CRFParams(w1=5, theta_alpha=50, theta_beta=3), [[9, 1], [1, 9]]),
        _entry(CRFParams(w1=5, theta_alpha=60, theta_beta=4), [[8, 2], [2, 8]]),
        _entry(CRFParams(w1=6, theta_alpha=50, theta_beta=4), [[1, 9], [9, 1]]),
    ]
    alphas, betas, grid = heatmap_slice(entries, CRFParams(w1=5, theta_alpha=50, theta_beta=3))
    assert alphas == [50, 60] and betas == [3, 4]
    np.testing.assert_allclose(grid, [[0.9 / 1.1, np.nan], [np.nan, 2 / 3]])


def test_heatmap_adds_the_coarse_grid_when_the_best_w1_is_refined(tmp_path: Path) -> None:
    space = SearchSpace(w1=Range(5, 6, 1), theta_alpha=Range(50, 60, 10), theta_beta=Range(3, 4, 1))
    coarse = [_entry(p, [[5 + i, 5], [5, 5 + i]]) for i, p in enumerate(space.grid())]
    refined = _entry(CRFParams(w1=5.5, theta_alpha=55, theta_beta=3.5), [[20, 0], [0, 20]])
    none = _entry(CRFParams(), [[5, 5], [5, 5]])
    widths = {}
    for name, ranking in (("coarse", coarse), ("refined", [refined, *coarse])):
        result = TuneResult(ranking=rank_entries(ranking), no_crf=none, reference=None,
                            reference_name=None, space=space, rounds=1, images=["a"],
                            class_names=("x", "y"), computed=1, seconds=0.0)  # fmt: skip
        with Image.open(plot_heatmap(result, tmp_path / f"{name}.png")) as im:
            widths[name] = im.size[0]
    assert widths["refined"] > 1.6 * widths["coarse"]  # a second panel


def test_heatmap_titles_fit_inside_the_figure() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from deeplab.tune import heatmap_figure

    # The narrowest figure: one panel of a 2x2 grid, long numbers in the titles.
    space = SearchSpace(w1=Range(20, 20), theta_alpha=Range(6, 7, 1), theta_beta=Range(6.5, 7.5, 1))
    ranking = [_entry(p, [[50 + i, 5], [5, 50]]) for i, p in enumerate(space.grid())]
    result = TuneResult(ranking=rank_entries(ranking), no_crf=ranking[0], reference=None,
                        reference_name=None, space=space, rounds=0, images=["a"] * 60,
                        class_names=("x", "y"), computed=1, seconds=0.0)  # fmt: skip
    fig = heatmap_figure(result)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    box = fig.bbox
    texts = [t for t in fig.findobj(lambda a: hasattr(a, "get_text")) if a_text(t)]
    titles = [t for t in texts if "best" in t.get_text()]
    assert len(titles) == 2  # the figure's title and the panel's
    for text in texts:
        extent = text.get_window_extent(renderer)
        assert extent.x0 >= box.x0 - 1 and extent.x1 <= box.x1 + 1, text.get_text()
        assert extent.y0 >= box.y0 - 1 and extent.y1 <= box.y1 + 1, text.get_text()


def a_text(artist: object) -> bool:
    get = getattr(artist, "get_text", None)
    return callable(get) and isinstance(get(), str) and bool(get().strip())
