"""Config files people write: the training recipe JSON and CRF parameter JSON.

Each case is an input that crashed (or was silently misread) before the fix named in the
README's reliability section; all must now be a ValueError/TypeError naming the problem.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deeplab.cli import main
from deeplab.crf import CRFParams
from deeplab.train import recipe_for, resolve_recipe

DEEP = b"[" * 100_000 + b"]" * 100_000
LONG_INT = b"7" * 5000

RECIPE_CASES = [
    (b"null", "expected a JSON object"),
    (b"[[1, 2]]", "expected a JSON object"),
    (b"[[[]]]", "expected a JSON object"),
    (b'"deeplab"', "expected a JSON object"),
    (b"\x82\xebM", "not UTF-8"),
    (DEEP, "nested too deeply"),
    (b'{"model": "deeplab", "batch": ' + LONG_INT + b"}", "not valid JSON"),
    (b'{"model": ["deeplab"]}', "model must be a variant name"),
    (b'{"model": "deeplab", "mirror": "no"}', "mirror must be bool"),
    (b'{"model": "deeplab", "iterations": 5.5}', "iterations must be int"),
    (b'{"model": "deeplab", "weight_decay": NaN}', "weight_decay must be float"),
    (b'{"model": "deeplab", "lr": Infinity}', "lr must be float"),
    (b'{"model": "deeplab", "momentum": "x"}', "momentum must be float"),
    (b'{"model": "deeplab", "lr": ' + b"7" * 400 + b"}", "lr must be float"),
    (b'{"model": "deeplab", "num_classes": true}', "num_classes must be int or null"),
    (b'{"model": "deeplab", "sped": 1}', "unknown recipe field"),
    (b'{"model": "deeplab"', "not valid JSON"),
]


@pytest.mark.parametrize(("data", "message"), RECIPE_CASES)
def test_bad_training_configs(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "recipe.json"
    path.write_bytes(data)
    with pytest.raises((ValueError, TypeError), match=message):
        resolve_recipe(config=path)


def test_the_cli_reports_a_bad_config_in_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "recipe.json"
    path.write_bytes(b'{"model": "deeplab-largefov-tiny", "mirror": "no"}')
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("deeplab train: error: mirror must be bool") and "Traceback" not in err


def test_a_valid_config_and_a_run_record_still_load(tmp_path: Path) -> None:
    import json

    recipe = recipe_for("deeplab-largefov")
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"recipe": recipe.to_dict(), "data": {"kind": "synthetic"}}))
    assert resolve_recipe(config=path) == recipe
    path.write_text(json.dumps({"_comment": "x", "model": "deeplab", "lr": 1, "mirror": False}))
    got = resolve_recipe(config=path)
    assert (got.lr, got.mirror) == (1, False)


CRF_CASES = [
    (b'{"w2": ' + b"1" + b"0" * 400 + b"}", "w2 must be a finite number"),
    (b'{"iterations": Infinity}', "iterations must be an integer"),
    (b'{"iterations": NaN}', "iterations must be an integer"),
    (b'{"iterations": "10"}', "iterations must be an integer"),
    (b'{"w1": "abc"}', "w1 must be a finite number >= 0, got the text"),
    (b'{"theta_alpha": "4"}', "theta_alpha must be a finite number > 0, got the text"),
    (b'{"theta_beta": [5]}', "theta_beta must be a finite number > 0"),
    (b'{"params": {"w1": null}, "score": 1.0}', "w1 must be a finite number"),
    (b"\x82\xebM", "not UTF-8"),
    (DEEP, "nested too deeply"),
    (b'{"w1": ' + LONG_INT + b"}", "not valid JSON"),
    (b"[1, 2]", "expected a mapping"),
    (b'{"normalization": "sideways"}', "normalization must be one of"),
]


@pytest.mark.parametrize(("data", "message"), CRF_CASES)
def test_bad_crf_parameter_files(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "crf.json"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=message) as info:
        CRFParams.load(path)
    assert "crf.json" in str(info.value)


def test_crf_parameter_round_trip_and_tune_result_form(tmp_path: Path) -> None:
    import json

    params = CRFParams(w1=5, theta_alpha=50, theta_beta=10, iterations=3)
    params.save(tmp_path / "p.json")
    assert CRFParams.load(tmp_path / "p.json") == params
    (tmp_path / "t.json").write_text(json.dumps({"params": params.to_dict(), "score": 0.7}))
    assert CRFParams.load(tmp_path / "t.json") == params
