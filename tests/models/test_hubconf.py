"""torch.hub entry points (hubconf.py at the repository root), loaded with source='local'."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from deeplab.models import list_models

ROOT = Path(__file__).resolve().parents[2]


def test_hub_load_local() -> None:
    model = torch.hub.load(
        str(ROOT), "deeplab_largefov_tiny", source="local", num_classes=5, weights=None
    )
    assert model.variant.name == "deeplab-largefov-tiny" and model.num_classes == 5
    assert model.eval()(torch.zeros(1, 3, 33, 33)).shape == (1, 5, 5, 5)
    big = torch.hub.load(str(ROOT), "deeplab_largefov", source="local")
    assert big.variant.name == "deeplab-largefov"


def test_hub_load_with_a_checkpoint(tmp_path) -> None:
    from deeplab.models import build_model, save_model

    path = tmp_path / "tiny.safetensors"
    source = build_model("deeplab-largefov-tiny")
    save_model(source, path)
    model = torch.hub.load(str(ROOT), "deeplab_largefov_tiny", source="local", weights=str(path))
    torch.testing.assert_close(model.fc8.weight, source.fc8.weight, rtol=0, atol=0)


def test_one_entry_point_per_variant() -> None:
    spec = importlib.util.spec_from_file_location("hubconf_under_test", ROOT / "hubconf.py")
    assert spec is not None and spec.loader is not None
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    public = {n for n in dir(hub) if not n.startswith("_") and callable(getattr(hub, n))}
    assert public == {n.replace("-", "_") for n in list_models()}
    assert "LargeFOV" in hub.deeplab_largefov.__doc__


def test_tiny_entry_point_gives_the_shipped_trained_model() -> None:
    from deeplab.models import load_model, shipped_weights

    model = torch.hub.load(str(ROOT), "deeplab_largefov_tiny", source="local")
    path = shipped_weights()
    assert path is not None
    shipped = load_model(path)
    assert model.class_names == shipped.class_names and model.num_classes == 11  # CamVid
    theirs = shipped.state_dict()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, theirs[name], rtol=0, atol=0, msg=name)
    with pytest.raises(ValueError, match="weights=None"):
        torch.hub.load(str(ROOT), "deeplab_largefov_tiny", source="local", num_classes=21)
