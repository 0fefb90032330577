"""Evaluation over a split, with and without the CRF in one pass (paper section 5).

For each image the network's stride-8 scores (:class:`deeplab.predict.Predictor`) are
upsampled x8 and cropped; the argmax scores the plain network, the dense CRF on the same
scores scores "-CRF". One confusion matrix per method is accumulated over the whole split
(label 255 ignored): mean IoU, per-class IoU as in the paper's Table 3, pixel accuracy.
Optionally the boundary trimap of paper Fig. 5 is accumulated too.

The CRF runs in worker processes (``workers``, :class:`deeplab.workers.WorkerPool`: one
thread each, so N workers use N cores) while the main process runs the network. The
stride-8 scores can be saved per image (``save_logits_dir``, the folder format of
:mod:`deeplab.saved_scores`), after which :func:`evaluate_saved` re-scores any CRF
parameters without the network: what CRF tuning needs (paper section 5).

Under ``torchrun`` each process scores every ``world_size``-th image and the confusion
matrices are summed over processes (``all_reduce``); rank 0 holds the totals.

An evaluation that is interrupted (killed, a full disk) can resume: with a
:class:`ScoreStore` every image's confusion counts are kept in a folder as they are made,
and a resumed evaluation reuses them. Sums of integer counts do not depend on their order,
so the resumed result equals an uninterrupted one exactly.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deeplab.crf import CRFParams
from deeplab.data.classes import VOC_CLASSES, VOC_SHORT_NAMES
from deeplab.data.image_io import write_bytes, write_text
from deeplab.data.sample import Sample, SegmentationDataset
from deeplab.distributed import DistContext, shard
from deeplab.metrics import (
    BANDS,
    DEFAULT_WIDTHS,
    ConfusionMatrix,
    TrimapEvaluator,
    markdown_table,
)
from deeplab.predict import Predictor, full_resolution, padded_size, refine
from deeplab.saved_scores import iter_saved_logits, save_logits, saved_num_classes, write_meta
from deeplab.workers import WorkerPool

__all__ = [
    "EvalResult",
    "ScoreStore",
    "evaluate",
    "evaluate_saved",
    "score_image",
]

log = logging.getLogger(__name__)

ProgressFn = Callable[[int], None]
"""Called with the number of images finished so far (on this process)."""

# --------------------------------------------------------------------------- scoring


def score_image(
    image: np.ndarray,
    label: np.ndarray,
    logits: np.ndarray,
    num_classes: int,
    crf: CRFParams | None = None,
    trimap_widths: Sequence[int] | None = None,
    trimap_band: str = "void",
) -> dict[str, np.ndarray]:
    """Confusion counts of one image from its kept scores (:meth:`Predictor.scores`:
    stride-8 (L, h, w), or (L, H, W) on the image's grid).

    Returns ``plain`` (K, K) and, as asked, ``crf`` (K, K), ``trimap_plain`` and
    ``trimap_crf`` (len(widths), K, K): int64 counts, rows = ground truth.
    """
    h, w = label.shape
    full = full_resolution(np.asarray(logits, dtype=np.float32), (h, w))
    preds = {"plain": refine(image, full, None)}
    if crf is not None:
        preds["crf"] = refine(image, full, crf)
    out: dict[str, np.ndarray] = {}
    for key, pred in preds.items():
        out[key] = ConfusionMatrix(num_classes).update(pred, label).matrix
        if trimap_widths is not None:
            tri = TrimapEvaluator(num_classes, trimap_widths, band=trimap_band)
            tri.update(pred, label)
            out[f"trimap_{key}"] = tri.matrices
    return out


def _score_task(state: None, task: tuple[Any, ...]) -> dict[str, np.ndarray]:
    """One image's counts (:func:`score_image`), in a worker of :class:`WorkerPool`."""
    image, label, logits, num_classes, crf_dict, widths, band = task
    crf = CRFParams.from_dict(crf_dict) if crf_dict is not None else None
    return score_image(image, label, logits, num_classes, crf, widths, band)


# --------------------------------------------------------------------------- resuming


class ScoreStore:
    """Per-image confusion counts of one evaluation, kept so that an interrupted run resumes.

    ``folder`` holds ``key.json`` (what was evaluated: weights, CRF, data, ...; any JSON
    object) and one ``<name>.npz`` per finished image with the arrays of
    :func:`score_image`. A new evaluation refuses a folder that has counts (pass
    ``resume``); a resumed one refuses counts made with another ``key``.
    """

    KEY_NAME = "key.json"

    def __init__(self, folder: str | os.PathLike[str], key: dict[str, Any], resume: bool) -> None:
        self.folder = Path(folder)
        self.key = json.loads(json.dumps(key))  # as it reads back from key.json
        key_path = self.folder / self.KEY_NAME
        if key_path.is_file():
            if not resume:
                raise FileExistsError(
                    f"{self.folder} holds the scores of an interrupted evaluation: pass "
                    "--resume to continue it, or delete the folder"
                )
            saved = json.loads(key_path.read_text(encoding="utf-8"))
            changed = sorted(k for k in {*saved, *self.key} if saved.get(k) != self.key.get(k))
            if changed:
                raise ValueError(
                    f"{self.folder} holds the scores of another evaluation (it differs in "
                    f"{', '.join(changed)}): resume with the same settings, or delete it"
                )
        else:
            write_text(key_path, json.dumps(self.key, indent=2) + "\n")

    def _path(self, name: str) -> Path:
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            raise ValueError(f"sample name {name!r} cannot be a file name")
        return self.folder / f"{name}.npz"

    def load(self, name: str) -> dict[str, np.ndarray] | None:
        """The counts kept for ``name``, or None (not scored yet, or unreadable)."""
        path = self._path(name)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: np.asarray(data[k], dtype=np.int64) for k in data.files}
        except (OSError, ValueError, KeyError) as exc:
            log.warning("%s: unreadable, scoring the image again (%s)", path, exc)
            return None

    def save(self, name: str, scores: dict[str, np.ndarray]) -> None:
        buffer = io.BytesIO()
        arrays: dict[str, Any] = dict(scores)  # keyword arrays, not savez's own options
        np.savez_compressed(buffer, **arrays)
        write_bytes(self._path(name), buffer.getvalue())

    def remove(self) -> None:
        """Delete the folder once the results are written."""
        shutil.rmtree(self.folder, ignore_errors=True)


