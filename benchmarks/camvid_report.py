"""Figures of a `benchmarks/camvid.sh` run: README tables, the trimap plot, shipped assets.

    python benchmarks/camvid_report.py runs/camvid                 # print the tables
    python benchmarks/camvid_report.py runs/camvid --ship          # also update the assets

Reads the run's val evaluations (DCNN, DCNN + the paper's preset CRF, DCNN + the CRF tuned
on training images), its step times and its CRF search, and prints markdown. The trimap
curves of all three go to ``docs/img/camvid_trimap.png``. ``--ship`` copies the checkpoint
and the tuned CRF into ``src/deeplab/assets/`` and records the figures the tests reproduce
(``camvid-results.json``: the 101 val photos, and the six shipped ones scored here).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

ASSETS = ROOT / "src" / "deeplab" / "assets"
WIDTHS = (1, 2, 4, 10, 20, 40)


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SystemExit(f"missing {path}: run benchmarks/camvid.sh first")
    return json.loads(path.read_text())


def _row(name: str, scores: dict[str, Any]) -> str:
    ious = [100 * scores["per_class_iou"][c] for c in scores["class_names"]]
    cells = " | ".join(f"{v:.1f}" for v in ious)
    return (
        f"| {name} | {cells} | **{100 * scores['mean_iou']:.2f}** | "
        f"{100 * scores['pixel_accuracy']:.2f} |"
    )


def _times(run: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    path = run / "times.txt"
    if path.is_file():
        for line in path.read_text().splitlines():
            name, seconds = line.split()
            out[name] = float(seconds)
    return out


def _shipped_photos(weights: Path, crf_file: Path) -> dict[str, Any]:
    """DCNN and tuned-CRF scores of the six CamVid photos shipped in the package."""
    import torch

    from deeplab.crf import CRFParams
    from deeplab.data import CamVid
    from deeplab.evaluate import evaluate
    from deeplab.models import load_model, shipped_camvid_root

    torch.set_num_threads(1)
    root = shipped_camvid_root()
    assert root is not None
    result = evaluate(load_model(weights).eval(), CamVid(root, "val"), crf=CRFParams.load(crf_file))
    assert result.crf is not None
    return {
        "images": result.num_images,
        "dcnn_mean_iou": round(100 * result.mean_iou, 2),
        "tuned_crf_mean_iou": round(100 * result.crf.mean_iou(), 2),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run", type=Path, help="the run folder of benchmarks/camvid.sh")
    p.add_argument("--ship", action="store_true", help="copy weights and CRF into the assets")
    args = p.parse_args()
    run: Path = args.run
    preset = _load(run / "eval-val-preset" / "results.json")
    tuned = _load(run / "eval-val-tuned" / "results.json")
    ranking = _load(run / "tune" / "ranking.json")
    times = _times(run)
    names = preset["without_crf"]["class_names"]

    print("| CamVid val, 101 photos | " + " | ".join(names) + " | mean IoU | pixel acc. |")
    print("|---" * (len(names) + 3) + "|")
    print(_row("DCNN", preset["without_crf"]))
    print(_row("DCNN + CRF, paper preset `deeplab-largefov`", preset["with_crf"]))
    print(_row("DCNN + CRF, tuned on train", tuned["with_crf"]))
    print()
    crf = tuned["crf_params"]
    fields = ("w1", "theta_alpha", "theta_beta", "w2", "theta_gamma")
    print("tuned CRF: " + ", ".join(f"{k} {crf[k]:g}" for k in fields))
    on_train = ranking["no_crf"]["mean_iou"], ranking["reference"]["mean_iou"], ranking["mean_iou"]
    print(
        f"on the {ranking['num_images']} training photos searched: no CRF "
        f"{100 * on_train[0]:.2f}%, preset {100 * on_train[1]:.2f}%, tuned {100 * on_train[2]:.2f}%"
        f" ({sum(ranking['round_sizes'])} settings)"
    )
    print()
    curves = {
        "DCNN": preset["trimap"]["without_crf"],
        "DCNN + preset CRF": preset["trimap"]["with_crf"],
        "DCNN + tuned CRF": tuned["trimap"]["with_crf"],
    }
    print("| trimap band (px from a class change) | " + " | ".join(map(str, WIDTHS)) + " |")
    print("|---" * (len(WIDTHS) + 1) + "|")
    for name, c in curves.items():
        at = [c["mean_iou"][c["widths"].index(w)] for w in WIDTHS]
        print(f"| {name}, mean IoU | " + " | ".join(f"{100 * v:.1f}" for v in at) + " |")
    from deeplab.metrics.plots import plot_trimap_curves

    plot = plot_trimap_curves(
        curves,
        ROOT / "docs" / "img" / "camvid_trimap.png",
        title="CamVid val: band = pixels within w of a class change",
    )
    print(f"\ntrimap plot: {plot.relative_to(ROOT)}")
    print("times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))

    weights = run / "train" / "model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    print(f"weights: {weights} sha256 {digest}")
    if args.ship:
        shutil.copyfile(weights, ASSETS / "deeplab-largefov-tiny-camvid.safetensors")
        shutil.copyfile(run / "tune" / "best_crf.json", ASSETS / "crf-camvid.json")
        record = {
            "weights_sha256": digest,
            "command": "bash benchmarks/camvid.sh ../shared/data/camvid runs/camvid",
            "seconds": times,
            "tuned_crf": crf,
            "val": {
                "images": preset["num_images"],
                "dcnn_mean_iou": round(100 * preset["without_crf"]["mean_iou"], 2),
                "dcnn_pixel_accuracy": round(100 * preset["without_crf"]["pixel_accuracy"], 2),
                "preset_crf_mean_iou": round(100 * preset["with_crf"]["mean_iou"], 2),
                "tuned_crf_mean_iou": round(100 * tuned["with_crf"]["mean_iou"], 2),
            },
            "shipped_photos": _shipped_photos(weights, run / "tune" / "best_crf.json"),
        }
        out = ASSETS / "camvid-results.json"
        out.write_text(json.dumps(record, indent=1) + "\n")
        print(f"shipped: weights, crf-camvid.json, {out.relative_to(ROOT)}")
        print(json.dumps(record["shipped_photos"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
