"""Thread counts that follow the free cores (deeplab.crf.threads)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numba
import numpy as np
import pytest

from deeplab.crf import CRFParams, dense_crf, threads

needs_two = pytest.mark.skipif(
    numba.config.NUMBA_NUM_THREADS < 2, reason="needs numba to allow two threads"
)


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("DEEPLAB_ADAPTIVE_THREADS", raising=False)
    monkeypatch.setattr(threads, "RECHECK_SECONDS", 0.0)
    monkeypatch.setattr(threads._local, "state", None, raising=False)
    before = numba.get_num_threads()
    yield
    numba.set_num_threads(before)


def _free(monkeypatch: pytest.MonkeyPatch, cores: int | None) -> None:
    monkeypatch.setattr(threads, "free_cores", lambda samples=2: cores)


def test_state_of_a_stat_line() -> None:
    assert threads.is_running(b"4242 (python3) R 1 4242 4242 0 -1")
    assert threads.is_running(b"17 (odd) name (x) R 1 2 3")  # a name with ") " inside
    assert not threads.is_running(b"4242 (python3) S 1 4242 4242 0 -1")
    assert not threads.is_running(b"4242 (R) S 1")
    assert not threads.is_running(b"garbage")


@needs_two
def test_fewer_threads_when_cores_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    numba.set_num_threads(2)
    _free(monkeypatch, 1)
    with threads.adapted_threads() as count:
        assert count == 1
        assert numba.get_num_threads() == 1
        assert threads.thread_shares() == 2  # the work is still split as for the cap
        with threads.adapted_threads():  # nested blocks keep the outer cap
            assert threads.thread_shares() == 2
        _free(monkeypatch, 2)
        assert threads.rebalance() == 1  # one look at a free core is not enough...
        assert threads.rebalance() == 2  # ...two in a row are
        _free(monkeypatch, 1)
        assert threads.rebalance() == 2  # nor is one look at a taken core
        assert threads.rebalance() == 1
    assert numba.get_num_threads() == 2


@needs_two
def test_looks_again_only_after_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    looks = []

    def free(samples: int = 2) -> int:
        looks.append(1)
        return 1

    numba.set_num_threads(2)
    monkeypatch.setattr(threads, "free_cores", free)
    monkeypatch.setattr(threads, "RECHECK_SECONDS", 60.0)
    with threads.adapted_threads():
        for _ in range(5):
            assert threads.rebalance() == 1
    assert len(looks) == 1


@needs_two
def test_never_above_the_callers_count(monkeypatch: pytest.MonkeyPatch) -> None:
    numba.set_num_threads(1)
    _free(monkeypatch, 8)
    with threads.adapted_threads() as count:
        assert count == 1
    numba.set_num_threads(2)
    with threads.adapted_threads() as count:
        assert count == 2


@needs_two
def test_switched_off_or_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    numba.set_num_threads(2)
    _free(monkeypatch, 1)
    monkeypatch.setenv("DEEPLAB_ADAPTIVE_THREADS", "0")
    with threads.adapted_threads() as count:
        assert count == 2
    monkeypatch.delenv("DEEPLAB_ADAPTIVE_THREADS")
    _free(monkeypatch, None)  # no /proc: the caller's count
    with threads.adapted_threads() as count:
        assert count == 2


def test_unreadable_proc_means_unknown(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(threads, "_LOADAVG", str(tmp_path / "missing"))
    assert threads.runnable_elsewhere() is None
    assert threads.free_cores() is None
    (tmp_path / "loadavg").write_text("not a loadavg line\n")
    monkeypatch.setattr(threads, "_LOADAVG", str(tmp_path / "loadavg"))
    assert threads.runnable_elsewhere() is None


@needs_two
def test_results_do_not_depend_on_the_count_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    probs = rng.dirichlet(np.ones(5), (60, 80)).transpose(2, 0, 1).astype(np.float32)
    numba.set_num_threads(2)
    params = CRFParams.preset("deeplab-largefov")
    results = []
    for free in (1, 2):
        _free(monkeypatch, free)
        threads._local.state = None  # no earlier look: the count follows at once
        results.append(dense_crf(image, probs, params))
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.skipif(not Path("/proc/loadavg").is_file(), reason="needs Linux /proc")
def test_a_busy_process_is_seen() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        # The spinning child is running or waiting for a core at every instant.
        assert threads.runnable_elsewhere() >= 1
        assert threads.free_cores() <= max(1, (threads.os.cpu_count() or 1) - 1)
    finally:
        busy.kill()
        busy.wait()


@needs_two
def test_looks_grow_rarer_while_they_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    looks: list[float] = []
    answer = [1]

    def free(samples: int = 2) -> int:
        looks.append(clock[0])
        return answer[0]

    numba.set_num_threads(2)
    monkeypatch.setattr(threads, "free_cores", free)
    monkeypatch.setattr(threads, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    # Times in 1/1024 s, exact in floats.
    monkeypatch.setattr(threads, "RECHECK_SECONDS", 8 / 1024)
    monkeypatch.setattr(threads, "RECHECK_MAX_SECONDS", 32 / 1024)
    with threads.adapted_threads():
        for step in range(200):
            clock[0] = step / 1024
            if step == 100:
                answer[0] = 2  # the other process ended
            threads.rebalance()
        assert numba.get_num_threads() == 2
    gaps = [round(g * 1024) for g in np.diff(looks)]
    # 8, 16, 32, 32 ticks while the looks agree; back to 8 when they change, and the
    # count changes once two looks in a row agree on it.
    assert gaps[:4] == [8, 16, 32, 32]
    first_change = next(i for i, t in enumerate(looks) if t >= 100 / 1024)
    assert gaps[first_change] == 8
