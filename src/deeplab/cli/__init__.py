"""The `deeplab` command line: thin subcommands that parse, call the library, report.

Each subcommand lives in its own module of this package and exposes
``register(subparsers) -> argparse.ArgumentParser`` whose parser sets ``func`` to a
callable ``run(args) -> int``.

What a user sees is kept short: an error is one line (``deeplab CMD: error: ...``, no usage
block), printed after any progress bar has been cleared; a start-up that is silent for
more than a second (importing PyTorch, a first run after installing) says so.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import threading
from typing import NoReturn

# One module per subcommand, in the order `deeplab --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "deeplab.cli.demo_cmd",
    "deeplab.cli.crf_cmd",
    "deeplab.cli.crf3d_cmd",
    "deeplab.cli.convert_cmd",
    "deeplab.cli.train_cmd",
    "deeplab.cli.evaluate_cmd",
    "deeplab.cli.tune_cmd",
    "deeplab.cli.segment_cmd",
    "deeplab.cli.serve_cmd",
    "deeplab.cli.export_cmd",
)

STARTUP_NOTICE_S = 1.5
"""Seconds of silence before the command line says it is still starting up."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line naming the option (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="deeplab",
        description="DeepLab v1 networks and the fully connected CRF.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def one_line(message: object) -> str:
    """A message on one line: the lines of a multi-line text joined with '; '."""
    return "; ".join(part.strip() for part in str(message).splitlines() if part.strip())


def main(argv: list[str] | None = None) -> int:
    # Building the parser imports PyTorch (seconds on a busy machine, more on the first run
    # after installing, when Python compiles the package): say so instead of looking hung.
    notice = threading.Timer(
        STARTUP_NOTICE_S,
        lambda: print(
            "deeplab: loading PyTorch (the first run after installing takes longer)...",
            file=sys.stderr,
            flush=True,
        ),
    )
    notice.daemon = True
    notice.start()
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    finally:
        notice.cancel()
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError, MemoryError) as exc:
        print(f"deeplab {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 1
