"""Input checks shared by every CRF entry point, numba and torch alike: one function per
check, one bound per quantity, one message per mistake.

The checks that read values (finiteness, signs, image layout) take numpy arrays and torch
tensors alike and return the same kind they were given; torch is never imported here (a
tensor exists only once its caller has imported torch).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

    ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)
else:
    ArrayOrTensor = TypeVar("ArrayOrTensor")

#: Names of the kernel normalisations (:class:`~deeplab.crf.params.CRFParams`).
NORMALIZATIONS = ("after", "symmetric", "before", "none")
#: Most mean-field updates any entry point runs; the CRF converges in about 10.
MAX_ITERATIONS = 1000
#: ``backend=`` values of the entry points: "numba" the CPU backend, "torch"
#: :mod:`deeplab.crf.torch_backend` (any device), "auto" torch when an input is a tensor.
BACKENDS = ("auto", "numba", "torch")
#: Largest elevated lattice coordinate: they are float32 (as in the reference), exact
#: integers only up to 2^24; past that lattice keys lose precision, so such inputs are
#: refused rather than wrapped silently like the reference's int16 keys.
MAX_LATTICE_COORD = 2**24
#: Most intensity channels of a volume (more is almost always a misplaced channel axis).
MAX_CHANNELS = 16


def is_tensor(x: object) -> bool:
    """Whether ``x`` is a torch tensor, without importing torch."""
    torch_mod = sys.modules.get("torch")
    return torch_mod is not None and isinstance(x, torch_mod.Tensor)


def check_backend(backend: object, *inputs: object) -> str:
    """The backend to run, "numba" or "torch" (see :data:`BACKENDS`)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return str(backend)
    return "torch" if any(is_tensor(x) for x in inputs) else "numba"


def real_array(
    x: object, name: str, what: str = "a real numeric array", *, bool_ok: bool = True
) -> np.ndarray:
    """``x`` (a torch tensor is read through numpy) as a real-valued array (booleans too
    unless ``bool_ok=False``), else TypeError."""
    if is_tensor(x):
        x = x.detach().cpu().numpy()  # type: ignore[attr-defined]  # is_tensor said so
    arr = np.asarray(x)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating)
        or np.issubdtype(arr.dtype, np.integer)
        or (bool_ok and arr.dtype == np.bool_)
    ):
        raise TypeError(f"{name}: expected {what}, got dtype {arr.dtype}")
    return arr


def as_float32_2d(x: object, name: str, *, finite: bool = True) -> np.ndarray:
    """A C-contiguous float32 copy or view of a 2-D real array (checked finite unless
    ``finite=False``, for callers whose kernels check as they go)."""
    return as_float32(x, name, 2, finite=finite)


def as_float32(x: object, name: str, ndim: int, *, finite: bool = True) -> np.ndarray:
    """A C-contiguous float32 array of the given rank (checked finite unless told not)."""
    arr = real_array(x, name)
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if finite:
        check_finite(out, name)
    return out


# -- values -----------------------------------------------------------------------------


def check_finite(
    x: np.ndarray | torch.Tensor, name: str, what: str = "values", verb: str = "contains"
) -> None:
    """ValueError "{name}: {verb} N NaN or infinite {what}" if ``x`` has such entries."""
    if is_tensor(x):
        finite = sys.modules["torch"].isfinite(x)
        bad = 0 if bool(finite.all()) else int((~finite).sum())
    else:
        arr = np.asarray(x)
        bad = 0 if np.isfinite(arr).all() else int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise ValueError(f"{name}: {verb} {bad} NaN or infinite {what}")


def check_no_negatives(x: np.ndarray | torch.Tensor, name: str) -> None:
    """ValueError naming how many entries of probabilities ``x`` are negative, if any."""
    negative = x < 0
    if bool(negative.any()):
        raise ValueError(f"{name}: contains {int(negative.sum())} negative values")


def _as_float(value: object, name: str, what: str) -> float:
    # float() of a string parses it, of 10**400 overflows: neither is a parameter value.
    if isinstance(value, str | bytes):
        raise ValueError(f"{name} must be {what}, got the text {value!r}")
    try:
        return float(value)  # type: ignore[arg-type]  # anything float() takes; else below
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be {what}, got {value!r}") from None


def check_positive(value: object, name: str) -> float:
    v = _as_float(value, name, "a finite number > 0")
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def check_nonnegative(value: object, name: str) -> float:
    v = _as_float(value, name, "a finite number >= 0")
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def check_iterations(value: object, name: str = "iterations") -> int:
    """A whole number of mean-field updates in 0..:data:`MAX_ITERATIONS` (``10`` and
    ``10.0`` pass; True, "10", NaN and 10.5 do not)."""
    try:
        whole = not isinstance(value, bool) and int(value) == value  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):  # "10", NaN, Infinity, [10]
        whole = False
    if not whole:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    n = int(value)  # type: ignore[call-overload]  # whole, checked above
    if not 0 <= n <= MAX_ITERATIONS:
        raise ValueError(f"{name} must be in 0..{MAX_ITERATIONS}, got {value!r}")
    return n


