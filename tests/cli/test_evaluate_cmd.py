"""`deeplab evaluate`: network and saved-logits paths, CRF choice, report files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numba
import pytest
import torch

from deeplab.cli import main
from deeplab.crf import CRFParams
from deeplab.models import build_model, save_model

DATA = ["--synthetic-count", "3", "--synthetic-size", "48", "48", "--threads", "1",
        "--no-progress"]  # fmt: skip


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    # --threads 1 sets torch's and numba's thread counts for the process: put them back.
    before = torch.get_num_threads(), numba.get_num_threads()
    yield
    torch.set_num_threads(before[0])
    numba.set_num_threads(before[1])


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "m.safetensors"
    save_model(build_model("deeplab-largefov-tiny", num_classes=6), path)
    return path


def test_network_then_saved_logits(tmp_path: Path, weights: Path, capsys) -> None:
    crf = tmp_path / "crf.json"
    CRFParams(w1=3, theta_alpha=10, theta_beta=10, iterations=3).save(crf)
    out1, logits = tmp_path / "e1", tmp_path / "logits"
    code = main(["evaluate", "--weights", str(weights), "--crf", str(crf), "--out", str(out1),
                 "--save-logits", str(logits), "--logits-dtype", "float32", "--trimap",
                 *DATA])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "| deeplab-largefov-tiny-CRF |" in printed and "3 images" in printed
    first = json.loads((out1 / "results.json").read_text())
    assert first["model"] == "deeplab-largefov-tiny" and first["crf_params"]["w1"] == 3
    assert first["data"]["synthetic_seed"] == 1  # held out from training's seed 0
    assert {p.name for p in out1.iterdir()} >= {"results.json", "results.md", "confusion.png",
                                                 "confusion_crf.png", "trimap.png"}  # fmt: skip
    assert len(list(logits.glob("*.npz"))) == 3
    # Re-score from the saved logits: the same numbers, no network; --w1 overrides the file.
    out2 = tmp_path / "e2"
    assert main(["evaluate", "--from-logits", str(logits), "--crf", str(crf), "--out", str(out2),
                 *DATA]) == 0  # fmt: skip
    second = json.loads((out2 / "results.json").read_text())
    assert second["without_crf"] == first["without_crf"]
    assert second["with_crf"] == first["with_crf"]
    out3 = tmp_path / "e3"
    assert main(["evaluate", "--from-logits", str(logits), "--crf", str(crf), "--w1", "0",
                 "--w2", "0", "--out", str(out3), *DATA]) == 0  # fmt: skip
    third = json.loads((out3 / "results.json").read_text())
    assert third["with_crf"]["confusion_matrix"] == first["without_crf"]["confusion_matrix"]


def test_crf_none_and_the_default_preset(tmp_path: Path, weights: Path) -> None:
    assert main(["evaluate", "--weights", str(weights), "--crf", "none",
                 "--out", str(tmp_path / "a"), *DATA]) == 0  # fmt: skip
    assert json.loads((tmp_path / "a" / "results.json").read_text())["with_crf"] is None
    assert main(["evaluate", "--weights", str(weights), "--out", str(tmp_path / "b"),
                 "--limit", "1", *DATA]) == 0  # fmt: skip
    result = json.loads((tmp_path / "b" / "results.json").read_text())
    assert result["crf_params"] == CRFParams.preset("deeplab-largefov").to_dict()
    assert result["num_images"] == 1


def test_needs_weights_or_saved_logits(tmp_path: Path, weights: Path, capsys) -> None:
    assert main(["evaluate", "--out", str(tmp_path), *DATA]) == 1
    assert "exactly one of --weights and --from-logits" in capsys.readouterr().err
    code = main(["evaluate", "--weights", str(weights), "--from-logits", str(tmp_path),
                 "--out", str(tmp_path), *DATA])  # fmt: skip
    assert code == 1
