"""Choosing the CRF parameters: coarse-to-fine grid search on saved network outputs.

The paper (section 5) cross-validates w1, theta_alpha and theta_beta on a subset of val
(100 images) with w2 = theta_gamma = 3 fixed: a coarse grid, then finer steps around the
best point (:mod:`deeplab.tune.space`).

The network never runs: the stride-8 scores come from ``deeplab evaluate --save-logits``
(:mod:`deeplab.saved_scores`) and each (image, parameter set) is scored exactly as
:func:`deeplab.evaluate.evaluate_saved` scores it, so the tuned numbers are the ones
``evaluate --from-logits --crf best_crf.json`` reports. One confusion matrix per parameter
set is summed over the images, and sets are ranked by mean IoU (the measure of paper
section 5).

Work runs in a :class:`deeplab.workers.WorkerPool` of ``workers`` processes, each holding
every image, label and saved score, loaded once when it starts; one task is one image and
the parameter sets that share its bilateral lattice, each lattice built once for all of
them (:mod:`deeplab.tune.engine`). A parameter set's line is appended to ``search.jsonl``
in the output folder as soon as its last image is done (:class:`SearchLog`), so a search
that is stopped and started again over the same folder only computes what is missing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deeplab.crf import CRFParams
from deeplab.data.sample import SegmentationDataset
from deeplab.metrics import ConfusionMatrix
from deeplab.saved_scores import saved_num_classes, saved_path
from deeplab.tune.engine import Task, TaskResult, group_tasks, load_search_images, score_task
from deeplab.tune.report import write_report
from deeplab.tune.result import TuneResult
from deeplab.tune.search_log import SEARCH_LOG, Entry, SearchLog, rank_entries
from deeplab.tune.space import NO_CRF, SearchSpace, param_key, planned_sizes, round_spaces
from deeplab.workers import WorkerPool

__all__ = ["ProgressFn", "search", "select_images", "tune_crf"]

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
"""Called with (CRF runs done, CRF runs in the whole search) in this call of :func:`search`;
runs whose parameter set the search log already holds count as done."""


def select_images(
    folder: str | os.PathLike[str],
    dataset: SegmentationDataset,
    num_images: int,
    spread: bool = False,
) -> list[tuple[int, str]]:
    """(index, name) of ``num_images`` samples of ``dataset`` with saved scores: the first
    ones, or with ``spread`` ones evenly spaced over all of them (lists ordered by video
    sequence, as CamVid's, then give every sequence its share)."""
    if num_images < 1:
        raise ValueError(f"the image count must be >= 1, got {num_images}")
    base = Path(folder)
    if not base.is_dir():
        raise FileNotFoundError(f"saved-logits folder not found: {base}")
    picks: list[tuple[int, str]] = []
    for index, name in enumerate(dataset.names):
        if saved_path(base, name).is_file():
            picks.append((index, name))
            if len(picks) == num_images and not spread:
                break
    if spread and len(picks) > num_images:
        at = np.round(np.linspace(0, len(picks) - 1, num_images)).astype(int)
        picks = [picks[i] for i in at]
    if not picks:
        raise ValueError(
            f"{base} holds no saved scores for the samples of this dataset "
            f"(first: {dataset.names[:1]}); save them with `deeplab evaluate --save-logits`"
        )
    if len(picks) < num_images:
        log.warning("only %d of the %d requested images have saved scores", len(picks), num_images)
    return picks


def _num_classes(folder: Path, dataset: SegmentationDataset) -> int:
    k = saved_num_classes(folder)
    if k is None:
        k = len(dataset.class_names)
    if k != len(dataset.class_names):
        raise ValueError(
            f"the saved scores have {k} classes, the dataset {len(dataset.class_names)}"
        )
    return k


def search(
    logits_dir: str | os.PathLike[str],
    dataset: SegmentationDataset,
    out_dir: str | os.PathLike[str],
    space: SearchSpace | None = None,
    *,
    rounds: int = 1,
    window: float = 1.0,
    num_images: int = 100,
    spread: bool = False,
    reference: CRFParams | None = None,
    reference_name: str | None = None,
    workers: int = 0,
    progress: ProgressFn | None = None,
) -> TuneResult:
    """Run (or resume) the coarse-to-fine search; results go to ``out_dir/search.jsonl``.

    Args:
        logits_dir: a ``deeplab evaluate --save-logits`` folder.
        dataset: the images and labels those scores belong to (matched by sample name).
        space: round 0's grid (default: the paper's).
        rounds: refinement rounds after the coarse grid.
        window: half-width of each refinement window, in the previous round's steps.
        num_images: score the first this many samples that have saved scores.
        spread: take them evenly over all saved samples instead (:func:`select_images`).
        reference: also score these parameters (e.g. the model's preset) on the same images.
        workers: worker processes (0: this process).
        progress: see :data:`ProgressFn`.
    """
    start = time.perf_counter()
    space = space or SearchSpace()
    folder = Path(logits_dir)
    picks = select_images(folder, dataset, num_images, spread)
    k = _num_classes(folder, dataset)
    names = [name for _, name in picks]
    n = len(picks)
    book = SearchLog(Path(out_dir) / SEARCH_LOG, names, dataset.class_names)
    resumed = len(book.entries)
    refs: list[CRFParams | None] = [None] + ([reference] if reference is not None else [])
    # The bar's total is known up front (a refinement round's size does not depend on where
    # the best point is, only clipping at theta > 0 can shrink it); sets found in the log
    # count as done at once, so the total never jumps as rounds start.
    estimates = [len({param_key(p) for p in refs}), *planned_sizes(space, rounds, window)]
    planned = n * sum(estimates)
    done_runs = 0
    pool: WorkerPool[Task, TaskResult] | None = None

    def score(params_list: Sequence[CRFParams | None], round_: int | None, estimate: int) -> None:
        nonlocal pool, done_runs, planned
        keys = {param_key(p): p for p in params_list}
        todo = {key: p for key, p in keys.items() if key not in book.entries}
        planned += n * (len(keys) - estimate)
        done_runs += n * (len(keys) - len(todo))
        if progress is not None:
            progress(done_runs, planned)
        if not todo:
            return
        if pool is None:
            pool = WorkerPool(
                workers, score_task, load_search_images, (dataset, os.fspath(folder), picks, k)
            )
        log.info("round %s: %d parameter sets x %d images", round_, len(todo), n)
        sums = {key: np.zeros((k, k), dtype=np.int64) for key in todo}
        counts = dict.fromkeys(todo, 0)
        for results in pool.map_unordered(group_tasks(todo, n)):
            for key, _, matrix in results:
                sums[key] += matrix
                counts[key] += 1
                if counts[key] == n:
                    cm = ConfusionMatrix.from_matrix(sums.pop(key), dataset.class_names)
                    book.add(Entry(todo[key], cm, round_))
                done_runs += 1
                if progress is not None:
                    progress(done_runs, planned)

    def best_of(current: SearchSpace) -> CRFParams:
        seen = [book.entries[param_key(p)] for s in spaces_so_far for p in s.grid()]
        best = rank_entries(seen)[0].params
        assert best is not None
        return best

    spaces_so_far: list[SearchSpace] = []
    try:
        score(refs, None, estimates[0])
        for number, current in enumerate(round_spaces(space, rounds, best_of, window)):
            spaces_so_far.append(current)
            score(current.grid(), number, estimates[number + 1])
    except BaseException:
        if pool is not None:
            pool.close(terminate=True)
            pool = None
        raise
    finally:
        if pool is not None:
            pool.close()

    grid_keys: dict[str, None] = {}
    for s in spaces_so_far:
        grid_keys.update(dict.fromkeys(param_key(p) for p in s.grid()))
    ranking = rank_entries(book.entries[key] for key in grid_keys)
    computed = len(book.entries) - resumed
    result = TuneResult(
        ranking=ranking,
        no_crf=book.entries[NO_CRF],
        reference=None if reference is None else book.entries[param_key(reference)],
        reference_name=reference_name,
        space=space,
        rounds=rounds,
        images=names,
        class_names=tuple(dataset.class_names),
        computed=computed,
        seconds=time.perf_counter() - start,
        round_sizes=[s.size() for s in spaces_so_far],
    )
    log.info(
        "best of %d parameter sets: %s, mIoU %.4f (no CRF %.4f)",
        len(ranking),
        param_key(result.best_params),
        result.best.mean_iou,
        result.no_crf.mean_iou,
    )
    # The notes are the caller's to show (the command line prints them once).
    for note in result.notes():
        log.info("%s", note)
    return result


def tune_crf(
    logits_dir: str | os.PathLike[str],
    dataset: SegmentationDataset,
    out_dir: str | os.PathLike[str],
    space: SearchSpace | None = None,
    **options: Any,
) -> tuple[TuneResult, dict[str, Path]]:
    """:func:`search` then :func:`write_report` into ``out_dir``."""
    result = search(logits_dir, dataset, out_dir, space, **options)
    return result, write_report(result, out_dir)