def check_normalization(normalization: object) -> str:
    """One of :data:`NORMALIZATIONS`."""
    if not isinstance(normalization, str) or normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    return normalization


# -- shapes -----------------------------------------------------------------------------


def check_rank(shape: Sequence[int], ndim: int, name: str, layout: str) -> None:
    """ValueError unless ``shape`` has ``ndim`` axes; ``layout`` names them, "(L, H, W)"."""
    if len(shape) != ndim:
        raise ValueError(f"{name}: expected {layout}, got shape {tuple(shape)}")


def check_num_labels(num_labels: int, name: str) -> None:
    """At least two labels: with one the CRF has nothing to decide."""
    if num_labels < 2:
        raise ValueError(f"{name}: need at least 2 labels, got {num_labels}")


def check_maps_match(shape: Sequence[int], grid: Sequence[int], name: str, what: str) -> None:
    """(L, *grid) label maps over the ``what`` ("image", "volume") of that grid."""
    if tuple(shape[1:]) != tuple(grid):
        expected = ", ".join(["L", *(str(n) for n in grid)])
        raise ValueError(
            f"{name}: shape {tuple(shape)} does not match the {what}: expected ({expected})"
        )


def check_nonempty(shape: Sequence[int], name: str, what: str = "maps") -> None:
    if 0 in tuple(shape):
        raise ValueError(f"{name}: empty {what} of shape {tuple(shape)}")


def check_square(shape: Sequence[int], size: int, name: str) -> None:
    """An (L, L) matrix for L labels (the label compatibility)."""
    if tuple(shape) != (size, size):
        raise ValueError(f"{name}: expected shape ({size}, {size}), got {tuple(shape)}")


def check_channels(channels: int, shape: Sequence[int], name: str, layout: str) -> None:
    """1..:data:`MAX_CHANNELS` intensity channels of a volume of the given ``layout``."""
    if not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(
            f"{name}: {channels} intensity channels (shape {tuple(shape)}); 1 to "
            f"{MAX_CHANNELS}. Is the channel axis where {layout} puts it?"
        )


def check_lattice_range(outside: int) -> None:
    """ValueError when ``outside`` points have lattice coordinates past
    :data:`MAX_LATTICE_COORD`: their features are too large for their standard deviation."""
    if outside:
        raise ValueError(
            f"features: lattice coordinates of {outside} points exceed the supported range "
            f"({MAX_LATTICE_COORD:.1e}); a standard deviation is too small for the range "
            "of the features"
        )


# -- images and label maps --------------------------------------------------------------


def image_layout(image: ArrayOrTensor, name: str = "image") -> ArrayOrTensor:
    """(H, W, 3) uint8 RGB, array or tensor as given. Grayscale (H, W) / (H, W, 1) is
    replicated to RGB; RGBA and other layouts are refused with a message; floats in [0, 1]
    or [0, 255] are refused too, since guessing their range silently changes the colour
    kernel."""
    tensor = is_tensor(image)
    if str(image.dtype) not in ("uint8", "torch.uint8"):
        fix = "x.clamp(0, 255).to(torch.uint8)" if tensor else "np.clip(x, 0, 255).astype(np.uint8)"
        raise TypeError(
            f"{name}: expected dtype uint8 (H, W, 3) RGB, got {image.dtype}; convert with "
            f"{fix} after scaling to 0..255"
        )
    img = image[:, :, None] if image.ndim == 2 else image
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, [0, 0, 0]]  # indexing copies, for arrays and tensors alike
    elif img.ndim == 3 and img.shape[2] == 4:
        raise ValueError(
            f"{name}: got 4 channels (RGBA?), expected (H, W, 3) RGB; drop or composite "
            "the alpha channel first, e.g. image[..., :3]"
        )
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{name}: expected shape (H, W, 3), got {tuple(image.shape)}")
    check_nonempty(img.shape, name, "image")
    return img


def check_image(image: object, name: str = "image") -> np.ndarray:
    """:func:`image_layout` of an array (a tensor is read through numpy), C-contiguous."""
    if is_tensor(image):
        image = image.detach().cpu().numpy()  # type: ignore[attr-defined]  # is_tensor said so
    return np.ascontiguousarray(image_layout(np.asarray(image), name))


def check_label_maps(
    x: object, name: str, image_hw: tuple[int, int], *, finite: bool = True
) -> np.ndarray:
    """(L, H, W) float32 per-label maps matching the image size, at least 2 labels."""
    arr = as_float32(x, name, 3, finite=finite)
    check_maps_match(arr.shape, image_hw, name, "image")
    check_num_labels(arr.shape[0], name)
    return arr


def check_compat(compat: object, num_labels: int) -> np.ndarray | None:
    """The label compatibility matrix mu as (L, L) float32, or None (the Potts model)."""
    if compat is None:
        return None
    mu = as_float32_2d(compat, "compat")
    check_square(mu.shape, num_labels, "compat")
    return mu
