"""The worker pool evaluate and tune-crf share: the same results inline and in processes,
in order or as they finish, and a worker's setup error reaching the caller."""

from __future__ import annotations

import pytest

from deeplab.workers import WorkerPool


def _times(factor: int, task: int) -> int:
    return factor * task


def _scale(factor: int) -> int:
    return factor


def _setup_fails(message: str) -> int:
    raise ValueError(message)


def _plain(state: None, task: int) -> int:
    return task + 1


@pytest.mark.parametrize("workers", [0, 2])
def test_results_in_order_and_unordered(workers: int) -> None:
    with WorkerPool(workers, _times, _scale, (3,)) as pool:
        ordered = [r for task in range(7) for r in pool.submit(task)]
        ordered += list(pool.drain())
        assert ordered == [3 * t for t in range(7)]
        assert sorted(pool.map_unordered(range(5))) == [0, 3, 6, 9, 12]


def test_no_setup_gives_no_state() -> None:
    pool = WorkerPool(0, _plain)
    assert list(pool.map_unordered([1, 2])) == [2, 3]
    pool.close()


@pytest.mark.slow
def test_setup_error_reaches_the_caller() -> None:
    # A pool whose initializer raises starts workers again forever: the first task raises.
    with (
        pytest.raises(ValueError, match="no data"),
        WorkerPool(1, _times, _setup_fails, ("no data",)) as pool,
    ):
        list(pool.map_unordered([1]))
    with pytest.raises(ValueError, match="no data"):
        WorkerPool(0, _times, _setup_fails, ("no data",))
