"""Argument checks shared by the pydensecrf replacements: pydensecrf's own rules (its
C++ casts), with clear messages."""

from __future__ import annotations

import operator

import numpy as np

from deeplab.crf.validation import real_array


def real_numbers(x: object, name: str) -> np.ndarray:
    # pydensecrf reads booleans as no number: neither do its replacements.
    return real_array(x, name, bool_ok=False)


def integer(value: object, name: str, *, whole_floats: bool = False) -> int:
    """An integer argument (not a bool; with ``whole_floats`` also 3.0, as pydensecrf's
    C++ int casts take it), else TypeError."""
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected an integer, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]  # TypeError when it is not
    except TypeError:
        if not (whole_floats and isinstance(value, float | np.floating) and value.is_integer()):
            raise TypeError(f"{name}: expected an integer, got {value!r}") from None
        return int(value)


def check_scales(scales: np.ndarray, name: str, given: object) -> None:
    """Standard deviations (the array read from ``given``) must be finite and > 0."""
    if not (np.isfinite(scales).all() and (scales > 0).all()):
        raise ValueError(f"{name}: standard deviations must be finite and > 0, got {given!r}")
