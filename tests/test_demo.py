"""The demo on the embedded default: files written and the CRF improving the coarse result."""

from __future__ import annotations

import json

import numpy as np

from deeplab.cli import main
from deeplab.data.classes import IGNORE_INDEX
from deeplab.demo import coarse_logits


def test_coarse_logits_blur_boundaries_at_stride_8() -> None:
    label = np.zeros((40, 48), np.uint8)
    label[8:30, 10:35] = 1
    label[7, 10:35] = IGNORE_INDEX
    logits = coarse_logits(label, 2, np.random.default_rng(0), noise=0.0)
    assert logits.shape == (2, 40, 48)
    pred = logits.argmax(0)
    assert pred[18, 20] == 1 and pred[0, 0] == 0
    margin = logits[1] - logits[0]
    # Scores change smoothly across the object's edge (no sharp step at stride 8).
    assert np.abs(np.diff(margin, axis=1)).max() < 1.0


def test_demo_command_writes_results(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--scenes", "2", "--iterations", "5"]) == 0
    assert "mean IoU" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["crf"]["mean_iou"] > results["coarse"]["mean_iou"]
    assert len(list(out.glob("scene_*.png"))) == 2
    assert "+ CRF" in (out / "results.md").read_text()
