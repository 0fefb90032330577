"""SIGTERM/SIGUSR1 during training: the current iteration ends, a checkpoint is written, the
run returns as pre-empted, and a resumed run ends with the uninterrupted weights."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from deeplab.train import DataSpec, Recipe, list_checkpoints, read_log, train
from deeplab.train.preemption import StopRequest, ignore_stop_signals

pytestmark = pytest.mark.skipif(
    not (hasattr(signal, "SIGTERM") and hasattr(signal, "SIGUSR1") and hasattr(os, "kill")),
    reason="needs POSIX signals",
)


def test_stop_request_records_the_first_signal_and_restores_the_handlers() -> None:
    before = signal.getsignal(signal.SIGUSR1)
    with StopRequest() as request:
        assert not request.pending
        os.kill(os.getpid(), signal.SIGUSR1)
        assert request.pending and request.signal == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) is before


def test_a_second_signal_gets_its_previous_meaning() -> None:
    seen: list[int] = []

    def previous(signum: int, frame: object) -> None:
        seen.append(signum)

    old = signal.signal(signal.SIGTERM, previous)
    try:
        with StopRequest() as request:
            os.kill(os.getpid(), signal.SIGTERM)
            assert seen == [] and request.signal == signal.SIGTERM
            os.kill(os.getpid(), signal.SIGTERM)
            assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, old)


def test_data_loader_workers_ignore_stop_signals() -> None:
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        ignore_stop_signals(0)
        assert all(signal.getsignal(s) == signal.SIG_IGN for s in old)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@pytest.mark.parametrize("name", ["SIGTERM", "SIGUSR1"])
def test_signal_mid_run_checkpoints_that_iteration_and_resume_matches(
    tmp_path: Path, tiny_recipe: Callable[..., Recipe], tiny_data: DataSpec, name: str
) -> None:
    signum = getattr(signal, name)
    # 7 is neither a checkpoint (every 4) nor a log (every 3) iteration: both are written
    # because of the signal.
    recipe = tiny_recipe(iterations=10, checkpoint_every=4, log_every=3)
    run = tmp_path / "run"

    def signal_after_6(event: dict[str, Any]) -> None:
        # Iteration 6 has already exchanged its stop flag: the signal is seen by 7's.
        if event["event"] == "step" and event["iteration"] == 6:
            os.kill(os.getpid(), signum)

    first = train(recipe, tiny_data, run, callback=signal_after_6)
    assert first.preempted and not first.finished and first.iteration == 7
    assert first.model_path is None and not (run / "model.safetensors").exists()
    assert [it for it, _ in list_checkpoints(run / "checkpoints")] == [4, 7]
    assert [r["iteration"] for r in read_log(run / "log.jsonl")] == [3, 6, 7]
    # The handlers are gone again: the signal would now mean what it meant before.
    assert signal.getsignal(signum) == signal.SIG_DFL

    resumed = train(recipe, tiny_data, run, resume=True)
    assert resumed.finished and not resumed.preempted
    reference = train(recipe, tiny_data, tmp_path / "reference")
    got, want = resumed.model.state_dict(), reference.model.state_dict()
    assert [k for k in want if not torch.equal(got[k], want[k])] == []
    assert [r["iteration"] for r in read_log(run / "log.jsonl")] == [3, 6, 7, 9, 10]
