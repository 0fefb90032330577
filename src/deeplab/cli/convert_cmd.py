"""``deeplab convert``: foreign weights (.caffemodel / .pth / .safetensors, or a registered
name whose file is downloaded first) -> checkpoint."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from deeplab.cli.feedback import close_bar, progress_bar
from deeplab.models import WEIGHTS, convert_file, list_models, save_model
from deeplab.models.convert import target_shapes
from deeplab.models.remote import download_weights, downloadable
from deeplab.models.weights import train_split_of


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert",
        help="convert Caffe / torchvision / DeepLab weights into a DeepLab checkpoint",
        description=(
            "Map the tensors of SRC onto a DeepLab variant and write a .safetensors "
            "checkpoint with its metadata. Prints every mapped, missing (freshly "
            "initialised) and unexpected (unused) tensor."
        ),
    )
    parser.add_argument(
        "src",
        metavar="SRC",
        help=".caffemodel, .pth/.pt or .safetensors file, or a registered name whose file is "
        f"downloaded (hash-checked) into the cache: {', '.join(downloadable())}",
    )
    parser.add_argument(
        "--variant",
        required=True,
        choices=list_models(),
        metavar="NAME",
        help=f"target network: {', '.join(list_models())}",
    )
    parser.add_argument(
        "--out", required=True, metavar="DST.safetensors", help="checkpoint to write (atomically)"
    )
    parser.add_argument(
        "--num-classes",
        type=int,
        default=21,
        help="classes of the target fc8 (default: 21, PASCAL VOC)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if not args.out.endswith(".safetensors"):
        raise ValueError(f"--out must end in .safetensors, got {args.out}")
    src = args.src
    record = WEIGHTS.get(src)
    if record is not None and not os.path.exists(src):
        src = os.fspath(fetch_with_bar(src))
        if record.sha256 is None:
            digest = Path(f"{src}.sha256").read_text().split()[0]
            print(
                f"{src}: no published hash to check; its sha256 is {digest} "
                f"(written to {src}.sha256)"
            )
    model, report = convert_file(src, args.variant, args.num_classes)
    for line in report.lines(target_shapes(args.variant, args.num_classes)):
        print(line)
    extra = {"source_format": report.source_format}
    split = record.train_split if record is not None else train_split_of(args.src)
    if split is not None:
        extra["train_split"] = split
        seen = "has seen VOC val: its val scores are not a fair measure" if split == (
            "trainval_aug") else "fit to score on VOC val"  # fmt: skip
        how = "its record" if record is not None else "the file name"
        print(f"trained on {split} (from {how}): {seen}")
    if record is not None and record.url:
        extra["url"] = record.url
    save_model(model, args.out, source=os.path.basename(args.src), extra=extra)
    print(f"wrote {args.out} ({args.variant}, {args.num_classes} classes)")
    return 0


def fetch_with_bar(name: str) -> str:
    """Download a registered name's file (cached) with a progress bar on stderr."""
    bar = None

    def progress(done: int, total: int | None) -> None:
        nonlocal bar
        if bar is None:
            bar = progress_bar(
                total=total,
                desc=f"downloading {name}",
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
            )
        if done < bar.n:  # the server could not resume: started again
            bar.reset(total=total)
        bar.update(done - bar.n)

    try:
        path = download_weights(name, progress=progress)
    except BaseException:
        close_bar(bar, failed=True)
        raise
    close_bar(bar, failed=False)
    return os.fspath(path)
