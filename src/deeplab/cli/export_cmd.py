"""`deeplab export-onnx`: a network as an ONNX file with dynamic batch and image size.

::

    deeplab export-onnx --out tiny.onnx     # the shipped synthetic deeplab-largefov-tiny
    deeplab export-onnx --model deeplab-largefov --weights deeplab-largefov-voc12 \\
        --out largefov.onnx
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export-onnx",
        help="export a network to ONNX (dynamic image size)",
        description="Write the network as ONNX: input 'image' (B, 3, H, W) float32 in the "
        "Caffe convention (BGR, 0..255, mean subtracted), output 'logits' (B, L, h, w) at "
        "stride 8; B, H and W are dynamic. The file is checked in ONNX Runtime against "
        "PyTorch on two image sizes unless --no-check.",
    )
    p.add_argument("--out", type=Path, required=True, help="ONNX file to write (atomically)")
    p.add_argument("--model", default=None, help="variant (default: the one the weights name)")
    p.add_argument(
        "--weights",
        default=None,
        metavar="FILE|NAME|none",
        help="checkpoint, registered weights name or 'none' (untrained); default: the "
        "shipped synthetic-scene deeplab-largefov-tiny checkpoint",
    )
    p.add_argument("--num-classes", type=int, default=21, help="classes of --weights none")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 18)")
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime check")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from deeplab.cli.segment_cmd import warn_weights
    from deeplab.export import export_onnx
    from deeplab.models import load_network

    if args.out.suffix.lower() != ".onnx":
        raise ValueError(f"--out must end in .onnx, got {args.out}")
    network = load_network(args.model, args.weights, num_classes=args.num_classes)
    warn_weights(network.info)
    try:
        result = export_onnx(network.model, args.out, opset=args.opset, check=not args.no_check)
    except ImportError as exc:
        print(f"deeplab export-onnx: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {result.path} ({network.info.variant}, {result.num_classes} classes, "
        f"opset {result.opset})"
    )
    for (h, w), diff in result.checks.items():
        print(f"ONNX Runtime vs PyTorch on {h}x{w}: max relative difference {diff:.2e}")
    return 0
