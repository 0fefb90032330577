"""`deeplab segment` and deeplab.segment: inputs, outputs, weights messages, failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab.cli import main
from deeplab.data import SyntheticScenes
from deeplab.data.classes import read_label_png
from deeplab.data.image_io import save_png
from deeplab.segment import expand_inputs, overlay


@pytest.fixture(scope="module")
def weights(tiny_weights: Path) -> Path:
    return tiny_weights


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    for i, sample in enumerate(SyntheticScenes(2, size=(48, 64), seed=7)):
        save_png(folder / ("sub" if i else "") / f"img{i}.png", sample.image)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_expand_inputs_folders_globs_files_and_clashes(images: Path) -> None:
    found, problems = expand_inputs(
        [images, images / "img0.png", str(images / "**" / "img1.png"), images / "missing.png"]
    )
    names = {i.path.name: i.name for i in found}
    # Folder entries keep their sub-path; img0 given twice is segmented once.
    assert names == {"broken.png": "broken", "img0.png": "img0", "img1.png": "sub/img1"}
    assert len(found) == 3
    assert problems == [f"{images / 'missing.png'}: no such file or folder"]
    other = images.parent / "other"
    save_png(other / "img0.png", np.zeros((8, 8, 3), np.uint8))
    found, _ = expand_inputs([images / "img0.png", other / "img0.png"])
    assert [i.name for i in found] == ["img0", "img0-2"]
    _, problems = expand_inputs([str(images / "*.jpg"), images.parent / "other" / "none"])
    assert "no image matches" in problems[0] and "no such file" in problems[1]


def test_segment_command_writes_outputs_and_reports_failures(
    images: Path, weights: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    argv = [
        "segment",
        str(images),
        str(tmp_path / "nowhere.png"),
        "--out",
        str(out),
        "--weights",
        str(weights),
        "--save-probs",
        "--iterations",
        "3",
        "--no-progress",
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "trained on synthetic shapes" in err and "deeplab convert" in err
    assert "broken.png" in err and "nowhere.png: no such file" in err
    assert "2 input(s) failed" in err
    labels = read_label_png(out / "img0.png")
    assert labels.shape == (48, 64) and labels.max() < 6
    with Image.open(out / "img0.png") as im:
        assert im.mode == "P"
    assert (out / "sub" / "img1.png").is_file() and (out / "sub" / "img1_overlay.jpg").is_file()
    probs = np.load(out / "img0_probs.npy")
    assert probs.shape == (6, 48, 64) and probs.dtype == np.float16
    np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=5e-3)
    assert not (out / "broken.png").exists()
    assert not list(out.rglob(".*.tmp"))  # atomic writes leave no temporaries


def test_segment_refuses_images_too_large_for_memory(
    images: Path, weights: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import deeplab.crf.dense as dense

    monkeypatch.setattr(dense, "available_memory", lambda: 10_000)
    out = tmp_path / "out"
    argv = [
        "segment",
        str(images / "img0.png"),
        "--out",
        str(out),
        "--weights",
        str(weights),
        "--no-progress",
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "too large" in err and "GiB" in err and "needs about" in err
    assert not (out / "img0.png").exists()
    # Without the CRF the same image goes through.
    assert main([*argv, "--crf", "none"]) == 0
    assert (out / "img0.png").is_file()


def test_segment_never_overwrites_its_inputs(images: Path, weights: Path, capsys) -> None:
    argv = [
        "segment",
        str(images / "img0.png"),
        "--out",
        str(images),
        "--weights",
        str(weights),
        "--no-progress",
    ]
    before = (images / "img0.png").read_bytes()
    assert main(argv) == 1
    assert "would overwrite an input" in capsys.readouterr().err
    assert (images / "img0.png").read_bytes() == before


def test_camvid_overlays_colour_every_class() -> None:
    from deeplab.data import camvid_palette

    image = np.full((2, 2, 3), 200, np.uint8)
    labels = np.zeros((2, 2), np.uint8)  # 0 is sky in CamVid, not a background
    out = overlay(image, labels, palette=camvid_palette(), background=None)
    assert (out != 200).any(axis=-1).all()


def test_overlay_leaves_background_pixels_alone() -> None:
    image = np.full((4, 5, 3), 200, np.uint8)
    labels = np.zeros((4, 5), np.uint8)
    labels[1:3, 1:3] = 1
    out = overlay(image, labels)
    assert (out[0, 0] == 200).all()
    assert (out[1, 1] != 200).any()
