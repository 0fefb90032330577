"""--model / --weights / --num-classes / --device, shared by segment, serve and export-onnx."""

from __future__ import annotations

import argparse
from types import ModuleType

import pytest

from deeplab.cli import export_cmd, segment_cmd, serve_cmd
from deeplab.cli.network_args import add_network_options, pick_device


def _subparser(module: ModuleType) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    sub: argparse.ArgumentParser = module.register(parser.add_subparsers())
    return sub


@pytest.mark.parametrize("module", [segment_cmd, serve_cmd, export_cmd])
def test_every_network_command_has_the_same_options(module: ModuleType) -> None:
    dests = {a.dest: a for a in _subparser(module)._actions}
    for dest in ("model", "weights", "num_classes"):
        assert dest in dests
    assert dests["weights"].default is None
    assert dests["num_classes"].default == 21
    assert ("device" in dests) == (module is not export_cmd)


def test_defaults_and_values() -> None:
    parser = argparse.ArgumentParser()
    add_network_options(parser)
    args = parser.parse_args([])
    assert (args.model, args.weights, args.num_classes, args.device) == (None, None, 21, "auto")
    args = parser.parse_args(["--weights", "none", "--num-classes", "3", "--device", "cpu"])
    assert (args.weights, args.num_classes, pick_device(args.device)) == ("none", 3, "cpu")
