"""`deeplab tune-crf`: choose w1, theta_alpha (sxy) and theta_beta (srgb) for your data.

::

    deeplab evaluate --weights W --data voc --voc-root VOC2012 --split val --crf none \\
        --save-logits logits/val --out eval/val
    deeplab tune-crf --logits logits/val --data voc --voc-root VOC2012 --split val \\
        --w1 5:10:1 --theta-alpha 50:100:10 --theta-beta 3:10:1 --rounds 1 --out tune/val
    deeplab evaluate --from-logits logits/test ... --crf tune/val/best_crf.json --trimap
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from deeplab.cli.data_args import add_data_options, data_spec_from_args, saved_data
from deeplab.crf import CRFParams

log = logging.getLogger(__name__)

# option -> (SearchSpace field, default range)
RANGE_OPTIONS = {
    "w1": ("w1", "5:10:1", "bilateral weight (pydensecrf: bilateral compat)"),
    "theta-alpha": ("theta_alpha", "50:100:10", "bilateral position std, px (pydensecrf: sxy)"),
    "theta-beta": ("theta_beta", "3:10:1", "bilateral colour std (pydensecrf: srgb)"),
    "w2": ("w2", "3", "spatial weight (pydensecrf: Gaussian compat)"),
    "theta-gamma": ("theta_gamma", "3", "spatial std, px (pydensecrf: Gaussian sxy)"),
}


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "tune-crf",
        help="coarse-to-fine grid search of the CRF parameters on saved network outputs",
        description="Search w1, theta_alpha (sxy) and theta_beta (srgb) as the paper did: a "
        "coarse grid, then rounds of half steps around the best, scoring mean IoU on the "
        "stride-8 scores saved by `deeplab evaluate --save-logits` (the network does not "
        "run). Ranges are START:STOP:STEP (inclusive), START:STOP (step 1) or one value. "
        "Results are appended to OUT/search.jsonl as they come; running the same command "
        "again resumes. Writes ranking.md, ranking.json, best_crf.json (for --crf) and "
        "heatmap.png to --out.",
    )
    p.add_argument("--logits", type=Path, required=True, help="a --save-logits folder")
    p.add_argument("--out", type=Path, required=True, help="output folder (resumes if present)")
    g = p.add_argument_group("search")
    for opt, (dest, default, text) in RANGE_OPTIONS.items():
        g.add_argument(
            f"--{opt}",
            dest=dest,
            default=default,
            metavar="RANGE",
            help=f"{text} (default {default})",
        )
    g.add_argument("--iterations", type=int, default=10, help="mean-field iterations (10)")
    g.add_argument("--normalization", default="after", help="after | symmetric | before | none")
    g.add_argument(
        "--rounds", type=int, default=1, help="refinement rounds after the coarse grid (default 1)"
    )
    g.add_argument(
        "--window",
        type=float,
        default=1.0,
        help="refinement half-width in the previous round's steps (default 1)",
    )
    g.add_argument(
        "--num-images",
        type=int,
        default=100,
        help="score the first N images with saved scores (default 100)",
    )
    g.add_argument(
        "--spread",
        action="store_true",
        help="take the N images evenly over all saved ones, not the first N (for lists "
        "ordered by video sequence, such as CamVid's)",
    )
    g.add_argument(
        "--reference",
        default=None,
        metavar="PRESET|FILE|none",
        help="also score these parameters on the same images (default: the model's preset "
        "from the logits folder's meta.json, else deeplab-largefov)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=_cores(),
        help=f"worker processes, one core each (default: all, {_cores()})",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_data_options(
        p,
        split_help="VOC list the scores were saved for (default val)",
        seed_help="synthetic scene family (default 1, as `deeplab evaluate`)",
    )
    p.set_defaults(func=run)
    return p


def _reference(args: argparse.Namespace) -> tuple[CRFParams | None, str | None]:
    """--reference, or the preset of the model named in the logits folder's meta.json."""
    spec = args.reference
    if spec is None:
        from deeplab.models import get_variant
        from deeplab.saved_scores import read_meta

        name = read_meta(args.logits).get("model")
        preset = get_variant(name).crf_preset if name else None
        spec = preset or "deeplab-largefov"
    if str(spec).lower() == "none":
        return None, None
    return CRFParams.resolve(spec), str(spec)


def run(args: argparse.Namespace) -> int:
    from deeplab.cli.feedback import close_bar, prepare_crf, progress_bar
    from deeplab.data import build_dataset
    from deeplab.tune import Range, SearchSpace, tune_crf

    space = SearchSpace(
        **{dest: Range.parse(getattr(args, dest)) for dest, _, _ in RANGE_OPTIONS.values()},
        iterations=args.iterations,
        normalization=args.normalization,
    )
    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    if args.rounds < 0:
        raise ValueError(f"--rounds {args.rounds}: must be >= 0")
    if not args.logits.is_dir():
        raise FileNotFoundError(f"--logits {args.logits}: no such folder")
    reference, reference_name = _reference(args)
    # The data the scores were saved for (recorded by `evaluate --save-logits`), unless
    # options say otherwise.
    saved = saved_data(args.logits)
    data = data_spec_from_args(args, saved, split="val", synthetic_seed=1, synthetic_count=100)
    dataset = build_dataset(data)
    prepare_crf(space.grid()[0])  # compiled once here, not in every worker
    bar = None

    def progress(done: int, planned: int) -> None:
        nonlocal bar
        if args.no_progress:
            return
        if bar is None:  # drawn once the search has started, never before an error
            bar = progress_bar(total=planned, unit="crf", desc="tune-crf")
        bar.total = planned
        bar.update(done - bar.n)

    ok = False
    try:
        result, paths = tune_crf(
            args.logits,
            dataset,
            args.out,
            space,
            rounds=args.rounds,
            window=args.window,
            num_images=args.num_images,
            spread=args.spread,
            reference=reference,
            reference_name=reference_name,
            workers=args.workers,
            progress=progress,
        )
        ok = True
    finally:
        close_bar(bar, failed=not ok)
    best = result.best
    print(
        f"{len(result.ranking)} grid parameter sets on {len(result.images)} images; "
        f"{result.computed} sets (references included) scored now in {result.seconds:.1f} s"
    )
    print(f"no CRF:    mIoU {100 * result.no_crf.mean_iou:.2f}%")
    if result.reference is not None:
        print(f"reference: mIoU {100 * result.reference.mean_iou:.2f}% ({reference_name})")
    p = result.best_params
    print(
        f"best:      mIoU {100 * best.mean_iou:.2f}% with w1={p.w1:g} "
        f"theta_alpha={p.theta_alpha:g} theta_beta={p.theta_beta:g} w2={p.w2:g} "
        f"theta_gamma={p.theta_gamma:g}"
    )
    for note in result.notes():
        print(f"note: {note}")
    print(f"-> {paths['best']} (use with --crf), {paths['markdown']}, {paths['heatmap']}")
    return 0
