"""Choosing the CRF parameters: coarse-to-fine grid search on saved network outputs.

The paper (section 4.3; SPEC section 4) cross-validates w1, theta_alpha and theta_beta on
100 val images with w2 = theta_gamma = 3 fixed: a coarse grid (w1 in 5:10, theta_alpha in
50:10:100, theta_beta in 3:1:10, MATLAB notation), then finer steps around the best. Here
each round after the first halves the step of every searched axis in a window of one old
step either side of the best point so far (:meth:`SearchSpace.refine`).

The network never runs: the stride-8 scores come from ``deeplab evaluate --save-logits``
(:func:`deeplab.evaluate.save_logits`) and each (image, parameter set) is scored exactly as
:func:`deeplab.evaluate.evaluate_saved` scores it, so the tuned numbers are the ones
``evaluate --from-logits --crf best_crf.json`` reports. One confusion matrix per parameter set
is summed over the images (SPEC section 5).

Work runs in a spawn pool of ``workers`` processes, each pinned to one numba/torch thread and
holding every image, label and saved score, loaded once when it starts; one task is one image
and the parameter sets that share its bilateral lattice, each lattice built once for all of
them (:mod:`deeplab.tune_engine`). A parameter set's line is appended to ``search.jsonl`` in
the output folder as soon as its last image is done, so a search that is stopped and started
again over the same folder only computes what is missing.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deeplab.crf import CRFParams
from deeplab.data import VOC_CLASSES, VOC_SHORT_NAMES, SegmentationDataset
from deeplab.evaluate import LOGITS_META, load_saved_logits
from deeplab.io_utils import append_synced, atomic_write_text
from deeplab.metrics import ConfusionMatrix, markdown_table
from deeplab.tune_engine import Task, group_tasks, score_shared

__all__ = [
    "AXES",
    "Entry",
    "Range",
    "SearchLog",
    "SearchSpace",
    "TuneResult",
    "heatmap_figure",
    "param_key",
    "plot_heatmap",
    "rank_entries",
    "search",
    "select_images",
    "tune_crf",
    "write_report",
]

log = logging.getLogger(__name__)

AXES: tuple[str, ...] = ("w1", "theta_alpha", "theta_beta", "w2", "theta_gamma")
"""The CRFParams fields a search may vary."""

ProgressFn = Callable[[int, int], None]
"""Called with (CRF runs done, CRF runs in the whole search) in this call of :func:`search`;
runs whose parameter set the search log already holds count as done."""

SEARCH_LOG = "search.jsonl"
NO_CRF = "none"
_DIGITS = 6  # grid values are rounded here so that halved steps give stable keys


def _clean(value: float) -> float:
    return float(round(float(value), _DIGITS)) + 0.0  # + 0.0 turns -0.0 into 0.0


# --------------------------------------------------------------------------- grids


@dataclass(frozen=True)
class Range:
    """Inclusive values ``start, start + step, ..., <= stop``; ``step`` 0 is one fixed value.

    Written ``start:stop:step`` (:meth:`parse`), e.g. ``50:100:10``; ``start:stop`` means
    step 1 and a single number is a fixed value.
    """

    start: float
    stop: float
    step: float = 0.0

    def __post_init__(self) -> None:
        for name in ("start", "stop", "step"):
            value = float(getattr(self, name))
            if not math.isfinite(value):
                raise ValueError(f"range {name} must be finite, got {value}")
            object.__setattr__(self, name, _clean(value))
        if self.step < 0:
            raise ValueError(f"range step must be >= 0, got {self.step}")
        if self.stop < self.start:
            raise ValueError(f"range stop {self.stop} is below its start {self.start}")
        if self.step == 0 and self.stop != self.start:
            raise ValueError(f"range {self.start}..{self.stop} needs a step > 0")

    @classmethod
    def parse(cls, text: str) -> Range:
        """``"5:10:1"``, ``"5:10"`` (step 1) or ``"3"`` (fixed)."""
        parts = str(text).strip().split(":")
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            raise ValueError(
                f"range {text!r}: expected start:stop:step, start:stop or a number"
            ) from None
        if len(numbers) == 1:
            return cls(numbers[0], numbers[0], 0.0)
        if len(numbers) == 2:
            return cls(numbers[0], numbers[1], 1.0)
        if len(numbers) == 3:
            if numbers[2] <= 0 and numbers[0] != numbers[1]:
                raise ValueError(f"range {text!r}: the step must be > 0")
            return cls(numbers[0], numbers[1], numbers[2] if numbers[0] != numbers[1] else 0.0)
        raise ValueError(f"range {text!r}: expected start:stop:step, start:stop or a number")

    @property
    def fixed(self) -> bool:
        return self.step == 0

    def values(self) -> tuple[float, ...]:
        if self.fixed:
            return (self.start,)
        # Counting steps (not adding them up) keeps 0.1-type steps from drifting past stop.
        n = math.floor((self.stop - self.start) / self.step + 1e-9)
        return tuple(_clean(self.start + i * self.step) for i in range(n + 1))

    def __str__(self) -> str:
        if self.fixed:
            return f"{self.start:g}"
        return f"{self.start:g}:{self.stop:g}:{self.step:g}"


@dataclass(frozen=True)
class SearchSpace:
    """A grid over the CRF parameters: one :class:`Range` per field of :data:`AXES`.

    The defaults are the paper's coarse grid (SPEC section 4) with the pos kernel fixed at
    w2 = theta_gamma = 3, DeepLab's 10 iterations and normalise-after.
    """

    w1: Range = Range(5, 10, 1)
    theta_alpha: Range = Range(50, 100, 10)
    theta_beta: Range = Range(3, 10, 1)
    w2: Range = Range(3, 3)
    theta_gamma: Range = Range(3, 3)
    iterations: int = 10
    normalization: str = "after"

    def __post_init__(self) -> None:
        for axis in AXES:
            r = getattr(self, axis)
            if not isinstance(r, Range):
                r = Range.parse(str(r))
                object.__setattr__(self, axis, r)
            positive = axis.startswith("theta")
            if r.start < 0 or (positive and r.start == 0):
                bound = "> 0" if positive else ">= 0"
                raise ValueError(f"{axis} range {r} must stay {bound}")
        # Fails here, not in a worker, on bad iterations or normalization.
        CRFParams(iterations=self.iterations, normalization=self.normalization)

    def grid(self) -> list[CRFParams]:
        """Every combination, w1 slowest and theta_gamma fastest."""
        fixed = {"iterations": self.iterations, "normalization": self.normalization}
        axes = [getattr(self, a).values() for a in AXES]
        return [
            CRFParams(**dict(zip(AXES, v, strict=True)), **fixed) for v in itertools.product(*axes)
        ]

    def size(self) -> int:
        return math.prod(len(getattr(self, a).values()) for a in AXES)

    def refine(self, best: CRFParams, window: float = 1.0) -> SearchSpace:
        """The next round's grid: half the step, ``window`` old steps either side of ``best``.

        Fixed axes stay fixed. The window may leave the previous range (the authors' final
        values lie outside their coarse grid) but never the valid domain: weights >= 0,
        theta > 0.
        """
        if window < 0.5:
            raise ValueError(f"refinement window must be >= 0.5 old steps, got {window}")
        changes: dict[str, Range] = {}
        for axis in AXES:
            r = getattr(self, axis)
            if r.fixed:
                continue
            centre = float(getattr(best, axis))
            step = r.step / 2
            reach = math.floor(window * 2 + 1e-9)  # new steps either side
            below = reach
            while below > 0 and not _valid(axis, centre - below * step):
                below -= 1
            changes[axis] = Range(centre - below * step, centre + reach * step, step)
        return dataclasses.replace(self, **changes)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {a: str(getattr(self, a)) for a in AXES}
        out.update(iterations=self.iterations, normalization=self.normalization)
        return out


def _valid(axis: str, value: float) -> bool:
    value = _clean(value)
    return value > 0 if axis.startswith("theta") else value >= 0


def param_key(params: CRFParams | None) -> str:
    """A stable text key of a parameter set (``"none"``: no CRF)."""
    if params is None:
        return NO_CRF
    values = ",".join(f"{a}={_clean(getattr(params, a))!r}" for a in AXES)
    return f"{values},iterations={params.iterations},normalization={params.normalization}"


def round_spaces(
    space: SearchSpace,
    rounds: int,
    best_of: Callable[[SearchSpace], CRFParams],
    window: float = 1.0,
) -> Iterator[SearchSpace]:
    """Round 0's space, then ``rounds`` refinements, each around ``best_of(previous)``
    (called only once the previous round's grid has been scored)."""
    if rounds < 0:
        raise ValueError(f"refinement rounds must be >= 0, got {rounds}")
    current = space
    yield current
    for _ in range(rounds):
        current = current.refine(best_of(current), window)
        yield current


def planned_sizes(space: SearchSpace, rounds: int, window: float = 1.0) -> list[int]:
    """Grid points of round 0 and of each refinement round, before clipping at the valid
    domain (:meth:`SearchSpace.refine` keeps ``floor(2 window)`` new steps either side)."""
    reach = math.floor(window * 2 + 1e-9)
    searched = sum(not getattr(space, a).fixed for a in AXES)
    return [space.size()] + [(2 * reach + 1) ** searched] * max(rounds, 0)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Entry:
    """The summed confusion matrix of one parameter set (None: the network alone)."""

    params: CRFParams | None
    confusion: ConfusionMatrix
    round: int | None = None

    @property
    def key(self) -> str:
        return param_key(self.params)

    @property
    def mean_iou(self) -> float:
        return self.confusion.mean_iou()

    @property
    def pixel_accuracy(self) -> float:
        return self.confusion.pixel_accuracy()

    def to_dict(self) -> dict[str, Any]:
        scores = self.confusion.results()
        return {
            "key": self.key,
            "params": None if self.params is None else self.params.to_dict(),
            "round": self.round,
            "mean_iou": scores["mean_iou"],
            "pixel_accuracy": scores["pixel_accuracy"],
            "per_class_iou": scores["per_class_iou"],
            "confusion_matrix": scores["confusion_matrix"],
        }


def _sort_key(entry: Entry) -> tuple[Any, ...]:
    miou = entry.mean_iou
    acc = entry.pixel_accuracy
    params = entry.params
    order = () if params is None else tuple(getattr(params, a) for a in AXES)
    # NaN (nothing scored) sinks; ties fall back to the smaller parameters, deterministically.
    return (
        -(miou if math.isfinite(miou) else -math.inf),
        -(acc if math.isfinite(acc) else -math.inf),
        order,
    )


def rank_entries(entries: Iterable[Entry]) -> list[Entry]:
    """Best first: by mean IoU, then pixel accuracy, then smaller parameter values."""
    return sorted(entries, key=_sort_key)


class SearchLog:
    """The append-only ``search.jsonl`` of one search: a header line naming the images, then
    one line per finished parameter set. Reopening it resumes the search."""

    def __init__(
        self, path: str | os.PathLike[str], images: Sequence[str], class_names: Sequence[str]
    ) -> None:
        self.path = Path(path)
        self.images = list(images)
        self.class_names = tuple(class_names)
        self.entries: dict[str, Entry] = {}
        if self.path.is_file() and self.path.stat().st_size > 0:
            self._read()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            header = {
                "type": "header",
                "version": 1,
                "images": self.images,
                "class_names": list(self.class_names),
            }
            self._append(header)

    def _read(self) -> None:
        raw = self.path.read_bytes()
        if not raw.endswith(b"\n"):
            # A run killed mid-write leaves a partial last line: drop it so appends stay valid.
            keep = raw.rfind(b"\n") + 1
            log.warning("%s: dropping an unfinished last line", self.path)
            with open(self.path, "r+b") as handle:
                handle.truncate(keep)
            raw = raw[:keep]
        lines = raw.decode("utf-8").splitlines()
        if not lines:
            raise ValueError(f"{self.path}: empty search log")
        header = json.loads(lines[0])
        if header.get("type") != "header":
            raise ValueError(f"{self.path}: not a tune-crf search log (no header line)")
        if header["images"] != self.images or list(header["class_names"]) != list(self.class_names):
            raise ValueError(
                f"{self.path} holds a search over other images or classes "
                f"({len(header['images'])} images, first {header['images'][:1]}); "
                "give another output folder or delete it"
            )
        k = len(self.class_names)
        for number, line in enumerate(lines[1:], start=2):
            data = json.loads(line)
            matrix = np.asarray(data["confusion_matrix"], dtype=np.int64)
            if matrix.shape != (k, k):
                raise ValueError(
                    f"{self.path}:{number}: confusion matrix {matrix.shape}, not {k}x{k}"
                )
            params = None if data["params"] is None else CRFParams.from_dict(data["params"])
            cm = ConfusionMatrix.from_matrix(matrix, self.class_names)
            entry = Entry(params, cm, data.get("round"))
            self.entries[entry.key] = entry
        log.info("%s: %d parameter sets already scored", self.path, len(self.entries))

    def _append(self, record: Mapping[str, Any]) -> None:
        # One write per line, flushed and synced: an interruption loses at most this line.
        append_synced(self.path, json.dumps(record) + "\n")

    def add(self, entry: Entry) -> None:
        self.entries[entry.key] = entry
        self._append({"type": "result", **entry.to_dict()})


# --------------------------------------------------------------------------- workers


@dataclass
class _Images:
    """Everything one CRF run needs, loaded once per process."""

    images: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    logits: list[np.ndarray] = field(default_factory=list)
    num_classes: int = 0

    @classmethod
    def load(
        cls,
        dataset: SegmentationDataset,
        folder: str,
        picks: Sequence[tuple[int, str]],
        num_classes: int,
    ) -> _Images:
        out = cls(num_classes=num_classes)
        for index, name in picks:
            sample = dataset[index]
            saved = load_saved_logits(Path(folder) / f"{name}.npz")
            if saved.size != sample.size:
                raise ValueError(
                    f"{name}: saved scores are for a {saved.size} image, the dataset's is "
                    f"{sample.size}"
                )
            if saved.logits.shape[0] != num_classes:
                raise ValueError(
                    f"{name}: {saved.logits.shape[0]} score maps, expected {num_classes}"
                )
            out.images.append(sample.image)
            out.labels.append(sample.label)
            out.logits.append(saved.logits)
        return out

    def score(self, task: Task) -> list[tuple[str, int, np.ndarray]]:
        i, settings = task
        scores = score_shared(
            self.images[i], self.labels[i], self.logits[i], self.num_classes, settings
        )
        return [(key, i, matrix) for key, matrix in scores]


_WORKER: _Images | None = None
_WORKER_ERROR: Exception | None = None


def _init_worker(
    dataset: SegmentationDataset, folder: str, picks: Sequence[tuple[int, str]], num_classes: int
) -> None:
    # One thread each, so N workers use N cores without oversubscription.
    import numba
    import torch

    numba.set_num_threads(1)
    torch.set_num_threads(1)
    global _WORKER, _WORKER_ERROR
    try:
        _WORKER = _Images.load(dataset, folder, picks, num_classes)
    except Exception as exc:
        # Raising here would make the pool respawn the worker forever; the first task
        # re-raises it in the parent instead.
        _WORKER_ERROR = exc


def _worker_task(task: Task) -> list[tuple[str, int, np.ndarray]]:
    if _WORKER_ERROR is not None:
        raise _WORKER_ERROR
    assert _WORKER is not None, "worker used before its initializer ran"
    return _WORKER.score(task)


class _Runner:
    """Scores tasks in this process (``workers=0``) or one spawn pool kept for the search."""

    def __init__(
        self,
        workers: int,
        dataset: SegmentationDataset,
        folder: str,
        picks: Sequence[tuple[int, str]],
        num_classes: int,
    ) -> None:
        self.pool = None
        self.local: _Images | None = None
        args = (dataset, folder, list(picks), num_classes)
        if workers > 0:
            # spawn, not fork: the parent's torch/numba thread pools do not survive a fork.
            self.pool = multiprocessing.get_context("spawn").Pool(workers, _init_worker, args)
        else:
            self.local = _Images.load(*args)

    def run(self, tasks: list[Task]) -> Iterator[tuple[str, int, np.ndarray]]:
        """(key, image index, confusion counts) of every setting of every task."""
        if self.pool is not None:
            for results in self.pool.imap_unordered(_worker_task, tasks, chunksize=1):
                yield from results
        else:
            assert self.local is not None
            for task in tasks:
                yield from self.local.score(task)

    def close(self, *, terminate: bool = False) -> None:
        if self.pool is not None:
            if terminate:
                self.pool.terminate()
            else:
                self.pool.close()
            self.pool.join()
            self.pool = None


# --------------------------------------------------------------------------- search


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
        if (base / f"{name}.npz").is_file():
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
    meta = folder / LOGITS_META
    if meta.is_file():
        k = int(json.loads(meta.read_text(encoding="utf-8"))["num_classes"])
    else:
        k = len(dataset.class_names)
    if k != len(dataset.class_names):
        raise ValueError(
            f"the saved scores have {k} classes, the dataset {len(dataset.class_names)}"
        )
    return k


@dataclass
class TuneResult:
    """A finished search.

    Attributes:
        ranking: every grid point of every round, best first.
        best: ``ranking[0]``.
        no_crf: the network alone on the same images.
        reference: the reference preset (None when not asked for).
        images: the names scored.
        computed: parameter sets scored in this call (the rest came from the log).
        seconds: wall time of this call.
    """

    ranking: list[Entry]
    no_crf: Entry
    reference: Entry | None
    reference_name: str | None
    space: SearchSpace
    rounds: int
    images: list[str]
    class_names: tuple[str, ...]
    computed: int
    seconds: float
    round_sizes: list[int] = field(default_factory=list)

    @property
    def best(self) -> Entry:
        return self.ranking[0]

    @property
    def best_params(self) -> CRFParams:
        assert self.best.params is not None
        return self.best.params

    def notes(self) -> list[str]:
        """Hints on the ranges: every set scoring the same (the CRF makes no difference
        there); an axis whose best value is the smallest or largest value searched, with no
        equally good set inside the range, may do better further out; a reference that
        beats the best."""
        out = []
        scores = [e.mean_iou for e in self.ranking]
        if len(scores) > 1 and max(scores) - min(scores) <= 1e-12:
            out.append(
                f"all {len(scores)} parameter sets score the same mean IoU "
                f"({100 * scores[0]:.2f}%): these ranges make no difference on these images; "
                "try other ranges or more images"
            )
        else:
            best_score = self.best.mean_iou
            tied = [e.params for e in self.ranking if e.params and e.mean_iou >= best_score]
            for axis in AXES:
                searched = sorted(
                    {_clean(getattr(e.params, axis)) for e in self.ranking if e.params}
                )
                values = {_clean(getattr(p, axis)) for p in tied}
                if len(searched) < 2 or len(values) != 1:
                    continue
                value = values.pop()
                if searched[0] < value < searched[-1]:
                    continue
                side = "smallest" if value == searched[0] else "largest"
                out.append(
                    f"best {axis} = {value:g} is the {side} value searched "
                    f"({searched[0]:g}..{searched[-1]:g}): a wider range may find better values"
                )
        if self.reference is not None and self.reference.mean_iou > self.best.mean_iou:
            out.append(
                f"the reference ({self.reference_name or 'given'}) scores higher than every "
                "point searched: widen the ranges"
            )
        return out


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
    runner: _Runner | None = None

    def score(params_list: Sequence[CRFParams | None], round_: int | None, estimate: int) -> None:
        nonlocal runner, done_runs, planned
        keys = {param_key(p): p for p in params_list}
        todo = {key: p for key, p in keys.items() if key not in book.entries}
        planned += n * (len(keys) - estimate)
        done_runs += n * (len(keys) - len(todo))
        if progress is not None:
            progress(done_runs, planned)
        if not todo:
            return
        if runner is None:
            runner = _Runner(workers, dataset, os.fspath(folder), picks, k)
        log.info("round %s: %d parameter sets x %d images", round_, len(todo), n)
        sums = {key: np.zeros((k, k), dtype=np.int64) for key in todo}
        counts = dict.fromkeys(todo, 0)
        for key, _, matrix in runner.run(group_tasks(todo, n)):
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
        if runner is not None:
            runner.close(terminate=True)
            runner = None
        raise
    finally:
        if runner is not None:
            runner.close()

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


# --------------------------------------------------------------------------- reports


def _fmt(value: float) -> str:
    return f"{value:g}"


def _pct(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{100 * value:.2f}"


def _describe(params: CRFParams | None) -> str:
    if params is None:
        return "no CRF"
    return ", ".join(f"{a}={_fmt(getattr(params, a))}" for a in AXES)


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
        if all(_clean(getattr(p, a)) == _clean(getattr(best, a)) for a in others):
            points[(_clean(p.theta_alpha), _clean(p.theta_beta))] = e.mean_iou
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
        range(len(betas)), labels=[_fmt(b) for b in betas], rotation=90 if len(betas) > 12 else 0
    )
    ax.set_yticks(range(len(alphas)), labels=[_fmt(a) for a in alphas])
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
    bi = alphas.index(_clean(best.params.theta_alpha))
    bj = betas.index(_clean(best.params.theta_beta))
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
            _clean(getattr(top, a)) != _clean(getattr(best.params, a))
            for a in ("w1", "w2", "theta_gamma")
        ):
            panels.append(
                (
                    coarse,
                    coarse[0],
                    f"coarse grid, w1 = {_fmt(top.w1)}\nbest there {100 * coarse[0].mean_iou:.2f}%",
                )
            )
    p = result.best_params
    panels.append(
        (
            result.ranking,
            best,
            f"all rounds, w1 = {_fmt(p.w1)}, w2 = {_fmt(p.w2)}, "
            f"$\\theta_\\gamma$ = {_fmt(p.theta_gamma)}\nbest {100 * best.mean_iou:.2f}%",
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


def report_dict(result: TuneResult) -> dict[str, Any]:
    """JSON report; ``params`` at the top holds the best parameters, so ``--crf`` reads it."""

    def row(e: Entry, rank: int | None = None) -> dict[str, Any]:
        d = e.to_dict()
        d.pop("key")
        return ({"rank": rank} if rank is not None else {}) | d

    return {
        "params": result.best_params.to_dict(),
        "mean_iou": result.best.mean_iou,
        "no_crf": row(result.no_crf),
        "reference": None
        if result.reference is None
        else {"name": result.reference_name} | row(result.reference),
        "space": result.space.describe(),
        "rounds": result.rounds,
        "round_sizes": result.round_sizes,
        "num_images": len(result.images),
        "images": result.images,
        "class_names": list(result.class_names),
        "seconds": result.seconds,
        "computed": result.computed,
        "notes": result.notes(),
        "ranking": [row(e, i + 1) for i, e in enumerate(result.ranking)],
    }


def _summary_row(name: str, e: Entry) -> str:
    params = "-" if e.params is None else _describe(e.params)
    return f"| {name} | {params} | {_pct(e.mean_iou)} | {_pct(e.pixel_accuracy)} |"


def report_markdown(result: TuneResult, top: int = 20) -> str:
    """Summary, the top-``top`` ranking and a per-class IoU table (paper Table 3 layout)."""
    names = VOC_SHORT_NAMES if result.class_names == VOC_CLASSES else result.class_names
    best = result.best
    keys = {e.key for e in result.ranking} | {NO_CRF}
    if result.reference is not None:
        keys.add(result.reference.key)
    read = len(keys) - result.computed
    lines = [
        "# CRF parameter search",
        "",
        f"{len(result.ranking)} parameter sets ({' + '.join(map(str, result.round_sizes))} grid "
        f"points over {result.rounds + 1} rounds, repeats counted once) on "
        f"{len(result.images)} images; {result.computed} sets (no CRF and the reference "
        f"included) scored in this run, {result.seconds:.0f} s"
        + (f"; {read} read from the search log." if read else "."),
        "",
        "| | parameters | mean IoU (%) | pixel accuracy (%) |",
        "|:---|:---|---:|---:|",
        _summary_row("no CRF", result.no_crf),
    ]
    if result.reference is not None:
        lines.append(
            _summary_row(f"reference ({result.reference_name or 'given'})", result.reference)
        )
    columns = ["rank", *AXES, "mean IoU (%)", "pixel acc. (%)", "round"]
    lines += [_summary_row("best", best), ""]
    lines += [f"Note: {note}." for note in result.notes()]
    lines += [
        "",
        f"## Ranking (top {min(top, len(result.ranking))} of {len(result.ranking)})",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---:|" * len(columns),
    ]
    for i, e in enumerate(result.ranking[:top]):
        assert e.params is not None
        values = " | ".join(_fmt(getattr(e.params, a)) for a in AXES)
        lines.append(
            f"| {i + 1} | {values} | {_pct(e.mean_iou)} | {_pct(e.pixel_accuracy)} | "
            f"{'-' if e.round is None else e.round} |"
        )
    rows: dict[str, ConfusionMatrix] = {"no CRF": result.no_crf.confusion}
    if result.reference is not None:
        rows[f"reference ({result.reference_name or 'given'})"] = result.reference.confusion
    rows["best"] = best.confusion
    lines += ["", "## Per-class IoU (%)", "", markdown_table(rows, names), ""]
    return "\n".join(lines)


def write_report(result: TuneResult, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """ranking.json, ranking.md, best_crf.json (:meth:`CRFParams.save`) and heatmap.png."""
    out = Path(out_dir)
    paths = {
        "json": out / "ranking.json",
        "markdown": out / "ranking.md",
        "best": out / "best_crf.json",
        "heatmap": out / "heatmap.png",
    }
    atomic_write_text(paths["json"], json.dumps(report_dict(result), indent=2) + "\n")
    atomic_write_text(paths["markdown"], report_markdown(result))
    result.best_params.save(paths["best"])
    plot_heatmap(result, paths["heatmap"])
    return paths


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