# --------------------------------------------------------------------------- results


@dataclass
class EvalResult:
    """Accumulated scores of one evaluation (totals over processes on rank 0)."""

    class_names: tuple[str, ...]
    plain: ConfusionMatrix
    crf: ConfusionMatrix | None
    crf_params: CRFParams | None
    trimap_plain: TrimapEvaluator | None
    trimap_crf: TrimapEvaluator | None
    num_images: int
    seconds: float

    @property
    def mean_iou(self) -> float:
        return self.plain.mean_iou()

    @property
    def mean_iou_crf(self) -> float | None:
        return None if self.crf is None else self.crf.mean_iou()

    def to_dict(self, **info: Any) -> dict[str, Any]:
        """JSON-able results; ``info`` (model, weights, data, ...) is included as given."""
        out: dict[str, Any] = {
            **info,
            "num_images": self.num_images,
            "seconds": self.seconds,
            "crf_params": None if self.crf_params is None else self.crf_params.to_dict(),
            "without_crf": self.plain.results(),
            "with_crf": None if self.crf is None else self.crf.results(),
        }
        if self.trimap_plain is not None:
            out["trimap"] = {"without_crf": self.trimap_plain.results()}
            if self.trimap_crf is not None:
                out["trimap"]["with_crf"] = self.trimap_crf.results()
        return out

    def markdown(self, method: str = "DeepLab") -> str:
        """Paper Table 3 layout: per-class IoU (%) and the mean, one row per method."""
        names = VOC_SHORT_NAMES if self.class_names == VOC_CLASSES else self.class_names
        rows: dict[str, ConfusionMatrix] = {method: self.plain}
        if self.crf is not None:
            rows[f"{method}-CRF"] = self.crf
        lines = [
            f"Mean IoU over {self.num_images} images: {100 * self.plain.mean_iou():.2f}% "
            f"without the CRF"
            + ("" if self.crf is None else f", {100 * self.crf.mean_iou():.2f}% with it")
            + f"; pixel accuracy {100 * self.plain.pixel_accuracy():.2f}%"
            + ("" if self.crf is None else f" / {100 * self.crf.pixel_accuracy():.2f}%")
            + ".",
            "",
            markdown_table(rows, names),
        ]
        return "\n".join(lines)

    def write(self, out_dir: str | os.PathLike[str], method: str = "DeepLab",
              **info: Any) -> dict[str, Path]:  # fmt: skip
        """results.json, results.md, confusion[_crf].png and, with trimaps, trimap.png."""
        from deeplab.metrics.plots import plot_confusion_matrix, plot_trimap_curves

        out = Path(out_dir)
        paths = {"json": out / "results.json", "markdown": out / "results.md"}
        write_text(paths["json"], json.dumps(self.to_dict(**info), indent=2) + "\n")
        write_text(paths["markdown"], self.markdown(method))
        paths["confusion"] = plot_confusion_matrix(
            self.plain, out / "confusion.png", title=f"{method}: mIoU {100 * self.mean_iou:.1f}%"
        )
        if self.crf is not None:
            paths["confusion_crf"] = plot_confusion_matrix(
                self.crf, out / "confusion_crf.png",
                title=f"{method}-CRF: mIoU {100 * self.crf.mean_iou():.1f}%",
            )  # fmt: skip
        if self.trimap_plain is not None:
            curves: dict[str, TrimapEvaluator] = {method: self.trimap_plain}
            if self.trimap_crf is not None:
                curves[f"{method}-CRF"] = self.trimap_crf
            rule = {"void": "band around void pixels (paper Fig. 5)",
                    "boundary": "band: pixels within w of a class change"}  # fmt: skip
            paths["trimap"] = plot_trimap_curves(
                curves, out / "trimap.png", title=rule[self.trimap_plain.band]
            )
        return paths


