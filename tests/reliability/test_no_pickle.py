"""No load path runs code from a file: an AST check of every module under src/deeplab.

Refused: ``pickle``/``cPickle``/``dill``/``cloudpickle``/``joblib``/``shelve``/``marshal``
loads, ``torch.load`` without ``weights_only=True``, ``torch.jit.load``, ``np.load`` without
``allow_pickle=False``, ``yaml.load`` without a safe loader (and ``yaml.unsafe_load`` /
``full_load``), ``pandas.read_pickle``, and ``eval``/``exec``. Names are resolved through
the module's imports, so ``import numpy as np; np.load(...)`` and ``from torch import load``
are both seen.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "deeplab"

# Libraries whose only purpose here would be unpickling: not even imported. (``pickle``
# itself may be, for ``pickle.UnpicklingError``.)
FORBIDDEN_IMPORTS = ("dill", "cloudpickle", "joblib", "shelve")
# Modules whose load functions unpickle (or run code) whatever the arguments.
UNSAFE_CALLS = {
    "pickle.load",
    "pickle.loads",
    "pickle.Unpickler",
    "_pickle.load",
    "_pickle.loads",
    "cPickle.load",
    "cPickle.loads",
    "dill.load",
    "dill.loads",
    "cloudpickle.load",
    "cloudpickle.loads",
    "joblib.load",
    "shelve.open",
    "marshal.load",
    "marshal.loads",
    "torch.jit.load",
    "torch.package.PackageImporter",
    "pandas.read_pickle",
    "numpy.lib.format.read_array",
    "yaml.unsafe_load",
    "yaml.full_load",
    "yaml.load_all",
    "eval",
    "exec",
    "builtins.eval",
    "builtins.exec",
}
SAFE_YAML_LOADERS = ("SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader")


def _imports(tree: ast.AST) -> dict[str, str]:
    """Local name -> qualified name, from the module's import statements."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _qualified(func: ast.expr, names: dict[str, str]) -> str | None:
    """``np.load`` -> ``numpy.load`` through the imports; None if not a dotted name."""
    parts: list[str] = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return None
    head = names.get(func.id, func.id)
    return ".".join([head, *reversed(parts)])


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_constant(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def problems_in(source: str, filename: str = "<source>") -> list[str]:
    """Every unsafe load in ``source``, as 'file:line: what'."""
    tree = ast.parse(source, filename)
    names = _imports(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            for module in modules:
                if module.split(".")[0] in FORBIDDEN_IMPORTS:
                    found.append(f"{filename}:{node.lineno}: imports {module}")
            continue
        if not isinstance(node, ast.Call):
            continue
        name = _qualified(node.func, names)
        if name is None:
            continue
        where = f"{filename}:{node.lineno}"
        if name in UNSAFE_CALLS:
            found.append(f"{where}: {name}")
        elif name in ("torch.load", "torch.serialization.load"):
            if not _is_constant(_keyword(node, "weights_only"), True):
                found.append(f"{where}: {name} without weights_only=True")
        elif name in ("numpy.load", "numpy.lib.npyio.load"):
            if not _is_constant(_keyword(node, "allow_pickle"), False):
                found.append(f"{where}: {name} without allow_pickle=False")
        elif name == "yaml.load":
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            loader_name = _qualified(loader, names) if loader is not None else None
            if not (loader_name and loader_name.split(".")[-1] in SAFE_YAML_LOADERS):
                found.append(f"{where}: yaml.load without a safe Loader")
    return found


def test_no_load_path_in_the_package_can_unpickle_or_run_code() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 30  # the whole package, not an empty glob
    problems = [p for f in files for p in problems_in(f.read_text(), str(f.relative_to(SRC)))]
    assert problems == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import pickle\npickle.load(f)", "pickle.load"),
        ("from pickle import loads as l\nl(b)", "pickle.loads"),
        ("import numpy as np\nnp.load(p)", "without allow_pickle=False"),
        ("import numpy as np\nnp.load(p, allow_pickle=True)", "without allow_pickle=False"),
        ("from numpy import load\nload(p)", "without allow_pickle=False"),
        ("import torch\ntorch.load(p)", "without weights_only=True"),
        ("import torch\ntorch.load(p, weights_only=False)", "without weights_only=True"),
        ("from torch import load\nload(p, map_location='cpu')", "without weights_only=True"),
        ("import torch\ntorch.jit.load(p)", "torch.jit.load"),
        ("import yaml\nyaml.load(s)", "without a safe Loader"),
        ("import yaml\nyaml.load(s, Loader=yaml.FullLoader)", "without a safe Loader"),
        ("import yaml\nyaml.unsafe_load(s)", "yaml.unsafe_load"),
        ("import joblib", "imports joblib"),
        ("import pandas as pd\npd.read_pickle(p)", "pandas.read_pickle"),
        ("eval(text)", "eval"),
        ("import marshal\nmarshal.loads(b)", "marshal.loads"),
    ],
)
def test_the_check_sees_unsafe_loads(source: str, expected: str) -> None:
    problems = problems_in(source)
    assert len(problems) == 1 and expected in problems[0], problems


@pytest.mark.parametrize(
    "source",
    [
        "import numpy as np\nnp.load(p, allow_pickle=False)",
        "import torch\ntorch.load(p, map_location='cpu', weights_only=True)",
        "import yaml\nyaml.load(s, Loader=yaml.SafeLoader)",
        "import yaml\nyaml.safe_load(s)",
        "import pickle\nraise pickle.UnpicklingError('x')",  # naming the error is fine
        "import json\njson.loads(s)",
        "model.eval()",
    ],
)
def test_the_check_accepts_safe_loads(source: str) -> None:
    assert problems_in(source) == []
