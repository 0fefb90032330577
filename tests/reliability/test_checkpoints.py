"""Checkpoints from disk: damaged model files and metadata, damaged training checkpoints.

A training checkpoint records its tensor file's size and sha256; a damaged one must be
detected, reported and skipped for the previous one, which stays on disk.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from deeplab.models.weights import CheckpointMeta, load_checkpoint, save_checkpoint
from deeplab.train import (
    CorruptCheckpointError,
    TrainState,
    load_latest,
)
from deeplab.train import load_checkpoint as load_train
from deeplab.train import (
    save_checkpoint as save_train,
)
from reliability.fuzzing import worker_env


def _model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    meta = CheckpointMeta("deeplab-largefov-tiny", 3, ("a", "b", "c"), source="test")
    save_checkpoint(path, {"fc8.weight": torch.ones(3, 2), "fc8.bias": torch.zeros(3)}, meta)
    return path


def test_every_truncation_of_a_model_checkpoint_is_a_value_error(tmp_path: Path) -> None:
    data = _model_file(tmp_path).read_bytes()
    cut = tmp_path / "cut.safetensors"
    for n in range(0, len(data) - 1, 7):
        cut.write_bytes(data[:n])
        with pytest.raises(ValueError, match=r"cut\.safetensors"):
            load_checkpoint(cut)


def test_flipped_header_bytes_are_refused_or_read_as_valid_metadata(tmp_path: Path) -> None:
    data = _model_file(tmp_path).read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    damaged = tmp_path / "flip.safetensors"
    refused = 0
    for i in range(header_end):
        raw = bytearray(data)
        raw[i] ^= 1 << (i % 8)
        damaged.write_bytes(bytes(raw))
        try:
            tensors, meta = load_checkpoint(damaged)
        except ValueError as exc:
            assert "flip.safetensors" in str(exc)
            refused += 1
            continue
        # A flip inside a string (a class name, the source) can leave a valid file.
        assert isinstance(meta.num_classes, int) and all(
            isinstance(t, torch.Tensor) for t in tensors.values()
        )
    assert refused > header_end // 2  # most flips break the header


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"format": "deeplab-checkpoint", "meta": "0"}, "unsupported checkpoint version None"),
        ({"format": "other", "format_version": "1", "meta": "{}"}, "not a deeplab checkpoint"),
        ({"format": "deeplab-checkpoint", "format_version": "1", "meta": "[1]"}, "malformed"),
        (
            {
                "format": "deeplab-checkpoint",
                "format_version": "1",
                "meta": json.dumps({"variant": "x", "num_classes": float("inf")}),
            },
            "malformed checkpoint metadata: OverflowError",
        ),
        (
            {
                "format": "deeplab-checkpoint",
                "format_version": "1",
                "meta": "[" * 100_000 + "]" * 100_000,
            },
            "malformed checkpoint metadata: RecursionError",
        ),
        (
            {
                "format": "deeplab-checkpoint",
                "format_version": "1",
                "meta": json.dumps({"variant": "x", "num_classes": "many"}),
            },
            "malformed checkpoint metadata",
        ),
    ],
)
def test_hostile_metadata(tmp_path: Path, metadata: dict[str, str], message: str) -> None:
    path = tmp_path / "meta.safetensors"
    path.write_bytes(save({"w": torch.ones(2)}, metadata=metadata))
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path)


def test_a_header_length_claiming_2_63_bytes(tmp_path: Path) -> None:
    path = tmp_path / "claim.safetensors"
    path.write_bytes((2**63 - 1).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match=r"claim\.safetensors: not a readable safetensors"):
        load_checkpoint(path)


# -- training checkpoints -------------------------------------------------------------------


def _state(iteration: int) -> TrainState:
    g = torch.Generator().manual_seed(iteration)
    return TrainState(
        iteration,
        {"conv.weight": torch.randn(8, 3, generator=g)},
        {"conv.weight": torch.randn(8, 3, generator=g)},
        {"torch_cpu/0": torch.get_rng_state()},
        {"loss": float(iteration)},
    )


@pytest.mark.parametrize("damage", ["truncate", "flip", "record", "zero-length", "swap"])
def test_a_damaged_newest_checkpoint_is_reported_and_the_previous_one_used_and_kept(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    for it in (2, 4, 6):
        save_train(tmp_path, _state(it))
    tensors, record = tmp_path / "iter_000006.safetensors", tmp_path / "iter_000006.json"
    data = tensors.read_bytes()
    if damage == "truncate":
        tensors.write_bytes(data[: len(data) // 2])
        expected = "bytes, the record says"
    elif damage == "flip":
        raw = bytearray(data)
        raw[len(raw) // 2] ^= 0x10
        tensors.write_bytes(bytes(raw))
        expected = "sha256"
    elif damage == "record":
        record.write_bytes(record.read_bytes()[:40])
        expected = "unreadable checkpoint record"
    elif damage == "zero-length":
        tensors.write_bytes(b"")
        expected = "0 bytes"
    else:  # another checkpoint's tensors under this name: the right size class, wrong hash
        tensors.write_bytes((tmp_path / "iter_000004.safetensors").read_bytes())
        expected = "sha256"
    with pytest.raises(CorruptCheckpointError, match=expected):
        load_train(record)
    with caplog.at_level(logging.ERROR, logger="deeplab.train.checkpoint"):
        state = load_latest(tmp_path)
    assert state is not None and state.iteration == 4
    assert torch.equal(state.model["conv.weight"], _state(4).model["conv.weight"])
    assert "checkpoint 6 is damaged" in caplog.text and expected.split()[0] in caplog.text
    # Nothing was deleted: the damaged files stay for inspection, the fallbacks stay too.
    assert {p.name for p in tmp_path.iterdir()} >= {
        "iter_000002.json",
        "iter_000004.json",
        "iter_000004.safetensors",
        "iter_000006.json",
    }


def test_every_checkpoint_damaged_is_an_error_not_a_silent_restart(tmp_path: Path) -> None:
    for it in (2, 4):
        save_train(tmp_path, _state(it))
        path = tmp_path / f"iter_{it:06d}.safetensors"
        path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(CorruptCheckpointError, match="no usable checkpoint"):
        load_latest(tmp_path)


@pytest.mark.parametrize("name", ["../iter_000002.safetensors", "/etc/hostname", "sub/x", ".."])
def test_a_record_cannot_point_outside_its_folder(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "run"
    record_path = save_train(folder, _state(2))
    (tmp_path / "iter_000002.safetensors").write_bytes(
        (folder / "iter_000002.safetensors").read_bytes()
    )
    record = json.loads(record_path.read_text())
    record["file"] = name
    record_path.write_text(json.dumps(record))
    with pytest.raises(CorruptCheckpointError, match="not a plain file name"):
        load_train(record_path)


def test_a_record_naming_dev_zero_is_refused_at_once(tmp_path: Path) -> None:
    """Regression: {"file": "/dev/zero"} made the loader read /dev/zero until memory ran
    out. Run in a subprocess with a 4 GiB address-space limit and a timeout, so that a
    regression fails this test instead of the machine."""
    record_path = save_train(tmp_path, _state(2))
    record = json.loads(record_path.read_text())
    record["file"] = "/dev/zero"
    record_path.write_text(json.dumps(record))
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
        "from deeplab.train import CorruptCheckpointError, load_checkpoint\n"
        "try:\n"
        "    load_checkpoint(sys.argv[1])\n"
        "except CorruptCheckpointError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(record_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=worker_env(),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "not a plain file name" in done.stdout
