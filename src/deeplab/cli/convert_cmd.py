"""``deeplab convert``: foreign weights (.caffemodel / .pth / .safetensors) -> checkpoint."""

from __future__ import annotations

import argparse
import os

from deeplab.models import convert_file, list_models, save_model
from deeplab.models.convert import target_shapes
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
    parser.add_argument("src", metavar="SRC", help=".caffemodel, .pth/.pt or .safetensors")
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
    model, report = convert_file(args.src, args.variant, args.num_classes)
    for line in report.lines(target_shapes(args.variant, args.num_classes)):
        print(line)
    extra = {"source_format": report.source_format}
    split = train_split_of(args.src)
    if split is not None:
        extra["train_split"] = split
        seen = "has seen VOC val: its val scores are not a fair measure" if split == (
            "trainval_aug") else "fit to score on VOC val"  # fmt: skip
        print(f"trained on {split} (from the file name): {seen}")
    save_model(model, args.out, source=os.path.basename(args.src), extra=extra)
    print(f"wrote {args.out} ({args.variant}, {args.num_classes} classes)")
    return 0
