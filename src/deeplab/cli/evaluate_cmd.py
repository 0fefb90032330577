"""`deeplab evaluate`: mean IoU of a network on a split, without and with the CRF.

::

    deeplab evaluate --weights runs/tiny/model.safetensors --data synthetic --out eval/tiny
    deeplab evaluate --weights W --data voc --voc-root VOC2012 --split val --pad-to 513 \\
        --crf deeplab-largefov --workers 8 --save-logits logits/val --trimap --out eval/val
    deeplab evaluate --from-logits logits/val --data voc --voc-root VOC2012 --split val \\
        --crf tuned.json --workers 8 --out eval/tuned
    torchrun --nproc_per_node 4 -m deeplab evaluate --weights W ... --out eval/val

Each image's counts go to ``--out/partial/`` as they are made, so an interrupted evaluation
(killed, a full disk) continues with ``--resume``; the folder is removed at the end.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deeplab.cli.crf_cmd import add_param_options, params_from_args
from deeplab.cli.data_args import (
    add_data_options,
    add_threads_option,
    apply_threads,
    data_spec_from_args,
    record_saved_data,
    saved_data,
)
from deeplab.crf import CRFParams

if TYPE_CHECKING:
    from deeplab.data.sample import SegmentationDataset

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "evaluate",
        help="mean IoU (Table 3 layout) without and with the CRF; trimap curves",
        description="Score a network on a split: confusion matrix (255 ignored), mean and "
        "per-class IoU, pixel accuracy, without and with the dense CRF in one pass (the CRF "
        "in --workers processes). Writes results.json, results.md and confusion PNGs to "
        "--out. --save-logits keeps each image's stride-8 scores; --from-logits re-scores "
        "them (e.g. other CRF parameters) without the network.",
    )
    src = p.add_argument_group("network or saved scores")
    src.add_argument("--model", help="variant name (default: the one --weights records)")
    src.add_argument("--weights", type=Path, help="checkpoint (e.g. RUN/model.safetensors)")
    src.add_argument("--from-logits", type=Path, help="score saved stride-8 logits instead")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--workers", type=int, default=0, help="CRF worker processes (0: inline)")
    p.add_argument("--save-logits", type=Path, help="save each image's stride-8 scores here")
    p.add_argument("--logits-dtype", choices=("float16", "float32"), default="float16")
    p.add_argument(
        "--trimap",
        nargs="?",
        const="auto",
        default=None,
        choices=("auto", "void", "boundary"),
        help="boundary trimap curves (paper Fig. 5): void = bands around void pixels (VOC), "
        "boundary = around the label's class changes (CamVid); auto (no value): boundary for "
        "--data camvid, else void",
    )
    p.add_argument("--pad-to", type=int, default=None,
                   help="pad inputs to this square size (513: the released test; "
                   "default: the next 8k+1)")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--method", default=None, help="row name in the table (default: the model)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted evaluation with the same options: reuse "
                   "the images already scored (kept in --out/partial)")  # fmt: skip
    add_threads_option(p)
    # --crf PRESET|FILE|none; default: the model's own preset (Variant.crf_preset).
    add_param_options(p, default=None)
    add_data_options(
        p,
        split_help="VOC list to score (default val)",
        seed_help="synthetic scene family (default 1: held out from training's 0)",
    )
    p.set_defaults(func=run)
    return p


def _crf_params(args: argparse.Namespace, preset: str | None) -> CRFParams | None:
    """--crf (or the model's preset) with the per-field options applied; "none": no CRF."""
    spec = args.crf if args.crf is not None else preset
    if spec is None or str(spec).lower() == "none":
        return None
    args.crf = spec
    return params_from_args(args)


def _store_key(args: argparse.Namespace, crf: CRFParams | None, info: dict[str, Any]) -> dict:
    """What makes the per-image counts of this evaluation (a resume must not mix others)."""
    key: dict[str, Any] = {**info, "crf": None if crf is None else crf.to_dict(),
                           "trimap": args.trimap, "pad_to": args.pad_to}  # fmt: skip
    key.pop("world_size", None)  # counts are per image: any number of processes may resume
    if args.weights is not None:
        stat = Path(args.weights).stat()
        key.update(weights_size=stat.st_size, weights_mtime_ns=stat.st_mtime_ns)
    if args.save_logits is not None:
        key.update(save_logits=os.fspath(args.save_logits), logits_dtype=args.logits_dtype)
    return key


def run(args: argparse.Namespace) -> int:
    from deeplab.cli.feedback import close_bar, prepare_crf, progress_bar
    from deeplab.data import build_dataset
    from deeplab.distributed import setup
    from deeplab.evaluate import ScoreStore, evaluate, evaluate_saved
    from deeplab.models import build_model, get_variant, load_model
    from deeplab.saved_scores import read_meta

    apply_threads(args)
    if (args.weights is None) == (args.from_logits is None):
        raise ValueError("give exactly one of --weights and --from-logits")
    if args.weights is not None and not args.weights.is_file():
        raise FileNotFoundError(f"--weights {args.weights}: no such file")
    if args.from_logits is not None and not args.from_logits.is_dir():
        raise FileNotFoundError(f"--from-logits {args.from_logits}: no such folder")
    # Re-scoring saved scores: the data they were saved for, unless options say otherwise.
    saved = saved_data(args.from_logits) if args.from_logits is not None else None
    data = data_spec_from_args(args, saved, split="val", synthetic_seed=1, synthetic_count=100)
    if args.trimap == "auto":
        # CamVid's void is not a thin band along the outlines: measure from the class changes.
        args.trimap = "boundary" if data.kind == "camvid" else "void"
    dataset: SegmentationDataset = build_dataset(data)
    ctx = setup(args.device if args.weights is not None else "cpu")
    bar = None
    ok = False
    try:

        def progress(done: int) -> None:
            nonlocal bar
            if not ctx.is_main or args.no_progress:
                return
            if bar is None:  # drawn once scoring has started, never before an error
                total = len(range(ctx.rank, len(dataset), ctx.world_size))
                bar = progress_bar(total=total, unit="img", desc="evaluate")
            bar.update(done - bar.n)

        info: dict[str, Any] = {"data": data.to_dict(), "world_size": ctx.world_size}

        def open_store(crf: CRFParams | None) -> ScoreStore:
            folder, key = args.out / "partial", _store_key(args, crf, info)
            # Rank 0 decides whether the folder may be used; the others then join it.
            store = ScoreStore(folder, key, args.resume) if ctx.is_main else None
            ctx.barrier()
            return store or ScoreStore(folder, key, resume=True)

        if args.weights is not None:
            if args.model:
                model = build_model(args.model, num_classes=dataset.num_classes,
                                    weights=args.weights)  # fmt: skip
            else:
                model = load_model(args.weights)
            preset = model.variant.crf_preset
            crf = _crf_params(args, preset)
            prepare_crf(crf, quiet=not ctx.is_main)
            info.update(model=model.variant.name, weights=os.fspath(args.weights))
            method = args.method or model.variant.paper_name
            if method.startswith("("):
                method = model.variant.name
            store = open_store(crf)
            result = evaluate(
                model, dataset, device=ctx.device, crf=crf, workers=args.workers,
                save_logits_dir=args.save_logits, logits_dtype=args.logits_dtype,
                trimap=args.trimap, pad_to=args.pad_to, progress=progress, ctx=ctx,
                store=store,
            )  # fmt: skip
            if args.save_logits is not None and ctx.is_main:
                record_saved_data(args.save_logits, data)
        else:
            name = args.model or read_meta(args.from_logits).get("model")
            preset = get_variant(name).crf_preset if name else None
            crf = _crf_params(args, preset)
            prepare_crf(crf, quiet=not ctx.is_main)
            info.update(model=name, from_logits=os.fspath(args.from_logits))
            method = args.method or (name or "DeepLab")
            store = open_store(crf)
            result = evaluate_saved(args.from_logits, dataset, crf, args.workers,
                                    trimap=args.trimap, progress=progress, ctx=ctx,
                                    store=store)  # fmt: skip
        close_bar(bar, failed=False)
        ok = True
        if ctx.is_main:
            result.write(args.out, method, **info)
            store.remove()
            print(result.markdown(method))
            print(f"{result.num_images} images in {result.seconds:.1f} s -> {args.out}")
    finally:
        if not ok:
            close_bar(bar, failed=True)
        ctx.close()
    return 0
