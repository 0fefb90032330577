"""The checkpoints, CRF parameters and photos shipped inside the package (``deeplab/assets``).

The default network is ``deeplab-largefov-tiny`` trained on CamVid street scenes (11
classes) on a CPU; a second checkpoint of the same model knows the synthetic scenes of the
tests and ``deeplab demo --data synthetic``. Each comes with CRF parameters tuned for it
(paper section 4). The files are found with :mod:`importlib.resources`, so they work from a
wheel as from a checkout.
"""

from __future__ import annotations

import atexit
import contextlib
from importlib import resources
from pathlib import Path

from deeplab.crf import CRFParams

__all__ = [
    "SHIPPED_CAMVID",
    "SHIPPED_CRF",
    "SHIPPED_MODEL",
    "SHIPPED_NOTE",
    "SHIPPED_WEIGHTS",
    "SYNTHETIC_CRF",
    "SYNTHETIC_WEIGHTS",
    "shipped_camvid_root",
    "shipped_crf_params",
    "shipped_weights",
]

SHIPPED_MODEL = "deeplab-largefov-tiny"
SHIPPED_WEIGHTS = "deeplab-largefov-tiny-camvid.safetensors"
SHIPPED_CRF = "crf-camvid.json"
SHIPPED_CAMVID = "camvid"
SYNTHETIC_WEIGHTS = "deeplab-largefov-tiny-synthetic.safetensors"
SYNTHETIC_CRF = "crf-synthetic.json"
SHIPPED_NOTE = (
    "the shipped model knows street scenes (CamVid: sky, building, pole, road, pavement, "
    "tree, sign, fence, car, pedestrian, bicyclist) and was trained from scratch on a 2-core "
    "CPU; a photo of anything else still gets labels from these 11 classes"
)
_SHIPPED = {
    "camvid": (SHIPPED_WEIGHTS, SHIPPED_CRF),
    "synthetic": (SYNTHETIC_WEIGHTS, SYNTHETIC_CRF),
}

# Keeps files extracted from a zipped install alive until the interpreter exits.
_ASSET_FILES = contextlib.ExitStack()
atexit.register(_ASSET_FILES.close)


def _asset(name: str, folder: bool = False) -> Path | None:
    """A file (or ``folder``) of ``deeplab/assets`` as a real path, or None when the
    package lacks it."""
    ref = resources.files("deeplab").joinpath("assets").joinpath(name)
    if not (ref.is_dir() if folder else ref.is_file()):
        return None
    if isinstance(ref, Path):
        return ref
    return Path(_ASSET_FILES.enter_context(resources.as_file(ref)))


def _shipped(data: str) -> tuple[str, str]:
    try:
        return _SHIPPED[data]
    except KeyError:
        raise ValueError(f"no shipped model for {data!r}; known: {sorted(_SHIPPED)}") from None


def shipped_weights(data: str = "camvid") -> Path | None:
    """The packaged ``deeplab-largefov-tiny`` checkpoint trained on ``data``: "camvid"
    (the default network) or "synthetic" (the synthetic scenes of the tests and
    ``deeplab demo --data synthetic``)."""
    return _asset(_shipped(data)[0])


def shipped_crf_params(data: str = "camvid") -> CRFParams | None:
    """CRF parameters tuned for the shipped checkpoint of ``data``, if the package has them."""
    path = _asset(_shipped(data)[1])
    return None if path is None else CRFParams.load(path)


def shipped_camvid_root() -> Path | None:
    """The CamVid val photos shipped with the package (CamVid layout, split "val")."""
    return _asset(SHIPPED_CAMVID, folder=True)
