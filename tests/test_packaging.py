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
