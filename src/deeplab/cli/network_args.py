"""Command-line options naming a network, shared by ``deeplab segment``, ``serve`` and
``export-onnx``.

Not a subcommand: :func:`add_network_options` adds ``--model``, ``--weights``,
``--num-classes`` (and ``--device``), :func:`network_from_args` loads what they name
(:func:`deeplab.models.load_network`) and says on stderr which weights run.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deeplab.models.network import Network, NetworkInfo

__all__ = ["add_network_options", "network_from_args", "pick_device", "warn_weights"]

SHIPPED_DEFAULT = "the shipped deeplab-largefov-tiny trained on CamVid street scenes"


def add_network_options(parser: argparse.ArgumentParser, *, device: bool = True) -> None:
    """--model, --weights and --num-classes; --device too unless ``device`` is False."""
    parser.add_argument("--model", default=None, help="variant (default: the one the weights name)")
    parser.add_argument(
        "--weights",
        default=None,
        metavar="FILE|NAME|none",
        help="checkpoint, a registered weights name (deeplab.models.WEIGHTS) or 'none' "
        f"(untrained); default: {SHIPPED_DEFAULT}",
    )
    parser.add_argument("--num-classes", type=int, default=21, help="classes of --weights none")
    if device:
        parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


def pick_device(spec: str) -> str:
    """--device: "auto" is the GPU when there is one."""
    if spec == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return spec


def network_from_args(args: argparse.Namespace) -> Network:
    """The network --model / --weights / --num-classes name, after saying which it is."""
    from deeplab.models import load_network

    network = load_network(args.model, args.weights, num_classes=args.num_classes)
    warn_weights(network.info)
    return network


def warn_weights(info: NetworkInfo) -> None:
    """Say which weights run, and in one line, with how to get real ones, when they are not
    for photographs."""
    from deeplab.models.network import real_weights_hint

    print(f"network: {info.describe()}", file=sys.stderr)
    if info.note:
        print(f"note: {info.note}", file=sys.stderr)
    if info.kind == "real":
        return
    what = (
        "were trained on synthetic shapes, not on photographs"
        if info.kind == "synthetic"
        else "are untrained (random)"
    )
    print(
        f"warning: these weights {what}: their labels for real images are meaningless; "
        f"{real_weights_hint(info.variant)}",
        file=sys.stderr,
    )
