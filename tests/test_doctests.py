"""The ``>>>`` examples in the package's docstrings run, and must hold, as doctests.

Every module under ``src/deeplab`` whose source holds an example is collected by walking
the files, imported by its module name and run through :mod:`doctest`. A module whose
import needs an optional dependency that is not installed is skipped, saying which.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path
from types import ModuleType

import pytest

import deeplab

PACKAGE = Path(deeplab.__file__).resolve().parent
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def modules_with_examples() -> list[str]:
    """Dotted names of the package's modules whose source contains ``>>> ``."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if ">>> " not in path.read_text(encoding="utf-8"):
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # A missing part of the package itself is a failure; a missing optional extra is not.
        if exc.name is None or exc.name.split(".")[0] == "deeplab":
            raise
        pytest.skip(f"{name} needs {exc.name}, which is not installed")


def test_the_walk_finds_the_examples() -> None:
    assert "deeplab.models.variants" in modules_with_examples()


@pytest.mark.parametrize("name", modules_with_examples())
def test_docstring_examples(name: str) -> None:
    module = _import(name)
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report: list[str] = []
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=report.append)
    assert runner.tries > 0, f"{name}: no example was found, though its source has '>>> '"
    assert runner.failures == 0, "".join(report)
