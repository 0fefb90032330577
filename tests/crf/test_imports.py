"""What importing the CRF loads: numpy only for the package, numba with the first numpy
entry point, never torch nor the rest of deeplab (the CRF-only install has neither the
networks' dependencies nor a use for them). The torch backend's own check (no numba) is
in test_torch_backend.py, which the CRF-only install does not run."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import deeplab


def loaded_after(code: str) -> list[str]:
    """Names of the modules loaded in a fresh interpreter after running ``code``."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.splitlines()[-1])


def outside_the_crf(modules: list[str]) -> list[str]:
    return [m for m in modules if m.startswith("deeplab.") and not m.startswith("deeplab.crf")]


def test_deeplab_init_imports_nothing_of_the_package() -> None:
    # What the checks below allow besides deeplab.crf: deeplab/__init__.py itself, which
    # must therefore stay free of imports of its subpackages.
    assert outside_the_crf(loaded_after("import deeplab")) == []
    assert deeplab.__version__


def test_importing_the_crf_loads_neither_torch_nor_numba_nor_the_package() -> None:
    modules = loaded_after("import deeplab.crf")
    assert "torch" not in modules
    assert "numba" not in modules
    assert outside_the_crf(modules) == []


def test_the_numpy_entry_points_load_no_torch_and_nothing_outside_the_crf() -> None:
    code = (
        "import deeplab.crf as crf\n"
        "names = [n for n in crf.__all__ if n not in ('torch_backend', 'TorchDenseCRF')]\n"
        "for name in names:\n"
        "    getattr(crf, name)\n"
        "import deeplab.crf.pydensecrf"
    )
    modules = loaded_after(code)
    assert "numba" in modules  # the entry points did load
    assert "torch" not in modules
    assert outside_the_crf(modules) == []


def test_every_public_name_is_listed_and_loads() -> None:
    import deeplab.crf as crf

    names = [n for n in crf.__all__ if n not in ("torch_backend", "TorchDenseCRF")]
    expected = {"dense_crf", "dense_crf_3d", "CRFParams"}
    if importlib.util.find_spec("torch") is not None:
        expected |= {"torch_backend", "TorchDenseCRF"}
    assert expected <= set(crf.__all__)
    for name in names:
        assert getattr(crf, name) is not None, name
    assert set(crf.__all__) <= set(dir(crf))


def test_the_star_import_works_without_torch() -> None:
    # As on the CRF-only install: every import of torch fails.
    code = (
        "import importlib.abc\n"
        "class NoTorch(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ModuleNotFoundError(name, name=name)\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "from deeplab.crf import *\n"
        "assert callable(dense_crf) and 'torch_backend' not in dir()\n"
    )
    assert "torch" not in loaded_after(code)
