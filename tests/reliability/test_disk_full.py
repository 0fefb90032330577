"""A disk that fills up: the error names the file, the bytes needed and the bytes free;
what was finished stays, no temporary file is left, and the command run again (with room)
resumes and completes with the result of an uninterrupted run.

The disk fills at the n-th file write (an fsync failing with ENOSPC: :class:`DiskFull`),
for ``train``, ``evaluate``, ``tune-crf`` and ``segment``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from deeplab.cli import main
from deeplab.crf import CRFParams
from deeplab.data import DataSpec, SyntheticScenes
from deeplab.data.image_io import save_png
from deeplab.io_utils import DiskFullError, append_synced, atomic_write_bytes, atomic_write_text
from deeplab.models import load_model
from deeplab.train import read_log, resolve_recipe, train

TINY = dict(model="deeplab-largefov-tiny", batch=2, crop=41, lr=0.01, log_every=1, workers=0,
            checkpoint_every=2, keep_checkpoints=2, iterations=6)  # fmt: skip
SYNTHETIC = ["--synthetic-count", "12", "--synthetic-size", "48", "48"]
MESSAGE = re.compile(
    r"No space left on device while writing (?P<path>\S+): it needs (?P<needed>\d+) bytes"
    r".*, (?P<free>\d+) bytes.* free there; make space and run again"
)


class DiskFull:
    """Makes the ``n``-th and every later fsync of a regular file fail with ENOSPC, as a
    disk that fills up at that write would (every atomic write and log append of the
    package ends with an fsync, after which the temporary file would be renamed)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n: int | None = None
        self.count = 0
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                self.count += 1
                if self.n is not None and self.count >= self.n:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)

    def at(self, n: int | None) -> None:
        """Fail from the ``n``-th file write from now on (None: the disk has room again)."""
        self.count = 0
        self.n = n


@pytest.fixture
def disk_full(monkeypatch: pytest.MonkeyPatch) -> DiskFull:
    """A :class:`DiskFull` that starts with room."""
    return DiskFull(monkeypatch)


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


EVAL_DATA = ["--synthetic-count", "5", "--synthetic-size", "48", "48", "--threads", "1",
             "--no-progress"]  # fmt: skip


def _scores(results: Path) -> dict[str, object]:
    data = json.loads(results.read_text())
    return {k: data[k] for k in ("without_crf", "with_crf", "num_images", "crf_params")}


# Writes: partial/key.json, logits/meta.json, then per image its logits and its counts
# (5 images), then results.json: 7 is image 2's logits, 13 the results.
@pytest.mark.parametrize("nth", [7, 13])
def test_evaluate_keeps_the_scored_images_and_resumes_to_the_same_results(
    tmp_path: Path,
    tiny_weights: Path,
    disk_full: DiskFull,
    capsys: pytest.CaptureFixture[str],
    nth: int,
) -> None:
    crf = tmp_path / "crf.json"
    CRFParams(w1=3, theta_alpha=10, theta_beta=10, iterations=2).save(crf)
    base = ["evaluate", "--weights", str(tiny_weights), "--crf", str(crf), *EVAL_DATA]
    assert main([*base, "--out", str(tmp_path / "reference")]) == 0
    out, logits = tmp_path / "out", tmp_path / "logits"
    args = [*base, "--out", str(out), "--save-logits", str(logits)]
    capsys.readouterr()

    disk_full.at(nth)
    assert main(args) == 1
    match = MESSAGE.search(capsys.readouterr().err)
    assert match is not None and Path(match["path"]).suffix in (".npz", ".json")
    assert not (out / "results.json").exists() and _temporary_files(tmp_path) == []
    kept = sorted(p.name for p in (out / "partial").glob("*.npz"))
    assert len(kept) == (nth - 3) // 2

    stamps = {p.name: p.stat().st_mtime_ns for p in logits.glob("*.npz") if p.name in kept}
    assert len(stamps) == len(kept)

    disk_full.at(None)
    assert main(args) == 1  # a new evaluation must not silently mix with the old one
    assert "pass --resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    # The images scored before were not run through the network again.
    assert {name: (logits / name).stat().st_mtime_ns for name in stamps} == stamps
    assert _scores(out / "results.json") == _scores(tmp_path / "reference" / "results.json")
    assert not (out / "partial").exists() and _temporary_files(tmp_path) == []
    assert len(list(logits.glob("*.npz"))) == 5


