"""The resumable record of a CRF parameter search: each parameter set's confusion matrix,
summed over the search images (paper section 5: the parameters are chosen by mean IoU on
a subset of val), and the ``search.jsonl`` log that keeps them across runs."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deeplab.crf import CRFParams
from deeplab.io_utils import append_synced
from deeplab.metrics import ConfusionMatrix
from deeplab.tune.space import AXES, param_key

__all__ = ["SEARCH_LOG", "Entry", "SearchLog", "rank_entries"]

log = logging.getLogger(__name__)

SEARCH_LOG = "search.jsonl"
"""The search log's file name in a search's output folder."""


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
