"""`deeplab segment`: label PNGs, colour overlays and probabilities for image files.

::

    deeplab segment photos/ extra.jpg 'shots/*.png' --out seg/
    deeplab segment --model deeplab-largefov --weights deeplab-largefov-voc12 photo.jpg \\
        --crf deeplab-largefov --save-probs --out seg/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deeplab.cli.crf_cmd import add_param_options, apply_param_options, check_params
from deeplab.cli.data_args import add_threads_option, apply_threads
from deeplab.cli.feedback import close_bar, prepare_crf, progress_bar
from deeplab.cli.network_args import add_network_options, network_from_args, pick_device
from deeplab.crf import CRFParams
from deeplab.models.network import NetworkInfo, resolve_crf


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "segment",
        help="segment image files: label PNGs, overlays, probabilities",
        description="Run a network (and the dense CRF) on images, folders (searched "
        "recursively) or glob patterns. Writes NAME.png (palette label PNG: CamVid colours "
        "for CamVid networks, else VOC's), NAME_overlay.jpg and, with --save-probs, "
        "NAME_probs.npy (L, H, W) to --out. Unreadable or too large images are reported and "
        "skipped; the exit status is then 1. --crf: auto (default: the tuned parameters "
        "shipped for the CamVid or synthetic model, else the model's preset), a preset, a "
        "JSON file, or none. The default network knows street scenes only (CamVid, 11 "
        "classes); photos of anything else still get labels from those classes.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, folder or glob")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    add_network_options(p)
    p.add_argument("--no-overlay", action="store_true", help="do not write colour overlays")
    p.add_argument("--save-probs", action="store_true", help="also write (L, H, W) .npy")
    p.add_argument("--probs-dtype", choices=("float16", "float32"), default="float16")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--resume", action="store_true",
                   help="skip inputs whose outputs are all in --out already (continue an "
                   "interrupted run with the same options)")  # fmt: skip
    add_threads_option(p)
    add_param_options(p, default="auto")
    p.set_defaults(func=run)
    return p


def check_crf_options(args: argparse.Namespace) -> None:
    """--crf and the per-field options checked before any network is loaded (a preset name
    or file that does not exist, a weight out of range): "auto" needs the network's kind
    and is resolved later, but its field values are checked here on a preset."""
    spec = str(args.crf)
    if spec.lower() == "none":
        return
    base = CRFParams.preset("deeplab-largefov") if spec == "auto" else CRFParams.resolve(spec)
    check_params(apply_param_options(base, args), args)


def crf_from_args(args: argparse.Namespace, info: NetworkInfo) -> CRFParams | None:
    """--crf resolved for this network, with the per-field options applied."""
    base = resolve_crf(args.crf, info)
    if base is None:
        return None
    return check_params(apply_param_options(base, args), args)


def run(args: argparse.Namespace) -> int:
    from deeplab.predict import Predictor
    from deeplab.segment import expand_inputs, segment_files

    # Everything that can be wrong with the command line is reported before the network
    # loads: the options, then the inputs.
    apply_threads(args)
    check_crf_options(args)
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out}: exists and is not a folder")
    inputs, problems = expand_inputs(args.inputs)
    if not inputs:
        raise FileNotFoundError(f"nothing to segment: {'; '.join(problems)}")
    for problem in problems:
        print(f"deeplab segment: skipped {problem}", file=sys.stderr)
    device = pick_device(args.device)
    network = network_from_args(args)
    crf = crf_from_args(args, network.info)
    print(f"CRF: {'none' if crf is None else crf.to_dict()}", file=sys.stderr)
    prepare_crf(crf)
    predictor = Predictor(network.model, crf=crf, device=device)
    bar = progress_bar(total=len(inputs), unit="img", desc="segment", disable=args.no_progress)
    failed_ok = False
    try:
        summary = segment_files(
            predictor,
            inputs,
            args.out,
            overlays=not args.no_overlay,
            save_probs=args.save_probs,
            probs_dtype=args.probs_dtype,
            on_file=lambda item, error: bar.update(1),
            resume=args.resume,
        )
        failed_ok = True
    finally:
        close_bar(bar, failed=not failed_ok)
    # Skipped files are listed after the bar, not written through it.
    for path, error in summary.failed.items():
        print(f"deeplab segment: skipped {path}: {error}", file=sys.stderr)
    failed = len(summary.failed) + len(problems)
    done = f" ({len(summary.skipped)} done before)" if summary.skipped else ""
    print(f"segmented {len(summary.written)} of {len(inputs)} image(s){done} -> {args.out}")
    if failed:
        print(f"deeplab segment: {failed} input(s) failed (see above)", file=sys.stderr)
        return 1
    return 0