class _Accumulator:
    def __init__(self, class_names: Sequence[str], crf: bool, band: str | None) -> None:
        k = len(class_names)
        self.class_names = tuple(class_names)
        self.plain = ConfusionMatrix(k, self.class_names)
        self.crf = ConfusionMatrix(k, self.class_names) if crf else None

        def trimap() -> TrimapEvaluator:
            return TrimapEvaluator(k, DEFAULT_WIDTHS, self.class_names, band=band or "void")

        self.tri_plain = trimap() if band else None
        self.tri_crf = trimap() if band and crf else None
        self.count = 0

    def add(self, scores: dict[str, np.ndarray]) -> None:
        self.plain.matrix += scores["plain"]
        if self.crf is not None:
            self.crf.matrix += scores["crf"]
        if self.tri_plain is not None:
            self.tri_plain.matrices += scores["trimap_plain"]
        if self.tri_crf is not None:
            self.tri_crf.matrices += scores["trimap_crf"]
        self.count += 1

    def reduce(self, ctx: DistContext | None) -> None:
        """Sum every matrix over the processes (all_reduce): each then holds the totals."""
        if ctx is None or not ctx.distributed:
            return
        for holder, attr in ((self.plain, "matrix"), (self.crf, "matrix"),
                             (self.tri_plain, "matrices"), (self.tri_crf, "matrices")):  # fmt: skip
            if holder is not None:
                total = ctx.all_reduce_sum(torch.from_numpy(getattr(holder, attr)))
                setattr(holder, attr, total.numpy().astype(np.int64))
        count = ctx.all_reduce_sum(torch.tensor([self.count], dtype=torch.int64))
        self.count = int(count.item())

    def result(self, crf: CRFParams | None, seconds: float) -> EvalResult:
        return EvalResult(self.class_names, self.plain, self.crf, crf, self.tri_plain,
                          self.tri_crf, self.count, seconds)  # fmt: skip


def trimap_band(trimap: bool | str | None) -> str | None:
    """The band rule of a ``trimap`` option: False/None: none; True: "void"; or a rule of
    :data:`deeplab.metrics.BANDS`."""
    if trimap is None or trimap is False:
        return None
    if trimap is True:
        return "void"
    if trimap not in BANDS:
        raise ValueError(f"trimap band {trimap!r}: expected one of {BANDS}")
    return str(trimap)


def _run(
    dataset: SegmentationDataset,
    logits_of: Callable[[int, Sample], np.ndarray],
    num_classes: int,
    crf: CRFParams | None,
    workers: int,
    trimap: bool | str,
    progress: ProgressFn | None,
    ctx: DistContext | None,
    limit: int | None,
    store: ScoreStore | None = None,
) -> EvalResult:
    start = time.perf_counter()
    if len(dataset.class_names) != num_classes:
        raise ValueError(
            f"the scores have {num_classes} classes, the dataset {len(dataset.class_names)}"
        )
    n = len(dataset) if limit is None else min(limit, len(dataset))
    indices = shard(n, ctx.rank, ctx.world_size) if ctx is not None else range(n)
    band = trimap_band(trimap)
    acc = _Accumulator(dataset.class_names, crf is not None, band)
    widths = DEFAULT_WIDTHS if band else None
    crf_dict = None if crf is None else crf.to_dict()
    scorer: WorkerPool[tuple[Any, ...], dict[str, np.ndarray]] = WorkerPool(workers, _score_task)
    in_flight: deque[str] = deque()  # names of the submitted images, in submission order

    def take(scores: dict[str, np.ndarray], name: str | None) -> None:
        if store is not None and name is not None:
            store.save(name, scores)
        acc.add(scores)
        if progress is not None:
            progress(acc.count)

    failed = True
    try:
        for i in indices:
            name = dataset.names[i]
            kept = store.load(name) if store is not None else None
            if kept is not None:
                take(kept, None)
                continue
            sample = dataset[i]
            logits = logits_of(i, sample)
            task = (sample.image, sample.label, logits, num_classes, crf_dict, widths,
                    band or "void")  # fmt: skip
            in_flight.append(name)
            for scores in scorer.submit(task):
                take(scores, in_flight.popleft())
        for scores in scorer.drain():
            take(scores, in_flight.popleft())
        failed = False
    finally:
        scorer.close(terminate=failed)
    acc.reduce(ctx)
    return acc.result(crf, time.perf_counter() - start)


