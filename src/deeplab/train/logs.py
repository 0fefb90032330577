"""The training log (one JSON record per line) and the training-curve figure.

Records are appended and flushed one line at a time, so a killed run leaves at most one
partial last line; :func:`read_log` skips it and :func:`truncate_log` (on resume) drops the
records after the checkpoint being resumed, which the resumed run writes again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from deeplab.io_utils import append_synced, atomic_write_bytes
from deeplab.metrics.plots import save_figure

__all__ = ["append_log", "plot_training_curve", "read_log", "truncate_log"]

log = logging.getLogger(__name__)


def append_log(path: str | os.PathLike[str], record: Mapping[str, Any]) -> None:
    """Append one record as a JSON line (flushed and fsync'ed: the log survives a kill)."""
    append_synced(path, json.dumps(dict(record), separators=(",", ":")) + "\n")


def read_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All complete records; a damaged line (a run killed mid-write) is skipped."""
    p = Path(path)
    if not p.is_file():
        return []
    records = []
    for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s:%d: skipping a damaged log line", p, number)
    return records


def truncate_log(path: str | os.PathLike[str], last_iteration: int) -> int:
    """Keep only records with ``iteration <= last_iteration`` (rewritten atomically);
    returns how many were dropped."""
    if not Path(path).is_file():
        return 0
    records = read_log(path)
    kept = [r for r in records if int(r.get("iteration", 0)) <= last_iteration]
    # Rewritten even when nothing is dropped: that also removes a damaged last line.
    text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in kept)
    atomic_write_bytes(path, text.encode())
    return len(records) - len(kept)


def plot_training_curve(
    records: Iterable[Mapping[str, Any]], path: str | os.PathLike[str], title: str | None = None
) -> Path:
    """PNG of the loss (and its moving average) and the learning rate against the iteration."""
    rows = [r for r in records if "loss" in r and "iteration" in r]
    if not rows:
        raise ValueError("no loss records to plot")
    it = np.array([r["iteration"] for r in rows], dtype=np.float64)
    loss = np.array([r["loss"] for r in rows], dtype=np.float64)
    fig = Figure(figsize=(7.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(it, loss, color="tab:blue", alpha=0.35, linewidth=1, label="loss")
    window = max(1, len(loss) // 20)
    if window > 1:
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        ax.plot(it[window - 1 :], smooth, color="tab:blue", linewidth=2, label="moving average")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss (cross-entropy)")
    ax.grid(True, alpha=0.3)
    if all("lr" in r for r in rows):
        ax2 = ax.twinx()
        ax2.plot(it, [r["lr"] for r in rows], color="tab:red", linewidth=1, label="base lr")
        ax2.set_ylabel("base learning rate", color="tab:red")
        ax2.set_yscale("log")
    ax.legend(loc="upper right")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)
