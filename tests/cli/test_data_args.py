"""--threads: a fixed count for torch and the CRF, or adaptation by default."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import numba
import pytest
import torch

from deeplab import threads
from deeplab.cli.data_args import add_threads_option, apply_threads


@pytest.fixture(autouse=True)
def _restore(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("DEEPLAB_ADAPTIVE_THREADS", raising=False)
    before = torch.get_num_threads(), numba.get_num_threads()
    yield
    torch.set_num_threads(before[0])
    numba.set_num_threads(before[1])
    monkeypatch.setattr(threads, "_cap", None)
    monkeypatch.setattr(threads, "_ours", None)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_threads_option(parser)
    return parser.parse_args(list(argv))


def test_threads_fixes_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setattr(threads, "free_cores", lambda samples=2: 8)
    apply_threads(_parse("--threads", "1"))
    assert os.environ["DEEPLAB_ADAPTIVE_THREADS"] == "0"
    assert torch.get_num_threads() == 1 and numba.get_num_threads() == 1
    assert threads.rebalance_torch_threads() == 1


def test_default_adapts(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    apply_threads(_parse())
    assert "DEEPLAB_ADAPTIVE_THREADS" not in os.environ


def test_negative_threads_is_an_error() -> None:
    with pytest.raises(SystemExit, match="--threads must be at least 1"):
        apply_threads(_parse("--threads", "-2"))
