"""Export a DeepLab network to ONNX with a dynamic batch size and image size.

The graph is the network alone, as :class:`deeplab.models.DeepLab` defines it:

- input ``image``: float32 (B, 3, H, W) in the Caffe convention (BGR, 0..255, minus the
  mean (104.008, 116.669, 122.675); :func:`deeplab.models.to_model_input`);
- output ``logits``: float32 (B, L, h, w) stride-8 class scores. Upsample them as
  :func:`deeplab.predict.upsample_logits` does (bilinear, align-corners, to
  ``(8h - 7, 8w - 7)``, then crop to the image) before the argmax or the CRF.

B, H and W are dynamic axes. Inputs of size 8k + 1 (321, 513, ...: what
:class:`deeplab.predict.Predictor` pads to) are exact for every variant; the MSc variants
are exact on those sizes only, because their branches' padding is traced for that
alignment. The model's variant, class names and input convention are stored in the ONNX
metadata (``deeplab.variant``, ``deeplab.class_names``, ``deeplab.input_convention``).

The exporter is PyTorch's ``torch.export``-based one (``dynamo=True``, needs ``onnxscript``):
the older TorchScript exporter does not reproduce PyTorch's ceil-mode pooling on this
network (its scores differ by up to ~0.5).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deeplab.io_utils import atomic_write_bytes
from deeplab.models import INPUT_CONVENTION, DeepLab

__all__ = ["ExportResult", "check_onnx", "export_onnx", "onnx_logits"]

log = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 18
# Sizes the exported graph is checked on: two 8k + 1 sizes (the Predictor's) of different
# aspect, neither of them the example size the graph was traced with.
CHECK_SIZES: tuple[tuple[int, int], ...] = ((97, 129), (161, 65))


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and, if it checked the file, how close ONNX Runtime
    came to PyTorch on each size (max |difference| / max |PyTorch logit|)."""

    path: Path
    opset: int
    num_classes: int
    checks: dict[tuple[int, int], float] = field(default_factory=dict)


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"ONNX export needs the onnx and onnxscript packages ({exc.name} is missing): "
            "pip install 'deeplab[onnx]'"
        ) from None


def export_onnx(
    model: DeepLab,
    path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    example_size: tuple[int, int] = (65, 81),
    check: bool = True,
    check_sizes: Sequence[tuple[int, int]] = CHECK_SIZES,
    tolerance: float = 1e-4,
) -> ExportResult:
    """Write ``model`` as an ONNX file at ``path`` (atomically; module docstring). The
    model is put in eval mode on the CPU.

    ``example_size`` is the (H, W) the graph is traced with. ``check``: run the file in
    ONNX Runtime on ``check_sizes`` and raise ValueError when its logits differ from
    PyTorch's by more than ``tolerance`` relative to the largest logit.
    """
    _require_onnx()
    import onnx

    if opset < 18:
        raise ValueError(f"opset must be >= 18 for the torch.export-based exporter, got {opset}")
    target = Path(path)
    model = model.eval().to("cpu")
    example = torch.zeros(1, 3, *example_size)
    dims = {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
    with tempfile.TemporaryDirectory(prefix="deeplab-onnx-") as tmp:
        raw = Path(tmp) / "model.onnx"
        quiet = logging.getLogger("torch.onnx._internal.exporter._registration")
        level = quiet.level
        with warnings.catch_warnings():
            # The exporter warns about optional packages (torchvision) this model never uses.
            warnings.simplefilter("ignore")
            quiet.setLevel(logging.ERROR)
            try:
                torch.onnx.export(
                    model,
                    (example,),
                    raw,
                    dynamo=True,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_shapes=(dims,),
                    opset_version=opset,
                    external_data=False,
                    verbose=False,
                )
            finally:
                quiet.setLevel(level)
        proto = onnx.load(raw)
    names = list(getattr(model, "class_names", ()) or ())
    meta = {
        "deeplab.variant": model.variant.name,
        "deeplab.num_classes": str(model.num_classes),
        "deeplab.class_names": json.dumps(names),
        "deeplab.input_convention": INPUT_CONVENTION,
        "deeplab.output_stride": "8",
    }
    onnx.helper.set_model_props(proto, meta)
    proto.doc_string = (
        f"DeepLab v1 {model.variant.name}: (B,3,H,W) Caffe-convention image -> "
        f"(B,{model.num_classes},h,w) stride-8 logits"
    )
    onnx.checker.check_model(proto)
    atomic_write_bytes(target, proto.SerializeToString())
    result = ExportResult(target, opset, model.num_classes)
    log.info("exported %s to %s (opset %d)", model.variant.name, target, opset)
    if check:
        result.checks = check_onnx(model, target, check_sizes, tolerance)
    return result


def onnx_logits(path: str | os.PathLike[str], image: np.ndarray) -> np.ndarray:
    """Run an exported file in ONNX Runtime (CPU): (B, 3, H, W) float32 -> logits."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("running ONNX files needs onnxruntime: pip install onnxruntime") from None
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(image, np.float32)})[0]


def check_onnx(
    model: DeepLab,
    path: str | os.PathLike[str],
    sizes: Sequence[tuple[int, int]] = CHECK_SIZES,
    tolerance: float = 1e-4,
    seed: int = 0,
) -> dict[tuple[int, int], float]:
    """Relative max difference between ONNX Runtime's and PyTorch's logits per (H, W) size,
    on random Caffe-convention images; ValueError past ``tolerance``."""
    generator = torch.Generator().manual_seed(seed)
    model = model.eval().to("cpu")
    out: dict[tuple[int, int], float] = {}
    for h, w in sizes:
        x = torch.randn(1, 3, h, w, generator=generator) * 58.0
        with torch.no_grad():
            ref = model(x).numpy()
        got = onnx_logits(path, x.numpy())
        if got.shape != ref.shape:
            raise ValueError(
                f"{path}: ONNX logits {got.shape} for a {h}x{w} input, PyTorch's are {ref.shape}"
            )
        diff = float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-12))
        out[(h, w)] = diff
        if diff > tolerance:
            raise ValueError(
                f"{path}: ONNX Runtime's logits differ from PyTorch's by {diff:.2g} (relative) "
                f"on a {h}x{w} input, over the tolerance {tolerance:g}"
            )
    return out
