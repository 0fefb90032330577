"""`deeplab tune-crf`: end to end from a freshly initialised tiny network's saved scores,
resuming, and the best parameters fed back to `crf` and `evaluate` through --crf."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deeplab.cli import main
from deeplab.crf import CRFParams
from deeplab.data import SyntheticScenes
from deeplab.data.classes import write_label_png
from deeplab.models import build_model, save_model

DATA = ["--synthetic-count", "3", "--synthetic-size", "48", "48"]
GRID = ["--w1", "2:4:2", "--theta-alpha", "20:40:20", "--theta-beta", "5", "--iterations", "2",
        "--rounds", "1", "--workers", "0", "--no-progress"]  # fmt: skip


# One thread for torch and numba (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def logits(tmp_path: Path) -> Path:
    """Scores of 3 small held-out scenes from a freshly initialised tiny network."""
    torch.manual_seed(0)
    weights = tmp_path / "m.safetensors"
    save_model(build_model("deeplab-largefov-tiny", num_classes=6), weights)
    folder = tmp_path / "logits"
    code = main(["evaluate", "--weights", str(weights), "--crf", "none", "--save-logits",
                 str(folder), "--logits-dtype", "float32", "--out", str(tmp_path / "eval"),
                 "--threads", "1", "--no-progress", *DATA])  # fmt: skip
    assert code == 0
    return folder


def test_search_report_and_best_params_round_trip(tmp_path: Path, logits: Path, capsys) -> None:
    out = tmp_path / "tune"
    assert main(["tune-crf", "--logits", str(logits), "--out", str(out), *GRID, *DATA]) == 0
    printed = capsys.readouterr().out
    assert "reference: mIoU" in printed and "(deeplab-largefov)" in printed  # the model's preset
    assert {p.name for p in out.iterdir()} >= {"search.jsonl", "ranking.md", "ranking.json",
                                               "best_crf.json", "heatmap.png"}  # fmt: skip
    report = json.loads((out / "ranking.json").read_text())
    best = CRFParams.load(out / "best_crf.json")
    assert best == CRFParams.from_dict(report["params"]) == CRFParams.load(out / "ranking.json")
    assert report["num_images"] == 3 and report["round_sizes"][0] == 4
    assert report["space"]["theta_alpha"] == "20:40:20" and report["space"]["iterations"] == 2
    assert len(report["ranking"]) > 4  # the refinement round added points
    with Image.open(out / "heatmap.png") as im:
        assert im.format == "PNG" and im.size[0] > 200

    # Resuming a finished search scores nothing and gives the same table.
    assert main(["tune-crf", "--logits", str(logits), "--out", str(out), *GRID, *DATA]) == 0
    assert "0 sets (references included) scored now" in capsys.readouterr().out
    assert json.loads((out / "ranking.json").read_text())["ranking"] == report["ranking"]

    # `evaluate` takes the file and scores the best set as the search did.
    again = tmp_path / "again"
    assert main(["evaluate", "--from-logits", str(logits), "--crf", str(out / "best_crf.json"),
                 "--out", str(again), "--no-progress", *DATA]) == 0  # fmt: skip
    result = json.loads((again / "results.json").read_text())
    assert result["crf_params"] == best.to_dict()
    assert result["with_crf"]["mean_iou"] == pytest.approx(report["mean_iou"])
    assert result["without_crf"]["mean_iou"] == pytest.approx(report["no_crf"]["mean_iou"])

    # So do `crf` and `segment`, from the best-params file and from the ranking file.
    scene = SyntheticScenes(1, size=(48, 48), seed=1)[0]
    image, coarse = tmp_path / "scene.png", tmp_path / "coarse.png"
    Image.fromarray(scene.image).save(image)
    write_label_png(coarse, np.where(scene.label == 255, 0, scene.label).astype(np.uint8))
    for crf in (out / "best_crf.json", out / "ranking.json"):
        refined = tmp_path / f"refined_{crf.stem}.png"
        assert main(["crf", str(image), "--labels", str(coarse), "--crf", str(crf),
                     "--out", str(refined)]) == 0  # fmt: skip
        assert refined.is_file()
        segmented = tmp_path / f"segment_{crf.stem}"
        assert main(["segment", str(image), "--weights", str(tmp_path / "m.safetensors"),
                     "--crf", str(crf), "--out", str(segmented), "--no-overlay",
                     "--no-progress", "--threads", "1"]) == 0  # fmt: skip
        assert (segmented / "scene.png").is_file()


def test_options_and_errors(tmp_path: Path, logits: Path, capsys) -> None:
    out = tmp_path / "t"
    grid = [*GRID[:8], "--rounds", "0", "--workers", "0", "--no-progress"]
    assert main(["tune-crf", "--logits", str(logits), "--out", str(out), "--reference", "none",
                 "--num-images", "2", *grid, *DATA]) == 0  # fmt: skip
    report = json.loads((out / "ranking.json").read_text())
    assert report["reference"] is None and report["num_images"] == 2
    assert len(report["ranking"]) == 4
    capsys.readouterr()
    assert main(["tune-crf", "--logits", str(logits), "--out", str(tmp_path / "u"),
                 "--theta-beta", "10:5:1", *DATA]) == 1  # fmt: skip
    assert "below its start" in capsys.readouterr().err
    assert main(["tune-crf", "--logits", str(tmp_path / "nothing"), "--out", str(tmp_path / "v"),
                 *grid, *DATA]) == 1  # fmt: skip
    assert "--logits" in (err := capsys.readouterr().err) and "no such folder" in err
    # Another image set in the same folder is refused rather than mixed in.
    assert main(["tune-crf", "--logits", str(logits), "--out", str(out), "--reference", "none",
                 "--num-images", "3", *grid, *DATA]) == 1  # fmt: skip
    assert "other images" in capsys.readouterr().err


def test_saved_scores_record_their_scenes(tmp_path: Path, logits: Path, capsys) -> None:
    meta = json.loads((logits / "meta.json").read_text())
    assert meta["data"]["synthetic_size"] == [48, 48] and meta["data"]["synthetic_count"] == 3
    # Neither the tuner nor re-scoring needs the data options again.
    grid = [*GRID[:8], "--rounds", "0", "--workers", "0", "--no-progress"]
    out = tmp_path / "t"
    assert main(["tune-crf", "--logits", str(logits), "--out", str(out), *grid]) == 0
    assert json.loads((out / "ranking.json").read_text())["num_images"] == 3
    captured = capsys.readouterr()
    notes = [line for line in captured.out.splitlines() if "wider range" in line]
    assert len(set(notes)) == len(notes)  # each note once
    assert "wider range" not in captured.err  # not logged a second time
    code = main(["evaluate", "--from-logits", str(logits), "--crf", str(out / "best_crf.json"),
                 "--out", str(tmp_path / "e"), "--no-progress"])  # fmt: skip
    assert code == 0
    assert json.loads((tmp_path / "e" / "results.json").read_text())["num_images"] == 3
