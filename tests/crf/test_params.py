"""CRFParams: the paper's notation, presets, validation and JSON round trip."""

from __future__ import annotations

import json

import pytest

from deeplab.crf import CRFParams


def test_presets_hold_the_authors_values() -> None:
    expected = {
        "deeplab": (5, 50, 10),
        "deeplab-msc": (3, 95, 3),
        "deeplab-largefov": (4, 121, 5),
        "deeplab-msc-largefov": (4, 83, 5),
    }
    for name, (w1, ta, tb) in expected.items():
        p = CRFParams.preset(name)
        assert (p.w1, p.theta_alpha, p.theta_beta) == (w1, ta, tb)
        assert (p.w2, p.theta_gamma, p.iterations, p.normalization) == (3, 3, 10, "after")
    k = CRFParams.preset("krahenbuhl2013")
    assert (k.w1, k.theta_alpha, k.theta_beta, k.w2, k.theta_gamma) == (10, 80, 13, 3, 3)
    assert (k.iterations, k.normalization) == (5, "symmetric")
    assert set(CRFParams.preset_names()) == {*expected, "krahenbuhl2013"}
    assert CRFParams() == CRFParams.preset("deeplab-largefov")


def test_unknown_preset_lists_the_names() -> None:
    with pytest.raises(ValueError, match="deeplab-largefov"):
        CRFParams.preset("nope")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("theta_alpha", 0),
        ("theta_beta", -1),
        ("theta_gamma", float("nan")),
        ("theta_alpha", 1e-300),  # positive, but 0 in float32
        ("w1", -0.5),
        ("w2", float("inf")),
        ("iterations", -1),
        ("iterations", 2.5),
        ("normalization", "sideways"),
    ],
)
def test_invalid_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        CRFParams(**{field: value})


def test_json_round_trip_and_result_files(tmp_path) -> None:
    p = CRFParams.preset("deeplab-msc").replace(iterations=7, w1=None)
    path = tmp_path / "crf.json"
    p.save(path)
    assert CRFParams.load(path) == p
    assert CRFParams.resolve(str(path)) == p
    assert CRFParams.resolve("deeplab") == CRFParams.preset("deeplab")
    wrapped = tmp_path / "best.json"
    wrapped.write_text(json.dumps({"miou": 71.0, "params": p.to_dict()}))
    assert CRFParams.load(wrapped) == p


def test_bad_json_files(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        CRFParams.load(bad)
    bad.write_text(json.dumps({"w1": 1, "sxy": 3}))
    with pytest.raises(ValueError, match="sxy"):
        CRFParams.load(bad)
    with pytest.raises(ValueError, match="neither a preset"):
        CRFParams.resolve(str(tmp_path / "missing.json"))
