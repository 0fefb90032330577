"""The scoring engine of ``deeplab tune-crf``: many CRF parameter sets on one image,
sharing the work they have in common (the search of paper section 5).

Scoring one parameter set on one image upsamples the stride-8 scores, builds the unary,
the spatial lattice (N points, d = 2) and the bilateral lattice (d = 5) with their
normalisations, then runs mean field. Only the last step depends on the weights w1, w2 and
the iteration count, so here one task is one image and a group of parameter sets that share
a bilateral lattice (the same theta_alpha, theta_beta and normalisation): the scores and
unary are prepared once per task, each lattice is built once and every set of the group
reuses it (:meth:`deeplab.crf.DenseCRF.add_term`). Each set's mean-field inference is the
very computation ``dense_crf`` runs, so its confusion matrix is the one
:func:`~deeplab.evaluate.score_image` gives (``tests/tune/test_engine.py``).

A worker of the search (:class:`deeplab.workers.WorkerPool`) holds every search image,
its label and its saved scores (:class:`SearchImages`), loaded once when it starts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deeplab.crf import CRFParams, DenseCRF, PermutohedralLattice
from deeplab.crf.dense import add_spatial_kernel, bilateral_features, check_memory
from deeplab.crf.meanfield import PairwiseTerm
from deeplab.crf.unary import unary_from_logits
from deeplab.crf.validation import check_image, check_label_maps
from deeplab.data.sample import SegmentationDataset
from deeplab.metrics import ConfusionMatrix
from deeplab.predict import full_resolution, refine
from deeplab.saved_scores import load_saved_logits, saved_path

__all__ = [
    "SearchImages",
    "Setting",
    "Task",
    "TaskResult",
    "group_tasks",
    "load_search_images",
    "score_each",
    "score_shared",
    "score_task",
]

log = logging.getLogger(__name__)

Setting = tuple[str, dict[str, Any] | None]
"""(key, ``CRFParams.to_dict()``), or (key, None) for the network alone (no CRF)."""

Task = tuple[int, tuple[Setting, ...]]
"""(image index, the parameter sets to score on it)."""

TaskResult = list[tuple[str, int, np.ndarray]]
"""(key, image index, (K, K) confusion counts) of every setting of a task."""


def _share_key(params: CRFParams | None) -> tuple[Any, ...]:
    """Parameter sets with equal keys share their bilateral lattice and normalisation."""
    if params is None:
        return ("none",)
    return (params.theta_alpha, params.theta_beta, params.normalization)


def group_tasks(todo: Mapping[str, CRFParams | None], num_images: int) -> list[Task]:
    """One task per (group of sets sharing a bilateral lattice, image), group-major: every
    image of a group comes before the next group, so groups, and with them the search log's
    lines, finish one after the other while the search runs."""
    groups: dict[tuple[Any, ...], list[Setting]] = {}
    for key, params in todo.items():
        setting = (key, None if params is None else params.to_dict())
        groups.setdefault(_share_key(params), []).append(setting)
    return [(i, tuple(group)) for group in groups.values() for i in range(num_images)]


def _confusion(pred: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
    return ConfusionMatrix(num_classes).update(pred, label).matrix


def score_each(
    image: np.ndarray,
    label: np.ndarray,
    logits: np.ndarray,
    num_classes: int,
    settings: Sequence[Setting],
) -> list[tuple[str, np.ndarray]]:
    """(key, (K, K) confusion counts) per setting, each scored on its own as
    :func:`~deeplab.evaluate.score_image` scores it: the reference that :func:`score_shared`
    matches (and the engine before it; ``benchmarks/tune_crf.py --compare-engines`` times
    both)."""
    h, w = label.shape
    full = full_resolution(np.asarray(logits, dtype=np.float32), (h, w)).numpy()
    out = []
    for key, params in settings:
        crf = None if params is None else CRFParams.from_dict(params)
        out.append((key, _confusion(refine(image, full, crf), label, num_classes)))
    return out


class _SharedKernels:
    """One image's unary CRF and the kernels built for it so far, keyed by what they depend
    on; :meth:`crf_for` loads a parameter set's kernels into the CRF, building only those
    not seen yet."""

    def __init__(self, image: np.ndarray, full_scores: np.ndarray) -> None:
        self.image = check_image(image)
        h, w = self.image.shape[:2]
        num_labels = full_scores.shape[0]
        check_memory(h, w, num_labels)
        unary = check_label_maps(unary_from_logits(full_scores), "unary", (h, w), finite=False)
        self.crf = DenseCRF(unary.reshape(num_labels, h * w))
        self.bilateral: dict[tuple[float, float, str], PairwiseTerm] = {}

    def crf_for(self, p: CRFParams) -> DenseCRF:
        """The CRF with ``p``'s kernels, added as :func:`deeplab.crf.dense.add_image_kernels`
        adds them: spatial first, kernels of weight 0 left out."""
        h, w = self.image.shape[:2]
        self.crf.clear_kernels()
        norm = p.normalization
        if p.w2 > 0:
            add_spatial_kernel(self.crf, h, w, p.theta_gamma, p.w2, norm)
        if p.w1 > 0:
            key = (p.theta_alpha, p.theta_beta, norm)
            term = self.bilateral.get(key)
            if term is None:
                lattice = PermutohedralLattice(
                    bilateral_features(self.image, p.theta_alpha, p.theta_beta)
                )
                self.bilateral[key] = self.crf.add_kernel(lattice, p.w1, norm)
            else:
                self.crf.add_term(term, p.w1)
        return self.crf


def score_shared(
    image: np.ndarray,
    label: np.ndarray,
    logits: np.ndarray,
    num_classes: int,
    settings: Sequence[Setting],
) -> list[tuple[str, np.ndarray]]:
    """As :func:`score_each`, computing what the settings share once.

    image: (H, W, 3) uint8; label: (H, W) ground truth; logits: (L, h, w) stride-8 scores.
    Returns (key, (K, K) int64 confusion counts, rows = ground truth) per setting, in order.
    """
    h, w = label.shape
    full = full_resolution(np.asarray(logits, dtype=np.float32), (h, w))
    scores = np.ascontiguousarray(full.numpy(), dtype=np.float32)
    shared: _SharedKernels | None = None
    out = []
    for key, params in settings:
        if params is None:
            pred = refine(image, scores, None)
        else:
            p = CRFParams.from_dict(params)
            if shared is None:
                shared = _SharedKernels(image, scores)
            q = shared.crf_for(p).inference(p.iterations)
            pred = np.asarray(q.argmax(0), dtype=np.uint8).reshape(h, w)
        out.append((key, _confusion(pred, label, num_classes)))
    return out


@dataclass
class SearchImages:
    """Every search image with its label and saved scores: what one worker holds."""

    images: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    logits: list[np.ndarray] = field(default_factory=list)
    num_classes: int = 0


def load_search_images(
    dataset: SegmentationDataset,
    folder: str | os.PathLike[str],
    picks: Sequence[tuple[int, str]],
    num_classes: int,
) -> SearchImages:
    """The samples ``picks`` ((index, name) pairs) of ``dataset`` with their scores saved in
    ``folder`` (:mod:`deeplab.saved_scores`); a size or class count that does not match is
    a ValueError."""
    out = SearchImages(num_classes=num_classes)
    for index, name in picks:
        sample = dataset[index]
        saved = load_saved_logits(saved_path(folder, name))
        if saved.size != sample.size:
            raise ValueError(
                f"{name}: saved scores are for a {saved.size} image, the dataset's is {sample.size}"
            )
        if saved.logits.shape[0] != num_classes:
            raise ValueError(f"{name}: {saved.logits.shape[0]} score maps, expected {num_classes}")
        out.images.append(sample.image)
        out.labels.append(sample.label)
        out.logits.append(saved.logits)
    return out


def score_task(held: SearchImages, task: Task) -> TaskResult:
    """Score one task on the images a worker holds (:func:`score_shared`)."""
    i, settings = task
    scores = score_shared(
        held.images[i], held.labels[i], held.logits[i], held.num_classes, settings
    )
    return [(key, i, matrix) for key, matrix in scores]
