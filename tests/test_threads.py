"""Torch's thread count following the free cores (deeplab.threads)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from deeplab import threads
from deeplab.crf import threads as crf_threads


@pytest.fixture(autouse=True)
def _restore(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("DEEPLAB_ADAPTIVE_THREADS", raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    monkeypatch.setattr(threads, "_cap", None)
    monkeypatch.setattr(threads, "_ours", None)


def _free(monkeypatch: pytest.MonkeyPatch, cores: int | None) -> None:
    monkeypatch.setattr(threads, "free_cores", lambda samples=2: cores)


def test_follows_free_cores_under_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    threads.set_torch_thread_cap(3)
    _free(monkeypatch, 1)
    assert threads.rebalance_torch_threads() == 1
    assert torch.get_num_threads() == 1
    _free(monkeypatch, 8)
    assert threads.rebalance_torch_threads() == 3
    _free(monkeypatch, None)
    assert threads.rebalance_torch_threads() == 3


def test_a_count_set_by_the_caller_becomes_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    threads.set_torch_thread_cap(3)
    _free(monkeypatch, 8)
    threads.rebalance_torch_threads()
    torch.set_num_threads(1)  # the user's own choice
    assert threads.rebalance_torch_threads() == 1
    torch.set_num_threads(2)
    assert threads.rebalance_torch_threads() == 2


def test_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    threads.set_torch_thread_cap(2)
    _free(monkeypatch, 1)
    monkeypatch.setenv("DEEPLAB_ADAPTIVE_THREADS", "off")
    assert not crf_threads.adaptive_enabled()
    assert threads.rebalance_torch_threads() == 2
