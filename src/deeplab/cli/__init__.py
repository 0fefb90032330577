"""The `deeplab` command line: thin subcommands that parse, call the library, report.

Each subcommand lives in its own module of this package and exposes
``register(subparsers) -> argparse.ArgumentParser`` whose parser sets ``func`` to a
callable ``run(args) -> int``.

What a user sees is kept short: an error is one line (``deeplab CMD: error: ...``, no usage
block), printed after any progress bar has been cleared; a start-up that is silent for
more than a second (importing PyTorch, a first run after installing) says so.

With the CRF-only install (no ``networks`` extra) ``deeplab crf`` works and every command
that needs PyTorch is still listed, and answers one line naming the extra to install.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import threading
from typing import NoReturn

from deeplab.extras import missing_extra_message

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

# Command name of each module, for the stand-in a command gets when its module cannot be
# imported without an extra (tests/cli/test_extras.py checks these against register()).
COMMAND_NAMES: dict[str, str] = {
    "deeplab.cli.demo_cmd": "demo",
    "deeplab.cli.crf_cmd": "crf",
    "deeplab.cli.crf3d_cmd": "crf3d",
    "deeplab.cli.convert_cmd": "convert",
    "deeplab.cli.train_cmd": "train",
    "deeplab.cli.evaluate_cmd": "evaluate",
    "deeplab.cli.tune_cmd": "tune-crf",
    "deeplab.cli.segment_cmd": "segment",
    "deeplab.cli.serve_cmd": "serve",
    "deeplab.cli.export_cmd": "export-onnx",
}

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
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            reason = missing_extra_message(exc)
            if reason is None:
                raise
            add_unavailable(sub, COMMAND_NAMES.get(name, name.rsplit(".", 1)[-1]), reason)
            continue
        module.register(sub)
    return parser


def add_unavailable(sub: argparse._SubParsersAction, command: str, reason: str) -> None:
    """A stand-in for a command whose module needs an extra that is not installed: listed
    by --help, and any use of it (``--help`` included) is one line naming the extra."""

    def run(args: argparse.Namespace) -> int:
        print(f"deeplab {command}: error: {reason}", file=sys.stderr)
        return 1

    def parse_known_args(
        args: object = None, namespace: object = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # Whatever follows the command (--help included) is not parsed: the answer is the
        # same one line.
        return argparse.Namespace(func=run), []

    hint = reason.rsplit(": ", 1)[-1]
    p = sub.add_parser(command, help=f"(not installed: {hint})", add_help=False)
    p.parse_known_args = parse_known_args


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
    except ImportError as exc:
        # A package of an optional extra imported on first use (PyTorch for a network, fastapi
        # for the web demo): name the extra to install.
        reason = missing_extra_message(exc) or one_line(exc)
        print(f"deeplab {args.command}: error: {reason}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, OSError, MemoryError) as exc:
        print(f"deeplab {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 1
