"""ONNX export: ONNX Runtime reproduces PyTorch's logits on images of several sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from deeplab.cli import main  # noqa: E402
from deeplab.data.synthetic import SYNTHETIC_CLASSES  # noqa: E402
from deeplab.export import export_onnx, onnx_logits  # noqa: E402
from deeplab.models import build_model, save_model  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """The tiny network exported once through `deeplab export-onnx` (one export costs
    seconds), and the PyTorch model it came from."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("onnx")
    weights, path = folder / "tiny.safetensors", folder / "tiny.onnx"
    model = build_model("deeplab-largefov-tiny", num_classes=6).eval()
    save_model(model, weights, class_names=SYNTHETIC_CLASSES, source="test")
    assert main(["export-onnx", "--weights", str(weights), "--out", str(path)]) == 0
    return model, path


@pytest.mark.parametrize("size", [(2, 97, 129), (1, 75, 46)])
def test_onnx_runtime_matches_pytorch_on_other_sizes(exported, size) -> None:
    model, path = exported
    b, h, w = size
    x = torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(h)) * 58.0
    with torch.no_grad():
        ref = model(x).numpy()
    got = onnx_logits(path, x.numpy())
    assert got.shape == ref.shape == (b, 6, *(model.variant.output_size(n) for n in (h, w)))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_onnx_file_declares_dynamic_axes_and_metadata(exported) -> None:
    _, path = exported
    proto = onnx.load(path)
    (inp,) = proto.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert inp.name == "image" and dims[1].dim_value == 3
    # Batch, height and width are symbols, not numbers.
    assert all(d.dim_param and not d.dim_value for d in (dims[0], dims[2], dims[3]))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["deeplab.variant"] == "deeplab-largefov-tiny"
    assert props["deeplab.input_convention"] == "caffe-bgr-255-meansub"
    assert "triangle" in props["deeplab.class_names"]


def test_export_command_reports_the_check(exported, tmp_path: Path, capsys) -> None:
    _, path = exported
    assert path.is_file()
    assert main(["export-onnx", "--weights", "none", "--out", str(tmp_path / "m.txt")]) == 1
    assert "--out must end in .onnx" in capsys.readouterr().err


def test_export_refuses_old_opsets(exported, tmp_path: Path) -> None:
    model, _ = exported
    with pytest.raises(ValueError, match="opset must be >= 18"):
        export_onnx(model, tmp_path / "x.onnx", opset=13)
    assert not (tmp_path / "x.onnx").exists()