def evaluate(
    model: nn.Module,
    dataset: SegmentationDataset,
    *,
    device: str | torch.device = "cpu",
    crf: CRFParams | None = None,
    workers: int = 0,
    save_logits_dir: str | os.PathLike[str] | None = None,
    logits_dtype: str = "float16",
    trimap: bool | str = False,
    pad_to: int | tuple[int, int] | None = None,
    progress: ProgressFn | None = None,
    ctx: DistContext | None = None,
    limit: int | None = None,
    store: ScoreStore | None = None,
) -> EvalResult:
    """Score ``model`` on ``dataset`` without and (``crf`` given) with the CRF.

    Args:
        model: a DeepLab network (stride-8 logits); run in eval mode, one image at a time.
        crf: CRF parameters, or None to score the network alone.
        workers: CRF worker processes (0: in this process).
        save_logits_dir: also save each image's stride-8 scores there (module docstring).
        trimap: also accumulate trimap bands, widths 1..40: True or "void" as in paper
            Fig. 5 (around void pixels), "boundary" around the label's class changes
            (:mod:`deeplab.metrics.trimap`).
        pad_to: padded input size (513 reproduces the released test; None: next 8k + 1).
        ctx: a :class:`deeplab.distributed.DistContext` to shard over processes.
        limit: score only the first ``limit`` images.
        store: keep each image's counts there and reuse those it has (resuming).
    """
    predictor = Predictor(model, device=device, pad_to=pad_to)
    num_classes = int(getattr(model, "num_classes", len(dataset.class_names)))
    if save_logits_dir is not None:
        folder = Path(save_logits_dir)
        folder.mkdir(parents=True, exist_ok=True)
        if ctx is None or ctx.is_main:
            meta = {"class_names": list(dataset.class_names), "num_classes": num_classes,
                    "pad_to": pad_to, "dtype": logits_dtype,
                    "model": getattr(getattr(model, "variant", None), "name", None)}  # fmt: skip
            write_meta(folder, meta)

    def logits_of(i: int, sample: Sample) -> np.ndarray:
        scores = predictor.scores(sample.image)
        if save_logits_dir is not None:
            padded = padded_size(sample.size[0], sample.size[1], pad_to)
            save_logits(save_logits_dir, sample.name, scores, sample.size, padded, logits_dtype)
        return scores

    return _run(dataset, logits_of, num_classes, crf, workers, trimap, progress, ctx, limit,
                store)  # fmt: skip


def evaluate_saved(
    folder: str | os.PathLike[str],
    dataset: SegmentationDataset,
    crf_params: CRFParams | None = None,
    workers: int = 0,
    *,
    trimap: bool | str = False,
    progress: ProgressFn | None = None,
    ctx: DistContext | None = None,
    limit: int | None = None,
    store: ScoreStore | None = None,
) -> EvalResult:
    """As :func:`evaluate`, from scores saved by it (``save_logits_dir``): no network.

    Every image of ``dataset`` (up to ``limit``) needs its ``<name>.npz`` in ``folder``.
    """
    base = Path(folder)
    if not base.is_dir():
        raise FileNotFoundError(f"saved-logits folder not found: {base}")
    num_classes = saved_num_classes(base)

    def logits_of(i: int, sample: Sample) -> np.ndarray:
        saved = next(iter_saved_logits(base, [sample.name]))
        if saved.size != sample.size:
            raise ValueError(
                f"{sample.name}: saved scores are for a {saved.size} image, the dataset's is "
                f"{sample.size}"
            )
        return saved.logits

    if num_classes is None:
        first = next(iter_saved_logits(base, [dataset.names[0]]))
        num_classes = first.logits.shape[0]
    return _run(dataset, logits_of, num_classes, crf_params, workers, trimap, progress, ctx,
                limit, store)  # fmt: skip
