"""What a new user sees: one-line errors printed before any network loads, no progress bar
around an error, notices for slow start-ups and for the CRF's one-time compilation."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import deeplab.cli as cli
import deeplab.cli.feedback as feedback
import deeplab.demo
import deeplab.models
from deeplab.cli import main
from deeplab.crf import CRFParams
from deeplab.data import SyntheticScenes
from deeplab.data.image_io import save_png


@pytest.fixture()
def files(tmp_path: Path) -> Path:
    scene = SyntheticScenes(1, size=(40, 48), seed=3)[0]
    save_png(tmp_path / "scene.png", scene.image)
    np.save(tmp_path / "probs.npy", np.full((2, 40, 48), 0.5, np.float32))
    (tmp_path / "table.npy").write_text("0.5 0.5\n0.5 0.5\n")  # text, not .npy
    return tmp_path


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to load a network fails the test: the errors must come first."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a network was loaded before the command line was checked")

    monkeypatch.setattr(deeplab.models, "load_network", refuse)
    monkeypatch.setattr(deeplab.demo, "run_demo", refuse)
    monkeypatch.setattr(deeplab.demo, "load_network", refuse)


CASES = [
    (["segment", "{d}/missing.png", "--out", "{d}/o"], "missing.png"),
    (["segment", "{d}/scene.png", "--crf", "nope", "--out", "{d}/o"], "nope"),
    (["segment", "{d}/scene.png", "--w1", "1e30", "--out", "{d}/o"], "--w1"),
    (["segment", "{d}/scene.png", "--theta-alpha", "-1", "--out", "{d}/o"], "theta_alpha"),
    (["segment", "{d}/scene.png"], "--out"),
    (["crf", "{d}/scene.png", "--probs", "{d}/table.npy", "--out", "{d}/o.png"], "--probs"),
    (
        ["crf", "{d}/scene.png", "--probs", "{d}/probs.npy", "--w1", "1e30", "--out", "{d}/o.png"],
        "--w1 1e+30",
    ),
    (
        [
            "crf",
            "{d}/scene.png",
            "--probs",
            "{d}/probs.npy",
            "--unknown",
            "x",
            "--out",
            "{d}/o.png",
            "--labels",
            "{d}/scene.png",
        ],
        "--labels",
    ),
    (["crf", "{d}/nothing.png", "--probs", "{d}/probs.npy", "--out", "{d}/o.png"], "nothing.png"),
    (["demo", "--scenes", "0", "--out", "{d}/o"], "--scenes"),
    (["demo", "--weights", "{d}/missing.safetensors", "--out", "{d}/o"], "missing.safetensors"),
    (["demo", "--crf", "nope", "--out", "{d}/o"], "nope"),
    (["serve", "--crf", "nope"], "nope"),
    (["serve", "--port", "0"], "--port"),
    (["export-onnx", "--out", "{d}/model.txt"], "--out"),
    (["tune-crf", "--logits", "{d}/none", "--out", "{d}/o"], "--logits"),
    (["evaluate", "--out", "{d}/o"], "--weights"),
    (["train", "--out", "{d}/o", "--lr", "fast"], "--lr"),
]


@pytest.mark.parametrize(("argv", "named"), CASES, ids=[" ".join(c[0][:2]) for c in CASES])
def test_errors_are_one_line_naming_the_option_or_file(
    files: Path, no_network: None, capsys: pytest.CaptureFixture[str], argv: list[str], named: str
) -> None:
    try:
        code = main([a.format(d=files) for a in argv])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code in (1, 2)
    captured = capsys.readouterr()
    # (The start-up notice may come first on a busy machine; it is not part of the error.)
    lines = [line for line in captured.err.splitlines() if line.strip()
             and not line.startswith("deeplab: loading PyTorch")]  # fmt: skip
    assert len(lines) == 1, captured.err
    assert "error" in lines[0] and named in lines[0]
    assert "%|" not in captured.err and "Traceback" not in captured.err


def test_segment_lists_skipped_files_after_the_bar(
    files: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (files / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    argv = ["segment", str(files / "scene.png"), str(files / "broken.png"), "--weights",
            str(tiny_weights), "--iterations", "2", "--out", str(files / "out")]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "100%" in err  # the bar ran (not --no-progress)
    skipped = err.index("skipped")
    assert "broken.png" in err[skipped:].splitlines()[0]
    assert skipped > err.rindex("100%")  # not printed through the bar
    # The weights warning is one line, and says how to get real weights.
    warnings = [line for line in err.splitlines() if "synthetic shapes" in line]
    assert len(warnings) == 1 and "deeplab convert" in warnings[0]
    assert "!!!" not in err


def test_demo_bar_is_cleared_when_the_run_fails(
    tiny_weights: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def fail_midway(out: object, options: object, progress) -> None:
        progress("evaluate", 1, 3)
        raise ValueError("scene 2 is broken")

    monkeypatch.setattr(deeplab.demo, "run_demo", fail_midway)
    argv = ["demo", "--weights", str(tiny_weights), "--scenes", "3", "--out", str(tmp_path)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "deeplab demo: error: scene 2 is broken"
    # The bar's line was erased (tqdm ends a cleared bar with a carriage return).
    assert err.startswith("deeplab demo: score")
    assert err.split("\n")[-2].rstrip("\r").endswith("scene 2 is broken")


def test_slow_start_up_is_announced(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    build = cli.build_parser

    def slow_build():
        time.sleep(0.5)
        return build()

    monkeypatch.setattr(cli, "build_parser", slow_build)
    monkeypatch.setattr(cli, "STARTUP_NOTICE_S", 0.05)
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr()
    assert "loading PyTorch" in out.err and "usage: deeplab" in out.out
    # Quick start-ups stay quiet.
    monkeypatch.setattr(cli, "build_parser", build)
    monkeypatch.setattr(cli, "STARTUP_NOTICE_S", 30.0)
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "loading PyTorch" not in capsys.readouterr().err


def test_crf_compilation_is_announced_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    params = CRFParams.preset("deeplab-largefov")
    feedback.prepare_crf(params, quiet=True)
    # After a run the kernels are in numba's cache, and the probe can tell.
    assert feedback.crf_kernels_cached() is True
    feedback.prepare_crf(params)
    assert "compiling" not in capsys.readouterr().err
    monkeypatch.setattr(feedback, "crf_kernels_cached", lambda: False)
    feedback.prepare_crf(params)
    err = capsys.readouterr().err
    assert "compiling the CRF kernels" in err and "once" in err and "cache" in err
    feedback.prepare_crf(None)  # no CRF: nothing to prepare
    assert capsys.readouterr().err == ""


def test_one_line_joins_multi_line_messages() -> None:
    assert cli.one_line("first\n  second\n\nthird") == "first; second; third"
