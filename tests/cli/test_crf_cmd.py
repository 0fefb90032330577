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


def test_help_shows_the_defaults(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["crf", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default 0.7)" in text  # --confidence
    assert "Default: none" in text  # --unknown
    assert "(default deeplab-largefov)" in text and "(default: from --crf)" in text


def test_black_pixels_are_flagged_not_silently_a_class(shared_data, tmp_path, capsys) -> None:
    ex = shared_data / "crf_examples"
    argv = ["crf", str(ex / "im1.png"), "--labels", str(ex / "anno1.png"), "--iterations", "2"]
    assert main([*argv, "--out", str(tmp_path / "a.png")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "warning" in err[0] and "black" in err[0]
    assert "--unknown black" in err[0] and "anno1.png" in err[0]
    assert set(np.unique(np.array(Image.open(tmp_path / "a.png")))) <= {0, 1, 2}
    # Saying what black is, either way, is heard and silences the warning.
    assert main([*argv, "--unknown", "none", "--out", str(tmp_path / "b.png")]) == 0
    assert capsys.readouterr().err == ""
    assert main([*argv, "--unknown", "black", "--out", str(tmp_path / "c.png")]) == 0
    assert capsys.readouterr().err == ""
    assert set(np.unique(np.array(Image.open(tmp_path / "c.png")))) == {0, 1}


def test_weights_out_of_range_are_named_as_in_the_paper(shared_data, tmp_path, capsys) -> None:
    ex = shared_data / "crf_examples"
    params = tmp_path / "huge.json"
    CRFParams(w2=1e30).save(params)
    argv = ["crf", str(ex / "im1.png"), "--labels", str(ex / "anno1.png"), "--unknown", "black"]
    assert main([*argv, "--w1", "1e30", "--out", str(tmp_path / "o.png")]) == 1
    err = capsys.readouterr().err
    assert "--w1 1e+30" in err and "compat" not in err
    assert main([*argv, "--crf", str(params), "--out", str(tmp_path / "o.png")]) == 1
    err = capsys.readouterr().err
    assert "w2 = 1e+30" in err and "huge.json" in err and "compat" not in err


def test_a_text_file_as_probs_gets_a_plain_answer(shared_data, tmp_path, capsys) -> None:
    ex = shared_data / "crf_examples"
    text = tmp_path / "probs.npy"
    text.write_text("0.1 0.9\n0.2 0.8\n")
    out = tmp_path / "o.png"
    assert main(["crf", str(ex / "im1.png"), "--probs", str(text), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "not a .npy file" in err and "numpy.save" in err
    assert "pickle" not in err
