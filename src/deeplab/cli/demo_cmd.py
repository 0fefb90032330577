"""`deeplab demo`: the main job on the embedded default data, with an HTML report.

::

    deeplab demo --out demo_out                            # CamVid street photos (shipped)
    deeplab demo --camvid-root CamVid --out demo_out       # all 101 CamVid val photos
    deeplab demo --data synthetic --out demo_out           # synthetic scenes
    deeplab demo --data synthetic --train --out demo_out   # train the tiny net here (~10 min)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from deeplab.cli.crf_cmd import PARAM_OPTIONS, add_param_options
from deeplab.cli.data_args import add_threads_option, apply_threads
from deeplab.cli.feedback import close_bar, prepare_crf, progress_bar, say
from deeplab.crf import CRFParams


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo",
        help="the whole pipeline on real street photos (or generated scenes), HTML report",
        description="Score deeplab-largefov-tiny (the checkpoint shipped for --data) on "
        "images it never trained on, without and with the dense CRF, and write report.html "
        "(mean IoU, trimap curves, images, CRF belief maps), results.json and results.md to "
        "--out. --data camvid (default): the CamVid model on the CamVid val photos shipped "
        "in the package, or on all of --camvid-root's val split; --data synthetic: the "
        "synthetic-scene model on held-out scenes (--train trains it here first). --crf "
        "auto (default): the CRF parameters tuned for the shipped checkpoint, else the "
        "deeplab-largefov preset.",
    )
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder")
    p.add_argument(
        "--data", choices=("camvid", "synthetic"), default="camvid",
        help="camvid: street photos (default); synthetic: generated scenes",
    )  # fmt: skip
    p.add_argument(
        "--camvid-root", type=Path, default=None,
        help="a CamVid folder (val/, valannot/, val.txt): score its whole val split instead "
        "of the photos shipped in the package",
    )  # fmt: skip
    p.add_argument("--limit", type=int, default=None, help="camvid: score at most N photos")
    p.add_argument("--scenes", type=int, default=100, help="synthetic: held-out scenes")
    p.add_argument("--seed", type=int, default=1, help="held-out scene family (training: 0)")
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="scene size (default: what the shipped checkpoint was trained on, 128 128)",
    )
    p.add_argument("--panels", type=int, default=4, help="scenes shown in the report")
    p.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="a deeplab-largefov-tiny checkpoint (default: the one shipped for --data)",
    )
    p.add_argument(
        "--train",
        action="store_true",
        help="synthetic: train the network here first (the project's training library)",
    )
    p.add_argument(
        "--train-iterations",
        type=int,
        default=None,
        help="SGD iterations of --train (default: the shipped checkpoint's, 2200, about 10 "
        "minutes on 2 cores; 1000 is not enough to get past the background)",
    )
    p.add_argument("--workers", type=int, default=0, help="CRF worker processes (0: inline)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_threads_option(p)
    add_param_options(p, default="auto")
    p.set_defaults(func=run)
    return p


def _crf(args: argparse.Namespace) -> CRFParams | None:
    """--crf and the per-field options; None leaves the choice to the demo (auto)."""
    changes = {dest: getattr(args, dest) for dest, _, _ in PARAM_OPTIONS.values()}
    if args.crf == "auto":
        if all(v is None for v in changes.values()):
            return None
        from deeplab.models import shipped_crf_params

        base = shipped_crf_params(args.data) or CRFParams.preset("deeplab-largefov")
    else:
        base = CRFParams.resolve(args.crf)
    return base.replace(**changes)


def run(args: argparse.Namespace) -> int:
    from deeplab.demo import DemoOptions, run_demo
    from deeplab.models import shipped_crf_params

    start = time.perf_counter()
    apply_threads(args)
    if args.scenes < 1:
        raise ValueError(f"--scenes {args.scenes}: must be >= 1")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit {args.limit}: must be >= 1")
    if args.camvid_root is not None and not args.camvid_root.is_dir():
        raise FileNotFoundError(f"--camvid-root {args.camvid_root}: no such folder")
    if args.camvid_root is not None and args.data != "camvid":
        raise ValueError("--camvid-root goes with --data camvid")
    if args.train and args.data != "synthetic":
        raise ValueError(
            "--train retrains the synthetic-scene model: add --data synthetic (the CamVid "
            "model's recipe is configs/deeplab-largefov-tiny-camvid.json, README 'CamVid')"
        )
    if args.panels < 0:
        raise ValueError(f"--panels {args.panels}: must be >= 0")
    if args.weights is not None and not args.weights.is_file():
        raise FileNotFoundError(f"--weights {args.weights}: no such file")
    options = DemoOptions(
        data=args.data,
        camvid_root=args.camvid_root,
        limit=args.limit,
        scenes=args.scenes,
        seed=args.seed,
        size=None if args.size is None else (args.size[0], args.size[1]),
        panels=args.panels,
        weights=args.weights,
        train=args.train,
        train_iterations=args.train_iterations,
        crf=_crf(args),
        workers=args.workers,
    )
    what = (
        "train deeplab-largefov-tiny here, then score it"
        if args.train
        else (f"score {args.weights or 'the shipped deeplab-largefov-tiny checkpoint'}")
    )
    if args.data == "camvid":
        where = (
            f"the CamVid val photos of {args.camvid_root}"
            if args.camvid_root
            else "CamVid street photos shipped in the package"
        )
    else:
        where = f"{args.scenes} held-out synthetic scenes"
    say(f"deeplab demo: {what} on {where}, without and with the CRF -> "
        f"{args.out}/report.html")  # fmt: skip
    if args.data == "camvid" and args.weights is None:
        from deeplab.models import SHIPPED_NOTE

        say(f"note: {SHIPPED_NOTE}")
    prepare_crf(
        options.crf or shipped_crf_params(args.data) or CRFParams.preset("deeplab-largefov")
    )
    bars: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if args.no_progress:
            return
        if stage not in bars:
            for bar in bars.values():
                bar.close()
            unit = "it" if stage == "train" else "img"
            bars[stage] = progress_bar(total=total, desc=stage, unit=unit)
        bars[stage].update(done - bars[stage].n)

    ok = False
    try:
        result = run_demo(args.out, options, progress)
        ok = True
    finally:
        for bar in bars.values():
            close_bar(bar, failed=not ok)
    ev = result.evaluation
    crf = ev.crf
    if crf is None:
        raise RuntimeError("the demo's evaluation has no CRF scores")
    print(f"weights: {result.weights}")
    print(f"CRF: {result.crf.to_dict()}")
    print(
        f"{ev.num_images} {'val photos' if args.data == 'camvid' else 'held-out scenes'}: "
        f"mean IoU DCNN {100 * ev.mean_iou:.2f}%, "
        f"DCNN+CRF {100 * crf.mean_iou():.2f}%; pixel accuracy "
        f"{100 * ev.plain.pixel_accuracy():.2f}% / {100 * crf.pixel_accuracy():.2f}%"
    )
    if ev.trimap_plain is not None and ev.trimap_crf is not None:
        tp, tc = ev.trimap_plain.results(), ev.trimap_crf.results()
        for width in (4, 10):
            i = list(tp["widths"]).index(width)
            a, b = tp["mean_iou"][i], tc["mean_iou"][i]
            if a is not None and b is not None:
                print(
                    f"trimap band {width:2d} px: mean IoU DCNN {100 * a:.2f}%, "
                    f"DCNN+CRF {100 * b:.2f}%"
                )
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items() if k != "total")
    print(f"time: {stages}; total {time.perf_counter() - start:.1f} s")
    print(f"report: {result.report} ({len(result.files)} files in {args.out}/)")
    return 0
