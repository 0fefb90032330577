"""`deeplab train`: options for every recipe field, their precedence, an end-to-end run."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import numba
import pytest
import torch

from deeplab.cli import build_parser, main
from deeplab.cli.train_cmd import resolve
from deeplab.train import DataSpec, Recipe, recipe_for

TINY = ["--model", "deeplab-largefov-tiny", "--iterations", "2", "--batch", "2", "--crop", "41",
        "--workers", "0", "--synthetic-count", "6", "--synthetic-size", "48", "48",
        "--threads", "1", "--no-progress"]  # fmt: skip


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    # --threads 1 sets torch's and numba's thread counts for the process: put them back.
    before = torch.get_num_threads(), numba.get_num_threads()
    yield
    torch.set_num_threads(before[0])
    numba.set_num_threads(before[1])


def _parse(*argv: str):
    return build_parser().parse_args(["train", *argv])


def test_every_recipe_field_has_an_option(tmp_path: Path) -> None:
    argv = ["--out", str(tmp_path)]
    for f in dataclasses.fields(Recipe):
        option = "--" + f.name.replace("_", "-")
        value = {
            "model": "deeplab",
            "init": "w.safetensors",
            "amp": "bf16",
            "class_balance": "sqrt_median_frequency",
        }.get(f.name)
        if f.type in ("bool", "bool | None"):
            argv.append(option if f.name == "mirror" else f"--no-{option[2:]}")
            continue
        argv += [option, value or ("3" if "int" in f.type else "0.5")]
    recipe, _ = resolve(_parse(*argv[:-2], "--batch", "6"))
    assert recipe.model == "deeplab" and recipe.init == "w.safetensors" and recipe.amp == "bf16"
    assert recipe.iterations == 3 and recipe.lr == 0.5 and recipe.batch == 6
    assert recipe.mirror is True and recipe.freeze_base is False
    assert recipe.class_balance == "sqrt_median_frequency"


def test_precedence_paper_then_config_then_options(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"model": "deeplab", "lr": 0.01, "iterations": 100}))
    recipe, data = resolve(_parse("--out", str(tmp_path / "run"), "--config", str(config),
                                  "--iterations", "7"))  # fmt: skip
    assert (recipe.model, recipe.lr, recipe.iterations, recipe.crop) == ("deeplab", 0.01, 7, 306)
    assert recipe.init == "vgg16_128" and data == DataSpec()
    recipe, _ = resolve(_parse("--out", str(tmp_path), "--config", str(config), "--init", "none"))
    assert recipe.init is None
    args = _parse("--out", str(tmp_path), "--model", "deeplab-largefov", "--data", "voc",
                  "--voc-root", "/v", "--split", "train")  # fmt: skip
    recipe, data = resolve(args)
    assert recipe == recipe_for("deeplab-largefov")
    assert (data.kind, data.voc_root, data.split) == ("voc", "/v", "train")


def test_train_then_resume_reads_the_run_config(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run), "--stop-at", "1"]) == 0
    assert "stopped at iteration 1/2" in capsys.readouterr().out
    # --resume needs neither --model nor the data options: config.json has them.
    args = _parse("--out", str(run), "--resume")
    recipe, data = resolve(args)
    assert recipe.crop == 41 and data.synthetic_count == 6 and data.synthetic_size == (48, 48)
    assert main(["train", "--out", str(run), "--resume", "--threads", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "finished at iteration 2/2" in out and "model.safetensors" in out
    assert (run / "model.safetensors").is_file() and (run / "training_curve.png").is_file()


def test_errors_are_reported_not_raised(tmp_path: Path, capsys) -> None:
    assert main(["train", "--out", str(tmp_path)]) == 1
    assert "no model given" in capsys.readouterr().err
    assert main(["train", *TINY, "--out", str(tmp_path), "--batch", "3", "--accumulate", "2"]) == 1
    assert "divisible" in capsys.readouterr().err


def test_crf_end_to_end_from_the_command_line(tmp_path: Path, capsys) -> None:
    from deeplab.crf import CRFParams
    from deeplab.models import build_model, save_model

    net = tmp_path / "net.safetensors"
    save_model(build_model("deeplab-largefov-tiny", num_classes=6), net, source="test")
    crf = tmp_path / "small.json"
    CRFParams(w1=4, theta_alpha=6, theta_beta=6, w2=3, theta_gamma=2).save(crf)
    run = tmp_path / "run"
    argv = [*TINY, "--crop", "33", "--init", str(net), "--crf-end-to-end", "--crf", str(crf),
            "--crf-train-iterations", "1", "--out", str(run)]  # fmt: skip
    assert main(["train", *argv]) == 0
    assert "finished at iteration 2/2" in capsys.readouterr().out
    learned = CRFParams.load(run / "crf.json")
    assert learned.theta_alpha == 6 and learned.iterations == 10
    assert json.loads((run / "config.json").read_text())["recipe"]["crf_train_iterations"] == 1
    assert main(["train", *TINY, "--out", str(tmp_path / "bad"), "--crf-end-to-end",
                 "--crf", "no-such-preset"]) == 1  # fmt: skip
    assert "neither a preset" in capsys.readouterr().err


def test_classifier_lr_mult_help_is_not_contradictory() -> None:
    sub = build_parser()._subparsers._group_actions[0].choices["train"]
    (action,) = [a for a in sub._actions if "--classifier-lr-mult" in a.option_strings]
    assert "paper: 0.01" not in action.help and "(default 10.0)" in action.help
    assert "10" in action.help.split("(default")[0]


def test_a_failed_start_leaves_no_config(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    missing = tmp_path / "missing.safetensors"
    assert main(["train", *TINY, "--init", str(missing), "--out", str(run)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.safetensors" in err[0]
    assert not (run / "config.json").exists()


def test_a_run_that_collapses_to_one_class_ends_with_a_warning(tmp_path: Path, capsys) -> None:
    from deeplab.models import build_model, save_model

    # A network whose classifier favours the background by far: after two tiny steps it
    # still predicts nothing else.
    net = build_model("deeplab-largefov-tiny", num_classes=6)
    with torch.no_grad():
        net.fc8.bias[0] = 1e3
    start = tmp_path / "background.safetensors"
    save_model(net, start, source="test")
    run = tmp_path / "run"
    argv = [*TINY, "--init", str(start), "--lr", "1e-9", "--out", str(run)]
    assert main(["train", *argv]) == 0
    captured = capsys.readouterr()
    assert "finished at iteration 2/2" in captured.out
    last = captured.err.strip().splitlines()[-1]
    assert "warning" in last and "only 'background'" in last and "collapsed" in last
    # A run that does not collapse says nothing of the kind.
    assert main(["train", *TINY, "--out", str(tmp_path / "fresh")]) == 0
    assert "collapsed" not in capsys.readouterr().err
