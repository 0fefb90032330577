"""``deeplab tune-crf``: choosing the CRF parameters by a coarse-to-fine grid search on
saved network outputs, as the paper chose them by cross-validation on a subset of val
(section 5).

One concept per module:

- :mod:`~deeplab.tune.space`: the grid (:class:`Range`, :class:`SearchSpace`) and its
  refinement rounds;
- :mod:`~deeplab.tune.search_log`: scored parameter sets (:class:`Entry`), their ranking and
  the resumable ``search.jsonl`` (:class:`SearchLog`);
- :mod:`~deeplab.tune.engine`: many parameter sets scored on one image, sharing lattices;
- :mod:`~deeplab.tune.search`: the search itself (:func:`search`, :func:`tune_crf`);
- :mod:`~deeplab.tune.result`: a finished search (:class:`TuneResult`);
- :mod:`~deeplab.tune.heatmap` and :mod:`~deeplab.tune.report`: the report files.
"""

from __future__ import annotations

from deeplab.tune.heatmap import heatmap_figure, heatmap_slice, plot_heatmap
from deeplab.tune.report import report_dict, report_markdown, write_report
from deeplab.tune.result import TuneResult
from deeplab.tune.search import ProgressFn, search, select_images, tune_crf
from deeplab.tune.search_log import SEARCH_LOG, Entry, SearchLog, rank_entries
from deeplab.tune.space import (
    AXES,
    NO_CRF,
    Range,
    SearchSpace,
    param_key,
    planned_sizes,
    round_spaces,
)

__all__ = [
    "AXES",
    "NO_CRF",
    "SEARCH_LOG",
    "Entry",
    "ProgressFn",
    "Range",
    "SearchLog",
    "SearchSpace",
    "TuneResult",
    "heatmap_figure",
    "heatmap_slice",
    "param_key",
    "planned_sizes",
    "plot_heatmap",
    "rank_entries",
    "report_dict",
    "report_markdown",
    "round_spaces",
    "search",
    "select_images",
    "tune_crf",
    "write_report",
]
