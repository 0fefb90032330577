"""The `deeplab` command line: thin subcommands that parse, call the library, report.

Each subcommand lives in its own module of this package and exposes
``register(subparsers) -> argparse.ArgumentParser`` whose parser sets ``func`` to a
callable ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# One module per subcommand, in the order `deeplab --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "deeplab.cli.demo_cmd",
    "deeplab.cli.crf_cmd",
    "deeplab.cli.convert_cmd",
    "deeplab.cli.train_cmd",
    "deeplab.cli.evaluate_cmd",
    "deeplab.cli.tune_cmd",
    "deeplab.cli.segment_cmd",
    "deeplab.cli.serve_cmd",
    "deeplab.cli.export_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deeplab",
        description="DeepLab v1 networks and the fully connected CRF.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError, MemoryError) as exc:
        print(f"deeplab {args.command}: error: {exc}", file=sys.stderr)
        return 1
