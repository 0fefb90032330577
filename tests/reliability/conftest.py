"""Fixtures of the reliability tests: a watchdog against hangs, and a fuzz summary."""

from __future__ import annotations

import faulthandler
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from reliability.fuzzing import Tally

# A test that hangs must fail the run, not stall it: after this long, every thread's stack
# is dumped and the process exits (pytest-timeout is not a dependency).
WATCHDOG_SECONDS = 300
WATCHDOG_SLOW_SECONDS = 1200

TALLIES: list[Tally] = []
"""Tallies of the fuzz tests of this session, printed at the end."""


@pytest.fixture(autouse=True)
def _watchdog(request: pytest.FixtureRequest) -> Iterator[None]:
    slow = request.node.get_closest_marker("slow") is not None
    faulthandler.dump_traceback_later(
        WATCHDOG_SLOW_SECONDS if slow else WATCHDOG_SECONDS, exit=True, file=sys.__stderr__
    )
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(autouse=True)
def _one_numba_thread() -> Iterator[None]:
    # On a busy machine every parallel region of the CRF kernels waits for a second thread
    # to be scheduled: a 6 x 7 CRF took 110 ms with two threads, 0.7 ms with one. These
    # tests run thousands of tiny CRFs; results do not depend on the thread count.
    import numba
    import torch

    before, torch_threads = numba.get_num_threads(), torch.get_num_threads()
    numba.set_num_threads(1)
    # Launching numba's OpenMP pool resets torch's thread count: put it back.
    torch.set_num_threads(torch_threads)
    yield
    numba.set_num_threads(before)
    torch.set_num_threads(torch_threads)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TALLIES:
        return
    write = terminalreporter.write_line
    terminalreporter.section("fuzz targets")
    write(f"{'target':24s} {'tried':>6s} {'clear':>6s} {'ok':>6s} {'crashes':>8s}")
    for t in TALLIES:
        write(f"{t.target:24s} {t.tried:6d} {t.clear:6d} {t.success:6d} {t.crashes:8d}")
