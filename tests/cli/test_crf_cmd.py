"""`deeplab crf` end to end on the real photos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deeplab.cli import main
from deeplab.crf import CRFParams


def test_refine_coarse_annotation(shared_data, tmp_path, capsys) -> None:
    ex = shared_data / "crf_examples"
    out = tmp_path / "out.png"
    probs_out = tmp_path / "q.npy"
    code = main(
        [
            "crf",
            str(ex / "im1.png"),
            "--labels",
            str(ex / "anno1.png"),
            "--unknown",
            "black",
            "--crf",
            "krahenbuhl2013",
            "--iterations",
            "3",
            "--out",
            str(out),
            "--save-probs",
            str(probs_out),
        ]
    )
    assert code == 0
    assert "3 iterations" in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.mode == "P"
        refined = np.array(im)
    coarse = np.array(Image.open(ex / "anno1.png"))
    black = 2  # anno1's palette entry 2 is black: "unknown"
    assert refined.shape == coarse.shape
    assert set(np.unique(refined)) == {0, 1}
    known = coarse != black
    assert (refined[known] == coarse[known]).mean() > 0.9
    q = np.load(probs_out)
    assert q.shape == (2, *coarse.shape)


def test_refine_probabilities_with_params_file(shared_data, tmp_path) -> None:
    ex = shared_data / "crf_examples"
    h, w = np.array(Image.open(ex / "im2.png")).shape[:2]
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=(h, w)).transpose(2, 0, 1).astype(np.float32)
    np.save(tmp_path / "p.npy", probs)
    params = tmp_path / "crf.json"
    CRFParams.preset("deeplab").replace(iterations=2).save(params)
    out = tmp_path / "out.png"
    code = main(
        [
            "crf",
            str(ex / "im2.png"),
            "--probs",
            str(tmp_path / "p.npy"),
            "--crf",
            str(params),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert np.array(Image.open(out)).max() <= 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--probs", "missing.npy"], "missing.npy"),
        (["--labels", "{ex}/anno2.png"], "does not match"),
        (["--labels", "{ex}/anno1.png", "--theta-alpha", "-3"], "theta_alpha"),
        (["--labels", "{ex}/anno1.png", "--crf", "nope"], "neither a preset"),
    ],
)
def test_errors_are_reported_not_raised(shared_data, tmp_path, capsys, extra, message) -> None:
    ex = shared_data / "crf_examples"
    args = [a.format(ex=ex) for a in extra]
    code = main(["crf", str(ex / "im1.png"), *args, "--out", str(tmp_path / "o.png")])
    assert code == 1
    assert message in capsys.readouterr().err
