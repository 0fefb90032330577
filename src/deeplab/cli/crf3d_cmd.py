"""`deeplab crf3d`: refine a volume's class probabilities with the dense CRF.

Volumes and probabilities are NIfTI (``.nii``, ``.nii.gz``; nibabel, the ``nifti`` extra)
or ``.npy``. Axes are the arrays' own: a NIfTI volume (X, Y, Z) or (X, Y, Z, C) as nibabel
reads it, with the header's voxel sizes as the spacing; an ``.npy`` volume (D, H, W) or
(D, H, W, C) with spacing 1 unless ``--spacing`` says otherwise. A NIfTI output keeps the
input's header and affine (only the data type changes).
"""

from __future__ import annotations

import argparse
import gzip
import io
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from deeplab.cli.crf_cmd import NPY_MAGIC, add_param_options, params_from_args
from deeplab.io_utils import atomic_write_bytes

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
GZIP_MAGIC = b"\x1f\x8b"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "crf3d",
        help="refine a volume's class probabilities with the dense CRF (NIfTI or .npy)",
        description="Refine the class probabilities of VOLUME (CT, MRI, microscopy; NIfTI "
        ".nii/.nii.gz or .npy) with the fully connected CRF in 3-D, and write the label "
        "volume (NIfTI keeps the input's header and affine, or .npy). theta-alpha and "
        "theta-gamma are in the spacing's unit (mm), theta-beta in intensity units.",
    )
    p.add_argument("volume", type=Path, help="(D, H, W) or (D, H, W, C) intensities")
    p.add_argument(
        "--probs",
        type=Path,
        required=True,
        help="class probabilities: .npy (L, D, H, W), or NIfTI with the labels last",
    )
    p.add_argument("--out", type=Path, required=True, help="label volume, .nii, .nii.gz or .npy")
    p.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        metavar=("DZ", "DY", "DX"),
        help="voxel size along the array's three axes (default: the NIfTI header's, else 1)",
    )
    p.add_argument(
        "--channel-scale",
        type=float,
        nargs="+",
        metavar="S",
        help="intensity factor, one or one per channel, applied before theta-beta (default 1)",
    )
    p.add_argument("--save-probs", type=Path, help="also save the (L, D, H, W) marginals, .npy")
    add_param_options(p)
    p.set_defaults(func=run)
    return p


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _nibabel(path: Path) -> Any:
    try:
        import nibabel
    except ImportError:
        raise ValueError(
            f"{path}: NIfTI needs nibabel: pip install 'deeplab[nifti]' (or pass .npy)"
        ) from None
    return nibabel


def load_nifti(path: Path, what: str) -> tuple[np.ndarray, Any]:
    """The data array and the image (header, affine) of a NIfTI file."""
    nib = _nibabel(path)
    if not path.is_file():
        raise ValueError(f"{what} {path}: no such file")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except (nib.filebasedimages.ImageFileError, EOFError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{what} {path}: not a readable NIfTI file ({reason})") from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise ValueError(f"{what} {path}: not a NIfTI image ({type(img).__name__})")
    # A 5-D NIfTI (X, Y, Z, 1, C) stores channels after a time axis of one.
    if data.ndim == 5 and data.shape[3] == 1:
        data = data[:, :, :, 0, :]
    return np.asarray(data), img


def load_npy(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"{what} {path}: no such file")
    with open(path, "rb") as handle:
        head = handle.read(len(NPY_MAGIC))
    if head != NPY_MAGIC:
        raise ValueError(f"{what} {path}: not a .npy file (no NumPy header); use .npy or NIfTI")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError:
        raise ValueError(f"{what} {path}: not a plain numeric .npy array") from None


def load_array(path: Path, what: str) -> tuple[np.ndarray, Any]:
    """A NIfTI or .npy array, with the NIfTI image (None for .npy)."""
    if _is_nifti(path):
        return load_nifti(path, what)
    if path.suffix.lower() != ".npy":
        raise ValueError(f"{what} {path}: expected .nii, .nii.gz or .npy")
    return load_npy(path, what), None


def spacing_of(img: Any, given: list[float] | None) -> tuple[float, float, float]:
    if given is not None:
        return (given[0], given[1], given[2])
    if img is None:
        return (1.0, 1.0, 1.0)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    if len(zooms) < 3 or not all(np.isfinite(z) and z > 0 for z in zooms):
        raise ValueError(f"the NIfTI header's voxel sizes {zooms} are not usable; pass --spacing")
    return zooms  # type: ignore[return-value]


def label_dtype(num_labels: int) -> type:
    return np.uint8 if num_labels <= 256 else np.int16


def nifti_bytes(
    labels: np.ndarray, like: Any, spacing: tuple[float, float, float], gz: bool
) -> bytes:
    """The label volume as NIfTI-1 bytes: the input's header and affine when there is a
    NIfTI input (``like``), else an affine of the voxel sizes."""
    nib = _nibabel(Path("out.nii"))
    if like is not None:
        header = like.header.copy()
        img = nib.Nifti1Image(labels, like.affine, header=header)
    else:
        img = nib.Nifti1Image(labels, np.diag([*spacing, 1.0]))
    img.set_data_dtype(labels.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    img.header.set_intent("label")
    data = img.to_bytes()
    return gzip.compress(data, compresslevel=6, mtime=0) if gz else data


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    from deeplab.crf import dense_crf_3d

    params = params_from_args(args)
    out_name = args.out.name.lower()
    if not (_is_nifti(args.out) or out_name.endswith(".npy")):
        raise ValueError(f"--out {args.out}: expected .nii, .nii.gz or .npy")
    volume, img = load_array(args.volume, "volume")
    probs, prob_img = load_array(args.probs, "--probs")
    if prob_img is not None and probs.ndim == 4:
        probs = np.moveaxis(probs, 3, 0)  # NIfTI stores the labels last
    if volume.ndim not in (3, 4):
        raise ValueError(
            f"volume {args.volume}: shape {volume.shape}, expected (D, H, W) or (D, H, W, C)"
        )
    if probs.ndim != 4 or probs.shape[1:] != volume.shape[:3]:
        raise ValueError(
            f"--probs {args.probs}: shape {probs.shape}, expected (L, {volume.shape[0]}, "
            f"{volume.shape[1]}, {volume.shape[2]}) for the volume"
        )
    spacing = spacing_of(img, args.spacing)
    start = time.perf_counter()
    q = dense_crf_3d(
        volume,
        probs,
        params,
        spacing=spacing,
        channel_scale=args.channel_scale,
        backend="numba",
    )
    seconds = time.perf_counter() - start
    labels = q.argmax(0).astype(label_dtype(q.shape[0]))
    if _is_nifti(args.out):
        data = nifti_bytes(labels, img, spacing, out_name.endswith(".gz"))
    else:
        data = npy_bytes(labels)
    atomic_write_bytes(args.out, data)
    if args.save_probs is not None:
        atomic_write_bytes(args.save_probs, npy_bytes(q))
    d, h, w = volume.shape[:3]
    print(
        f"{args.volume}: {q.shape[0]} labels, {d}x{h}x{w} voxels of "
        f"{spacing[0]:g}x{spacing[1]:g}x{spacing[2]:g}, {params.iterations} iterations in "
        f"{seconds:.2f} s -> {args.out}"
    )
    return 0
