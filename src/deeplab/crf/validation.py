"""Input checks shared by the CRF entry points: clear errors instead of crashes."""

from __future__ import annotations

import numpy as np


def real_array(x: object, name: str, what: str = "a real numeric array") -> np.ndarray:
    """``x`` (a torch tensor is read through numpy) as a real-valued array, else TypeError."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor without importing torch
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating)
        or np.issubdtype(arr.dtype, np.integer)
        or arr.dtype == np.bool_
    ):
        raise TypeError(f"{name}: expected {what}, got dtype {arr.dtype}")
    return arr


def as_float32_2d(x: object, name: str, *, finite: bool = True) -> np.ndarray:
    """A C-contiguous float32 copy or view of a 2-D real array (checked finite unless
    ``finite=False``, for callers whose kernels check as they go)."""
    arr = real_array(x, name)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array, got shape {arr.shape}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if finite:
        check_finite(out, name)
    return out


def as_float32(x: object, name: str, ndim: int, *, finite: bool = True) -> np.ndarray:
    """A C-contiguous float32 array of the given rank (checked finite unless told not)."""
    arr = real_array(x, name)
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if finite:
        check_finite(out, name)
    return out


def check_finite(arr: np.ndarray, name: str) -> None:
    if not np.isfinite(arr).all():
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name}: contains {bad} NaN or infinite values")


def check_image(image: object, name: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 RGB, C-contiguous. Grayscale (H, W) / (H, W, 1) is replicated to RGB;
    RGBA and other layouts are refused with a message; floats in [0, 1] or [0, 255] are
    refused too, since guessing their range silently changes the colour kernel."""
    if hasattr(image, "detach") and hasattr(image, "cpu"):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(
            f"{name}: expected dtype uint8 (H, W, 3) RGB, got {arr.dtype}; convert with "
            "np.clip(x, 0, 255).astype(np.uint8) after scaling to 0..255"
        )
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        raise ValueError(
            f"{name}: got 4 channels (RGBA?), expected (H, W, 3) RGB; drop or composite "
            "the alpha channel first, e.g. image[..., :3]"
        )
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{name}: expected shape (H, W, 3), got {np.shape(image)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: empty image of shape {arr.shape}")
    return np.ascontiguousarray(arr)


def check_label_maps(
    x: object, name: str, image_hw: tuple[int, int], *, finite: bool = True
) -> np.ndarray:
    """(L, H, W) float32 per-label maps matching the image size, at least 2 labels."""
    arr = as_float32(x, name, 3, finite=finite)
    if arr.shape[1:] != tuple(image_hw):
        raise ValueError(
            f"{name}: shape {arr.shape} does not match the image: expected (L, {image_hw[0]}, "
            f"{image_hw[1]})"
        )
    if arr.shape[0] < 2:
        raise ValueError(f"{name}: need at least 2 labels, got {arr.shape[0]}")
    return arr


def _as_float(value: object, name: str, what: str) -> float:
    # float() of a string parses it, of 10**400 overflows: neither is a parameter value.
    if isinstance(value, str | bytes):
        raise ValueError(f"{name} must be {what}, got the text {value!r}")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be {what}, got {value!r}") from None


def check_positive(value: float, name: str) -> float:
    v = _as_float(value, name, "a finite number > 0")
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def check_nonnegative(value: float, name: str) -> float:
    v = _as_float(value, name, "a finite number >= 0")
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def check_compat(compat: object, num_labels: int) -> np.ndarray | None:
    """The label compatibility matrix mu as (L, L) float32, or None (the Potts model)."""
    if compat is None:
        return None
    mu = as_float32_2d(compat, "compat")
    if mu.shape != (num_labels, num_labels):
        raise ValueError(f"compat: expected shape ({num_labels}, {num_labels}), got {mu.shape}")
    return mu
