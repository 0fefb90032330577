"""The shipped CamVid model: its recorded val scores reproduce, here and on the full split.

``deeplab/assets/camvid-results.json`` holds the figures `benchmarks/camvid.sh` measured
when the checkpoint was made. The network's float arithmetic may differ between CPUs and
thread counts (convolution summation order), which moves a handful of argmax pixels; the
CRF is bit-identical everywhere. Hence the tolerances: 0.5 points of mean IoU on the six
shipped photos (about 800,000 pixels), 0.3 points on the 101 val photos.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deeplab.data import CAMVID_CLASSES, CamVid
from deeplab.evaluate import evaluate
from deeplab.models import load_model, shipped_camvid_root, shipped_crf_params, shipped_weights


@pytest.fixture(scope="module")
def recorded() -> dict:
    from importlib import resources

    ref = resources.files("deeplab").joinpath("assets", "camvid-results.json")
    return json.loads(ref.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def model():
    path = shipped_weights("camvid")
    assert path is not None, "the package must ship deeplab/assets/ CamVid weights"
    net = load_model(path).eval()
    assert net.class_names == CAMVID_CLASSES
    return net


def test_the_six_shipped_photos_score_as_recorded(one_thread, recorded: dict, model) -> None:
    root = shipped_camvid_root()
    assert root is not None
    expected = recorded["shipped_photos"]
    result = evaluate(model, CamVid(root, "val"), crf=shipped_crf_params("camvid"))
    assert result.num_images == expected["images"] == 6
    assert result.crf is not None
    assert 100 * result.mean_iou == pytest.approx(expected["dcnn_mean_iou"], abs=0.5)
    assert 100 * result.crf.mean_iou() == pytest.approx(expected["tuned_crf_mean_iou"], abs=0.5)


@pytest.mark.slow
def test_the_val_split_scores_as_recorded(
    one_thread, camvid_root: Path, recorded: dict, model
) -> None:
    expected = recorded["val"]
    result = evaluate(model, CamVid(camvid_root, "val"))
    assert result.num_images == expected["images"] == 101
    assert 100 * result.mean_iou == pytest.approx(expected["dcnn_mean_iou"], abs=0.3)
    assert 100 * result.plain.pixel_accuracy() == pytest.approx(
        expected["dcnn_pixel_accuracy"], abs=0.3
    )
