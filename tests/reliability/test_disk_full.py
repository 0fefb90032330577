"""A disk that fills up: the error names the file, the bytes needed and the bytes free;
what was finished stays, no temporary file is left, and the command run again (with room)
resumes and completes with the result of an uninterrupted run.

The disk fills at the n-th file write (an fsync failing with ENOSPC, the ``disk_full``
fixture of tests/conftest.py), for ``train``, ``evaluate``, ``tune-crf`` and ``segment``.
"""

from __future__ import annotations

import errno
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from conftest import DiskFull
from deeplab.cli import main
from deeplab.io_utils import DiskFullError, append_synced, atomic_write_bytes, atomic_write_text
from deeplab.models import load_model
from deeplab.train import read_log, resolve_recipe, train
from deeplab.train.data import DataSpec

TINY = dict(model="deeplab-largefov-tiny", batch=2, crop=41, lr=0.01, log_every=1, workers=0,
            checkpoint_every=2, keep_checkpoints=2, iterations=6)  # fmt: skip
SYNTHETIC = ["--synthetic-count", "12", "--synthetic-size", "48", "48"]
MESSAGE = re.compile(
    r"No space left on device while writing (?P<path>\S+): it needs (?P<needed>\d+) bytes"
    r".*, (?P<free>\d+) bytes.* free there; make space and run again"
)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _temporary_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_atomic_write_names_file_size_and_free_space_and_keeps_the_old_content(
    tmp_path: Path, disk_full: DiskFull
) -> None:
    target = tmp_path / "out" / "data.bin"
    atomic_write_bytes(target, b"old")
    disk_full.at(1)
    with pytest.raises(DiskFullError) as caught:
        atomic_write_bytes(target, b"x" * 12_345)
    error = caught.value
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC
    assert error.path == target and error.needed == 12_345
    assert error.free is not None and error.free >= 0
    match = MESSAGE.search(str(error))
    assert match is not None, str(error)
    assert match["path"] == str(target) and int(match["needed"]) == 12_345
    assert target.read_bytes() == b"old" and _temporary_files(tmp_path) == []

    with pytest.raises(DiskFullError, match="it needs 5 bytes"):
        atomic_write_text(target, "héllo"[:4])  # 4 characters, 5 bytes in UTF-8
    log = tmp_path / "log.jsonl"
    with pytest.raises(DiskFullError, match=re.escape(str(log))):
        append_synced(log, "{}\n")
    disk_full.at(None)
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"


def test_other_write_errors_are_not_called_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError) as caught:
        atomic_write_bytes(tmp_path / "x", b"data")
    assert not isinstance(caught.value, DiskFullError) and caught.value.errno == errno.EIO
    assert list(tmp_path.iterdir()) == []


# 1: config.json; 5: the record of checkpoint 2 (its tensors are written); 8: the tensors
# of checkpoint 4 (checkpoint 2 is complete). Writes: config, log 1, log 2, checkpoint 2
# (tensors, record), log 3, log 4, checkpoint 4, ...
@pytest.mark.parametrize("nth", [1, 5, 8])
def test_train_stops_with_the_file_and_sizes_then_resumes_to_the_same_weights(
    tmp_path: Path, disk_full: DiskFull, capsys: pytest.CaptureFixture[str], nth: int
) -> None:
    config = tmp_path / "recipe.json"
    config.write_text(json.dumps(TINY))
    run = tmp_path / "run"
    args = ["train", "--config", str(config), "--out", str(run), "--threads", "1",
            "--device", "cpu", "--no-progress", *SYNTHETIC]  # fmt: skip
    disk_full.at(nth)
    assert main(args) == 1
    err = capsys.readouterr().err
    match = MESSAGE.search(err)
    assert match is not None, err
    assert Path(match["path"]).parent in (run, run / "checkpoints")
    assert int(match["needed"]) > 0
    assert _temporary_files(tmp_path) == []
    assert not (run / "model.safetensors").exists()

    disk_full.at(None)
    assert main([*args, "--resume"]) == 0
    reference = train(resolve_recipe(overrides=TINY), DataSpec(synthetic_count=12,
                      synthetic_size=(48, 48)), tmp_path / "reference")  # fmt: skip
    got = load_model(run / "model.safetensors").state_dict()
    want = load_model(reference.model_path).state_dict()
    assert [k for k in want if not torch.equal(got[k], want[k])] == []
    assert [r["iteration"] for r in read_log(run / "log.jsonl")] == list(range(1, 7))
    assert _temporary_files(tmp_path) == []