def test_evaluate_refuses_to_resume_with_other_settings(
    tmp_path: Path, tiny_weights: Path, disk_full: DiskFull, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["evaluate", "--weights", str(tiny_weights), "--crf", "none", "--out",
            str(tmp_path / "out"), *EVAL_DATA]  # fmt: skip
    disk_full.at(3)
    assert main(args) == 1
    disk_full.at(None)
    assert main([*args, "--resume", "--trimap"]) == 1
    assert "differs in trimap" in capsys.readouterr().err


TUNE_GRID = ["--w1", "2:4:2", "--theta-alpha", "20:40:20", "--theta-beta", "5",
             "--iterations", "2", "--rounds", "0", "--workers", "0", "--no-progress",
             "--synthetic-count", "5", "--synthetic-size", "48", "48"]  # fmt: skip


def test_tune_crf_keeps_the_finished_parameter_sets_and_resumes(
    tmp_path: Path, tiny_weights: Path, disk_full: DiskFull, capsys: pytest.CaptureFixture[str]
) -> None:
    logits = tmp_path / "logits"
    assert main(["evaluate", "--weights", str(tiny_weights), "--crf", "none", "--save-logits",
                 str(logits), "--logits-dtype", "float32", "--out", str(tmp_path / "eval"),
                 *EVAL_DATA]) == 0  # fmt: skip
    assert main(["tune-crf", "--logits", str(logits), "--out", str(tmp_path / "reference"),
                 *TUNE_GRID]) == 0  # fmt: skip
    out = tmp_path / "tune"
    args = ["tune-crf", "--logits", str(logits), "--out", str(out), *TUNE_GRID]
    capsys.readouterr()
    # Writes: the log's header, then one line per parameter set (no CRF, the reference,
    # 4 grid points), then the reports: the 4th write is the third set.
    disk_full.at(4)
    assert main(args) == 1
    match = MESSAGE.search(capsys.readouterr().err)
    assert match is not None and match["path"] == str(out / "search.jsonl")
    assert not (out / "ranking.json").exists() and _temporary_files(tmp_path) == []

    disk_full.at(None)
    assert main(args) == 0
    assert "3 sets (references included) scored now" in capsys.readouterr().out
    got = json.loads((out / "ranking.json").read_text())
    want = json.loads((tmp_path / "reference" / "ranking.json").read_text())
    for key in ("params", "no_crf", "reference", "ranking"):
        assert got[key] == want[key], key
    lines = (out / "search.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 6 and _temporary_files(tmp_path) == []


def test_segment_keeps_the_finished_images_and_resume_skips_them(
    tmp_path: Path, tiny_weights: Path, disk_full: DiskFull, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "in"
    for i, sample in enumerate(SyntheticScenes(4, size=(40, 56), seed=3)):
        save_png(inputs / f"img{i}.png", sample.image)
    base = ["segment", str(inputs), "--weights", str(tiny_weights), "--iterations", "2",
            "--no-progress", "--threads", "1"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "reference")]) == 0
    out = tmp_path / "out"
    capsys.readouterr()
    # Two writes per image (labels, overlay): the 6th is img2's overlay.
    disk_full.at(6)
    assert main([*base, "--out", str(out)]) == 1
    match = MESSAGE.search(capsys.readouterr().err)
    assert match is not None and match["path"] == str(out / "img2_overlay.jpg")
    assert sorted(p.name for p in out.iterdir()) == [
        "img0.png",
        "img0_overlay.jpg",
        "img1.png",
        "img1_overlay.jpg",
        "img2.png",
    ]
    assert _temporary_files(tmp_path) == []

    disk_full.at(None)
    assert main([*base, "--out", str(out), "--resume"]) == 0
    assert "segmented 2 of 4 image(s) (2 done before)" in capsys.readouterr().out
    reference = tmp_path / "reference"
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference.iterdir())
    for path in reference.iterdir():
        assert (out / path.name).read_bytes() == path.read_bytes(), path.name
