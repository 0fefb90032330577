"""The demo: network + CRF on held-out synthetic scenes, and its self-contained report."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import deeplab.demo as demo
from deeplab.cli import main
from deeplab.crf import CRFParams, dense_crf_from_logits
from deeplab.data import IGNORE_INDEX, SyntheticScenes
from deeplab.data.synthetic import SYNTHETIC_CLASSES
from deeplab.demo import DemoOptions, main_class, run_demo, scene_panel
from deeplab.models import build_model, save_model, shipped_weights
from deeplab.models import shipped_crf_params as segment_crf
from deeplab.predict import Predictor


@pytest.fixture(scope="module")
def weights(tiny_weights: Path) -> Path:
    return tiny_weights


def test_main_class_ignores_background_and_void() -> None:
    label = np.zeros((6, 6), np.uint8)
    label[:2] = IGNORE_INDEX
    label[2:4, :3] = 4
    label[4, 0] = 2
    assert main_class(label, 6) == 4
    assert main_class(np.zeros((3, 3), np.uint8), 6) == 0


def test_belief_maps_are_the_marginals_after_those_iterations(weights: Path) -> None:
    from deeplab.models import load_model

    model = load_model(weights)
    predictor = Predictor(model)
    sample = SyntheticScenes(1, size=(48, 56), seed=9)[0]
    params = CRFParams(iterations=3)
    panel = scene_panel(predictor, sample, params, SYNTHETIC_CLASSES)
    titles = [t for t, _ in panel.beliefs]
    assert titles == ["DCNN output", "CRF iteration 1", "CRF iteration 2", "CRF iteration 10"]
    cls = SYNTHETIC_CLASSES.index(panel.belief_class)
    assert cls == main_class(sample.label, 6) and cls != 0
    logits = predictor.logits(sample.image)
    for (_, belief), its in zip(panel.beliefs[1:], (1, 2, 10), strict=True):
        q = dense_crf_from_logits(sample.image, logits, params.replace(iterations=its))
        np.testing.assert_allclose(belief, q[cls], atol=1e-5)
    softmax = np.exp(logits - logits.max(0)) / np.exp(logits - logits.max(0)).sum(0)
    np.testing.assert_allclose(panel.beliefs[0][1], softmax[cls], atol=1e-5)
    # The panel's CRF result is that of the parameters in use (3 iterations), not of 10.
    final = dense_crf_from_logits(sample.image, logits, params).argmax(0)
    np.testing.assert_array_equal(panel.crf, final)
    np.testing.assert_array_equal(panel.dcnn, logits.argmax(0))


def _images(html: str) -> list[bytes]:
    sources = re.findall(r'src="([^"]*)"', html)
    assert sources
    out = []
    for src in sources:
        assert src.startswith("data:image/png;base64,"), src[:60]
        out.append(base64.b64decode(src.split(",", 1)[1]))
    return out


def test_demo_command_writes_a_self_contained_report(weights: Path, tmp_path: Path, capsys):
    out = tmp_path / "demo"
    argv = [
        "demo",
        "--data",
        "synthetic",
        "--out",
        str(out),
        "--weights",
        str(weights),
        "--scenes",
        "3",
        "--panels",
        "2",
        "--size",
        "64",
        "72",
        "--iterations",
        "4",
        "--no-progress",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert re.search(r"3 held-out scenes: mean IoU DCNN \d+\.\d\d%, DCNN\+CRF \d+\.\d\d%", printed)
    assert "report:" in printed and "total" in printed
    html = (out / "report.html").read_text()
    images = _images(html)
    # 1 trimap figure, 2 confusion matrices + 2 scenes x (4 panels + 4 belief maps + the
    # belief maps' colour bar).
    assert len(images) == 1 + 2 + 2 * 9
    for data in images:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    assert "http://" not in html and "https://" not in html
    for text in (
        "Mean IoU",
        "DCNN+CRF",
        "CRF iteration 10",
        "triangle",
        "Trimap",
        "Confusion matrix, DCNN",
        "Confusion matrix, DCNN+CRF",
        "colour scale",
    ):
        assert text in html
    results = json.loads((out / "results.json").read_text())
    assert results["crf_params"]["iterations"] == 4
    assert results["with_crf"] is not None and "trimap" in results
    assert len(list((out / "scenes").glob("scene_*.png"))) == 2


def test_demo_without_shipped_checkpoint_says_how_to_train(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "shipped_weights", lambda data="camvid": None)
    with pytest.raises(FileNotFoundError, match="deeplab demo --data synthetic --train"):
        run_demo(tmp_path / "x", DemoOptions(data="synthetic", scenes=1))


def test_demo_refuses_a_checkpoint_for_other_classes(tmp_path: Path) -> None:
    path = tmp_path / "voc.safetensors"
    save_model(build_model("deeplab-largefov-tiny", num_classes=21), path, source="test")
    with pytest.raises(ValueError, match="synthetic scenes have"):
        run_demo(tmp_path / "x", DemoOptions(data="synthetic", scenes=1, weights=path))


def test_demo_trains_with_the_training_library(tmp_path: Path) -> None:
    stages: list[str] = []
    result = run_demo(
        tmp_path / "demo",
        DemoOptions(
            data="synthetic", scenes=2, size=(48, 48), panels=1, train=True, train_iterations=2
        ),
        progress=lambda stage, done, total: stages.append(stage),
    )
    assert result.weights == tmp_path / "demo" / "train" / "model.safetensors"
    assert result.weights.is_file() and (tmp_path / "demo" / "train" / "log.jsonl").is_file()
    assert stages[0] == "train" and "evaluate" in stages and "panels" in stages
    assert result.seconds["train"] > 0
    assert "Training curve" in result.report.read_text()


def test_shipped_checkpoint_gains_from_the_crf(tmp_path: Path) -> None:
    if shipped_weights("synthetic") is None:
        pytest.skip("this checkout has no shipped checkpoint (deeplab/assets)")
    result = run_demo(tmp_path / "demo", DemoOptions(data="synthetic", scenes=16, panels=0))
    ev = result.evaluation
    assert ev.crf is not None and ev.trimap_plain is not None and ev.trimap_crf is not None
    assert result.crf == segment_crf("synthetic")  # the tuned parameters shipped with it
    assert ev.mean_iou > 0.3  # trained: not just the background (1/6 = 0.17 then)
    assert ev.crf.mean_iou() > ev.mean_iou
    # The CRF's gain is at the boundaries (paper Fig. 5): the narrow trimap bands.
    plain, crf = ev.trimap_plain.mean_iou(), ev.trimap_crf.mean_iou()
    assert (crf[:4] > plain[:4]).all()


def test_train_recipe_and_size_come_from_the_shipped_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deeplab.demo import FALLBACK_RECIPE, demo_recipe, shipped_training

    monkeypatch.setattr(demo, "shipped_weights", lambda data="camvid": None)
    assert shipped_training() == (FALLBACK_RECIPE, (128, 128))
    recorded = {**FALLBACK_RECIPE, "lr": 0.02, "iterations": 1000, "lr_step": 800}
    path = tmp_path / "shipped.safetensors"
    save_model(
        build_model("deeplab-largefov-tiny", num_classes=6),
        path,
        class_names=SYNTHETIC_CLASSES,
        extra={"recipe": json.dumps(recorded), "data": json.dumps({"synthetic_size": [96, 80]})},
    )
    monkeypatch.setattr(demo, "shipped_weights", lambda data="camvid": path)
    assert shipped_training() == (recorded, (96, 80))
    recipe = demo_recipe()
    assert (recipe.lr, recipe.iterations, recipe.lr_step, recipe.crop) == (0.02, 1000, 800, 129)
    assert demo_recipe(500).lr_step == 400  # the step moves with the run's length


def test_panels_show_scenes_where_the_network_finds_the_main_class() -> None:
    from deeplab.demo import panel_scenes
    from deeplab.models import load_model, shipped_weights
    from deeplab.predict import Predictor

    path = shipped_weights("synthetic")
    assert path is not None
    predictor = Predictor(load_model(path))
    scenes = SyntheticScenes(12, size=(128, 128), seed=1)  # the demo's held-out family

    def found(i: int) -> float:
        label = scenes[i].label
        cls = main_class(label, 6)
        dcnn = predictor.logits(scenes[i].image).argmax(0)
        return float((dcnn[label == cls] == cls).mean()) if cls else 0.0

    # Taken in order, half of the first four scenes would show an object the network missed.
    assert sum(found(i) < 0.3 for i in range(4)) >= 2
    picked = panel_scenes(predictor, scenes, 4, 6)
    assert len(picked) == 4 and len(set(picked)) == 4
    assert all(found(i) >= 0.3 for i in picked)
    # Too few such scenes: the others fill in, scenes with an object first.
    assert len(panel_scenes(predictor, scenes, 12, 6)) == 12


def test_colour_bar_runs_from_one_to_zero() -> None:
    from deeplab.report import belief_image, colour_bar

    html = colour_bar()
    (src,) = re.findall(r'src="([^"]*)"', html)
    with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
        strip = np.array(im.convert("RGB"))
    np.testing.assert_array_equal(strip[0, 0], belief_image(np.ones((1, 1)))[0, 0])
    np.testing.assert_array_equal(strip[-1, 0], belief_image(np.zeros((1, 1)))[0, 0])
    assert html.index("1.0") < html.index("0.5") < html.index("0.0")
