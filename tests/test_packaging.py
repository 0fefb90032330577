"""Package metadata: one version, the licence file, bounds on the compiler numba drives."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

import deeplab

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_is_defined_once() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert metadata.version("deeplab") == deeplab.__version__


def test_licence_file_matches_the_metadata() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"]["text"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_numba_and_llvmlite_are_bounded_above() -> None:
    # The hand-written vector code (deeplab.crf.simd) is tested with these versions only.
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for name in ("numba", "llvmlite"):
        (spec,) = [d for d in deps if re.match(rf"{name}\b", d)]
        assert "<" in spec, spec


def _names(requirements: list[str]) -> set[str]:
    return {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in requirements}


def test_a_plain_install_is_the_crf_alone() -> None:
    # `pip install deeplab`: the CRF, its pydensecrf drop-in and `deeplab crf` (Pillow).
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert _names(deps) == {"numpy", "numba", "llvmlite", "pillow"}


def test_the_extras_name_what_the_command_line_asks_for() -> None:
    from deeplab.extras import EXTRA_MODULES

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    # Import names of these distributions are their own names (python-multipart: multipart).
    assert _names(extras["networks"]) == set(EXTRA_MODULES["networks"])
    for extra in ("app", "onnx", "test"):
        assert "deeplab[networks]" in extras[extra]
    app = {n.removeprefix("python-") for n in _names(extras["app"]) - {"deeplab"}}
    assert app <= set(EXTRA_MODULES["app"]) and {"fastapi", "uvicorn"} <= app
    assert _names(extras["onnx"]) - {"deeplab"} == set(EXTRA_MODULES["onnx"])
    assert "build" in _names(extras["test"])
