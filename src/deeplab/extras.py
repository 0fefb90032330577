"""Which optional extra of the ``deeplab`` distribution provides which imported package.

``pip install deeplab`` is the CRF alone (numpy, numba, llvmlite, Pillow); the networks and
everything around them come with ``pip install 'deeplab[networks]'`` (see README, "Install").
When a command or function needs a package of an extra that is not installed, the error
names the extra to install instead of only the missing module.
"""

from __future__ import annotations

# Extra -> top-level import names its requirements provide (pyproject.toml lists the
# distributions; tests/test_packaging.py checks that the two agree).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "networks": ("torch", "safetensors", "scipy", "matplotlib", "tqdm"),
    "app": ("fastapi", "uvicorn", "multipart", "python_multipart"),
    "onnx": ("onnx", "onnxscript", "onnxruntime"),
    "nifti": ("nibabel",),
}


def extra_for(module: str | None) -> str | None:
    """The extra that provides the (possibly dotted) module name, or None."""
    if not module:
        return None
    top = module.split(".", 1)[0]
    for extra, modules in EXTRA_MODULES.items():
        if top in modules:
            return extra
    return None


def install_hint(extra: str) -> str:
    return f"pip install 'deeplab[{extra}]'"


def missing_extra_message(exc: BaseException) -> str | None:
    """One line naming the extra to install for an ImportError of a package an extra
    provides (``exc.name``), else None."""
    if not isinstance(exc, ImportError):
        return None
    extra = extra_for(exc.name)
    if extra is None:
        return None
    what = {
        "networks": "PyTorch and the networks' packages",
        "app": "the web demo's packages",
        "onnx": "the ONNX packages",
    }[extra]
    return f"needs {what} ({exc.name} is not installed): {install_hint(extra)}"
