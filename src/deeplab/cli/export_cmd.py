"""`deeplab export-onnx`: a network as an ONNX file with dynamic batch and image size.

::

    deeplab export-onnx --out tiny.onnx     # the shipped CamVid deeplab-largefov-tiny
    deeplab export-onnx --model deeplab-largefov --weights deeplab-largefov-voc12 \\
        --out largefov.onnx
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deeplab.cli.network_args import add_network_options, network_from_args


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
    add_network_options(p, device=False)
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 18)")
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime check")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from deeplab.export import export_onnx

    if args.out.suffix.lower() != ".onnx":
        raise ValueError(f"--out must end in .onnx, got {args.out}")
    network = network_from_args(args)
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
