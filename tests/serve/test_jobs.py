"""JobQueue: admission, worker slots, cancellation and shutdown, without a server."""

from __future__ import annotations

import asyncio
import threading

import pytest

from deeplab.serve.jobs import JobQueue, default_queue_size
from deeplab.serve.service import ServiceError


def test_refuses_beyond_capacity_with_retry_after() -> None:
    jobs = JobQueue(2)
    first, second = jobs.admit(), jobs.admit()
    with pytest.raises(ServiceError) as info:
        jobs.admit()
    assert info.value.status == 503 and "busy" in info.value.message
    assert int(info.value.headers["Retry-After"]) >= 1
    assert jobs.counts["refused"] == 1
    first.release()
    first.release()  # twice is once
    third = jobs.admit()
    assert jobs.state()["admitted"] == 2
    second.release()
    third.release()
    assert jobs.state()["admitted"] == 0


def test_refuses_a_job_that_would_only_wait_out_its_time_limit() -> None:
    jobs = JobQueue(8, time_limit=10)
    jobs._seconds = 6.0  # the recent pace: 6 s a job
    first = jobs.admit()  # runs at once
    with pytest.raises(ServiceError) as info:
        jobs.admit()  # would answer after about 12 s
    assert info.value.status == 503 and int(info.value.headers["Retry-After"]) >= 6
    first.release()


def test_a_cancelled_job_sets_its_flag_and_frees_the_worker_when_it_stops() -> None:
    async def scenario() -> None:
        jobs = JobQueue(4, workers=1)
        entered, release = threading.Event(), threading.Event()
        seen: list[bool] = []

        def slow(cancel: threading.Event) -> str:
            entered.set()
            release.wait(30)
            seen.append(cancel.is_set())
            return "slow"

        running = asyncio.ensure_future(jobs.run(slow))
        while not entered.is_set():
            await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(jobs.run(lambda cancel: "never"))
        queued = asyncio.ensure_future(jobs.run(lambda cancel: "next"))
        await asyncio.sleep(0.05)
        assert jobs.state()["waiting"] == 2
        waiting.cancel()  # its client left before it started: it never runs
        running.cancel()  # its client left while it ran: the thread is told
        await asyncio.sleep(0.05)
        assert jobs.state()["waiting"] == 1
        assert not queued.done()  # the worker is still busy with the cancelled job
        release.set()
        assert await asyncio.wait_for(queued, 30) == "next"
        assert seen == [True]
        assert waiting.cancelled() and running.cancelled()

    asyncio.run(scenario())


def test_errors_come_back_to_the_caller() -> None:
    def fails(cancel: threading.Event) -> None:
        raise ServiceError(415, "not an image")

    async def scenario() -> None:
        jobs = JobQueue(1)
        with pytest.raises(ServiceError, match="not an image"):
            await jobs.run(fails)
        assert await jobs.run(lambda cancel: 7) == 7

    asyncio.run(scenario())


def test_drain_refuses_waiting_jobs_and_stops_running_ones_after_the_grace() -> None:
    async def scenario() -> None:
        jobs = JobQueue(4, workers=1)
        entered, release = threading.Event(), threading.Event()

        def slow(cancel: threading.Event) -> None:
            entered.set()
            release.wait(30)

        running = asyncio.ensure_future(jobs.run(slow))
        while not entered.is_set():
            await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(jobs.run(lambda cancel: None))
        await asyncio.sleep(0.05)
        await jobs.drain(grace=0.2)
        for task in (running, waiting):
            with pytest.raises(ServiceError) as info:
                await task
            assert info.value.status == 503 and "shutting down" in info.value.message
        with pytest.raises(ServiceError) as info:
            jobs.admit()
        assert info.value.status == 503
        release.set()

    asyncio.run(scenario())


def test_bad_settings_and_the_default_size() -> None:
    with pytest.raises(ValueError, match="capacity"):
        JobQueue(0)
    with pytest.raises(ValueError, match="time_limit"):
        JobQueue(1, time_limit=0)
    assert 1 <= default_queue_size(10 * 2**20) <= 16
