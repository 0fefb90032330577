"""Which weights a run uses (deeplab.models.network) and the files shipped in the package
(deeplab.models.shipped): messages, defaults, the CRF that goes with a network."""

from __future__ import annotations

from pathlib import Path

import pytest

import deeplab
import deeplab.models.network as network
from deeplab.crf import CRFParams
from deeplab.models import (
    load_network,
    resolve_crf,
    shipped_camvid_root,
    shipped_crf_params,
    shipped_weights,
)


@pytest.fixture(scope="module")
def weights(tiny_weights: Path) -> Path:
    return tiny_weights


def test_load_network_says_what_the_weights_are(
    weights: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    info = load_network(None, weights).info
    assert (info.variant, info.num_classes, info.kind) == ("deeplab-largefov-tiny", 6, "synthetic")
    assert str(weights) in info.describe() and "triangle" in info.describe()
    assert load_network("deeplab-largefov-tiny", "none", num_classes=4).info.kind == "untrained"
    monkeypatch.setattr(network, "shipped_weights", lambda data="camvid": weights)
    assert load_network(None, None).info.weights == str(weights)
    monkeypatch.setattr(network, "shipped_weights", lambda data="camvid": None)
    with pytest.raises(FileNotFoundError, match="no shipped checkpoint"):
        load_network(None, None)
    monkeypatch.setenv("DEEPLAB_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="deeplab convert"):
        load_network(None, "deeplab-largefov-voc12")
    with pytest.raises(FileNotFoundError, match="deeplab convert"):
        load_network("deeplab-largefov", None)
    with pytest.raises(ValueError, match="does not fit"):
        load_network("deeplab-largefov", weights)


def test_resolve_crf(weights: Path, tmp_path: Path) -> None:
    info = load_network(None, weights).info
    assert resolve_crf("none", info) is None
    assert resolve_crf("krahenbuhl2013", info) == CRFParams.preset("krahenbuhl2013")
    tuned = CRFParams(w1=7, iterations=4)
    tuned.save(tmp_path / "p.json")
    assert resolve_crf(tmp_path / "p.json", info) == tuned
    auto = resolve_crf("auto", info)
    shipped = shipped_crf_params("synthetic")  # the weights are synthetic ones
    assert auto == (shipped or CRFParams.preset("deeplab-largefov"))


def test_shipped_files_come_from_the_package() -> None:
    for data in ("camvid", "synthetic"):
        path = shipped_weights(data)
        assert path is not None and path.is_file()
        assert Path(deeplab.__file__).parent / "assets" in path.parents
        assert shipped_crf_params(data) is not None
    root = shipped_camvid_root()
    assert root is not None and (root / "val.txt").is_file()
    with pytest.raises(ValueError, match="no shipped model for 'voc'"):
        shipped_weights("voc")


def test_the_default_network_is_the_camvid_model_and_says_so() -> None:
    from deeplab.data import CAMVID_CLASSES

    info = load_network(None, None).info
    assert info.class_names == CAMVID_CLASSES and info.kind == "real"
    assert "street scenes" in info.note and "11 classes" in info.note
    assert resolve_crf("auto", info) == shipped_crf_params("camvid")
