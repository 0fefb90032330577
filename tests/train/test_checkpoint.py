"""Training checkpoints: round trip, verification, fallback to the previous one, pruning."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from deeplab.train import (
    CorruptCheckpointError,
    TrainState,
    list_checkpoints,
    load_checkpoint,
    load_latest,
    save_checkpoint,
)
from deeplab.train.checkpoint import prune_checkpoints


def _state(iteration: int) -> TrainState:
    g = torch.Generator().manual_seed(iteration)
    return TrainState(
        iteration=iteration,
        model={"conv.weight": torch.randn(4, 3, generator=g), "conv.bias": torch.zeros(4)},
        momentum={"conv.weight": torch.randn(4, 3, generator=g)},
        rng={"torch_cpu/0": torch.get_rng_state()},
        meta={"loss": 0.5, "scaler": None},
    )


def _same(a: TrainState, b: TrainState) -> bool:
    return (
        a.iteration == b.iteration
        and a.meta == b.meta
        and all(
            da.keys() == db.keys() and all(torch.equal(da[k], db[k]) for k in da)
            for da, db in ((a.model, b.model), (a.momentum, b.momentum), (a.rng, b.rng))
        )
    )


def test_round_trip_is_exact_and_records_size_and_sha(tmp_path: Path) -> None:
    state = _state(10)
    meta_path = save_checkpoint(tmp_path, state)
    record = json.loads(meta_path.read_text())
    tensors = tmp_path / record["file"]
    assert record["size"] == tensors.stat().st_size and len(record["sha256"]) == 64
    assert _same(load_checkpoint(meta_path), state)
    assert [it for it, _ in list_checkpoints(tmp_path)] == [10]
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "record"])
def test_damaged_latest_is_reported_and_the_previous_used(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    save_checkpoint(tmp_path, _state(2))
    meta = save_checkpoint(tmp_path, _state(4))
    tensors = tmp_path / "iter_000004.safetensors"
    if damage == "flip":
        data = bytearray(tensors.read_bytes())
        data[-3] ^= 0xFF
        tensors.write_bytes(bytes(data))
    elif damage == "truncate":
        tensors.write_bytes(tensors.read_bytes()[:100])
    elif damage == "delete":
        tensors.unlink()
    else:
        meta.write_text("{not json")
    with pytest.raises(CorruptCheckpointError):
        load_checkpoint(meta)
    with caplog.at_level(logging.ERROR, logger="deeplab.train.checkpoint"):
        state = load_latest(tmp_path)
    assert state is not None and _same(state, _state(2))
    assert "checkpoint 4 is damaged" in caplog.text


def test_nothing_usable_is_an_error_and_nothing_at_all_is_none(tmp_path: Path) -> None:
    assert load_latest(tmp_path / "missing") is None
    save_checkpoint(tmp_path, _state(1))
    (tmp_path / "iter_000001.safetensors").write_bytes(b"garbage")
    with pytest.raises(CorruptCheckpointError, match="no usable checkpoint"):
        load_latest(tmp_path)


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    for it in (1, 2, 3, 4):
        save_checkpoint(tmp_path, _state(it))
    (tmp_path / "iter_000000.safetensors").write_bytes(b"orphan of a crash")
    assert prune_checkpoints(tmp_path, keep=2) == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "iter_000003.json", "iter_000003.safetensors", "iter_000004.json",
        "iter_000004.safetensors",
    ]  # fmt: skip
