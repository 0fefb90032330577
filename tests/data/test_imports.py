"""deeplab.data stands below the networks: importing it (and any of its names but
TorchSegmentation) loads neither PyTorch nor deeplab.models."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import deeplab.data

NOT_LOADED = ("torch", "deeplab.models")


def _loaded_after(code: str) -> list[str]:
    """Which of NOT_LOADED a fresh interpreter holds after running ``code``."""
    probe = code + f"\nimport sys\nprint([m for m in {NOT_LOADED!r} if m in sys.modules])\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return list(ast.literal_eval(done.stdout.strip().splitlines()[-1]))


def test_import_deeplab_data_loads_no_torch_and_no_models() -> None:
    assert _loaded_after("import deeplab.data") == []


def test_every_name_but_the_torch_dataset_loads_no_torch_and_no_models() -> None:
    names = [n for n in deeplab.data.__all__ if n != "TorchSegmentation"]
    code = f"import deeplab.data\nfor name in {names!r}:\n    getattr(deeplab.data, name)\n"
    assert _loaded_after(code) == []


def test_the_conventions_module_is_a_leaf() -> None:
    assert _loaded_after("import deeplab.conventions") == []
    source = Path(sys.modules["deeplab.data"].__file__ or "").parents[1] / "conventions.py"
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8")))
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and node.level == 0
    }
    # torch appears only under TYPE_CHECKING, for an annotation.
    assert imported <= {"__future__", "collections", "typing", "numpy", "torch"}


def test_type_checking_imports_match_the_lazy_table() -> None:
    # deeplab.data loads its names on first use (__getattr__); a type checker reads the
    # TYPE_CHECKING imports instead. The two lists must name the same things.
    tree = ast.parse(Path(deeplab.data.__file__ or "").read_text(encoding="utf-8"))
    block = next(
        node for node in tree.body
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
    )  # fmt: skip
    seen = {
        alias.name: (node.module or "").rsplit(".", 1)[-1]
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert seen == deeplab.data._SUBMODULE


def test_every_name_resolves_from_its_submodule() -> None:
    for name, module in deeplab.data._SUBMODULE.items():
        value = getattr(deeplab.data, name)
        assert value is getattr(sys.modules[f"deeplab.data.{module}"], name), name


def test_shared_conventions_are_one_object() -> None:
    import deeplab.conventions as conventions
    from deeplab.data import transforms
    from deeplab.metrics import IGNORE_INDEX
    from deeplab.models import CAFFE_MEAN_BGR, INPUT_CONVENTION, VOC_CLASSES

    assert deeplab.data.VOC_CLASSES is VOC_CLASSES is conventions.VOC_CLASSES
    assert deeplab.data.IGNORE_INDEX == IGNORE_INDEX == conventions.IGNORE_INDEX == 255
    assert CAFFE_MEAN_BGR is transforms.MEAN_BGR is conventions.CAFFE_MEAN_BGR
    assert INPUT_CONVENTION == conventions.INPUT_CONVENTION
    assert transforms.to_caffe is conventions.to_caffe
