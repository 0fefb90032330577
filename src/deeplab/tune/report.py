"""The report files of a CRF parameter search: ranking.json, ranking.md (per-class IoU in
the layout of the paper's Table 3, section 5), best_crf.json and heatmap.png."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from deeplab.crf import CRFParams
from deeplab.data.classes import VOC_CLASSES, VOC_SHORT_NAMES
from deeplab.io_utils import atomic_write_text
from deeplab.metrics import ConfusionMatrix, markdown_table
from deeplab.tune.heatmap import plot_heatmap
from deeplab.tune.result import TuneResult
from deeplab.tune.search_log import Entry
from deeplab.tune.space import AXES, NO_CRF

__all__ = ["report_dict", "report_markdown", "write_report"]


def _fmt(value: float) -> str:
    return f"{value:g}"


def _pct(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{100 * value:.2f}"


def _describe(params: CRFParams | None) -> str:
    if params is None:
        return "no CRF"
    return ", ".join(f"{a}={_fmt(getattr(params, a))}" for a in AXES)


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
