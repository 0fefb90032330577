"""`deeplab crf`: refine probabilities or a coarse label map of one image with the CRF."""

from __future__ import annotations

import argparse
import io
import logging
import sys
import time
from pathlib import Path

import numpy as np

from deeplab.crf import CRFParams, dense_crf, dense_crf_from_labels
from deeplab.crf.meanfield import MAX_COMPAT
from deeplab.data.classes import write_label_png
from deeplab.data.image_io import load_image, load_label, open_checked, write_bytes

log = logging.getLogger(__name__)

# CLI option -> CRFParams field; the paper's names, with pydensecrf's in the help text.
PARAM_OPTIONS = {
    "w1": ("w1", float, "bilateral weight (pydensecrf: bilateral compat)"),
    "theta-alpha": ("theta_alpha", float, "bilateral position std, px (pydensecrf: sxy)"),
    "theta-beta": ("theta_beta", float, "bilateral colour std (pydensecrf: srgb)"),
    "w2": ("w2", float, "spatial weight (pydensecrf: Gaussian compat)"),
    "theta-gamma": ("theta_gamma", float, "spatial std, px (pydensecrf: Gaussian sxy)"),
    "iterations": ("iterations", int, "mean-field iterations"),
    "normalization": ("normalization", str, "after | symmetric | before | none"),
}
NPY_MAGIC = b"\x93NUMPY"


def add_param_options(
    parser: argparse.ArgumentParser, default: str | None = "deeplab-largefov"
) -> None:
    """--crf PRESET|FILE plus one option per CRFParams field."""
    group = parser.add_argument_group("CRF parameters")
    group.add_argument(
        "--crf",
        "--preset",
        dest="crf",
        default=default,
        metavar="PRESET|FILE",
        help=f"a preset ({', '.join(CRFParams.preset_names())}) or a JSON file (default {default})",
    )
    for opt, (dest, typ, text) in PARAM_OPTIONS.items():
        group.add_argument(
            f"--{opt}", dest=dest, type=typ, default=None, help=f"{text} (default: from --crf)"
        )


def apply_param_options(base: CRFParams, args: argparse.Namespace) -> CRFParams:
    """``base`` with the per-field options that were given."""
    return base.replace(**{dest: getattr(args, dest) for dest, _, _ in PARAM_OPTIONS.values()})


def check_params(params: CRFParams, args: argparse.Namespace) -> CRFParams:
    """Bounds the CRF checks only when it runs, under the paper's names: w1 and w2 become
    the kernels' weights (pydensecrf's ``compat``), which must stay within +-MAX_COMPAT."""
    for opt in ("w1", "w2"):
        value = getattr(params, opt)
        if not abs(value) <= MAX_COMPAT:
            if getattr(args, opt, None) is not None:
                where = f"--{opt} {value:g}"
            else:
                where = f"{opt} = {value:g} (from --crf {args.crf})"
            raise ValueError(f"{where}: must be within +-{MAX_COMPAT:g}")
    return params


def params_from_args(args: argparse.Namespace) -> CRFParams:
    return check_params(apply_param_options(CRFParams.resolve(args.crf), args), args)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "crf",
        help="refine one image's probabilities or coarse labels with the dense CRF",
        description="Refine class probabilities (--probs, an (L, H, W) .npy) or a coarse "
        "label map (--labels, a palette/grayscale PNG) of IMAGE with the fully connected CRF, "
        "and write the refined labels as a palette PNG.",
    )
    p.add_argument("image", type=Path, help="RGB image")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--probs", type=Path, help="(L, H, W) class probabilities, .npy")
    src.add_argument("--labels", type=Path, help="coarse label map PNG")
    p.add_argument(
        "--confidence",
        type=float,
        default=0.7,
        help="trust in the --labels classes, 0..1 (default 0.7)",
    )
    p.add_argument(
        "--unknown",
        default=None,
        metavar="VALUE|black|none",
        help="which --labels value means 'unknown' (left to the CRF): an integer, 'black' for "
        "the palette entry coloured black (the classic dense-CRF annotations) or 'none' "
        "(every value is a class). Default: none, with a warning when the mask has black "
        "pixels, which often mean 'unknown'",
    )
    p.add_argument("--out", type=Path, required=True, help="refined labels, palette PNG")
    p.add_argument("--save-probs", type=Path, help="also save the (L, H, W) marginals, .npy")
    add_param_options(p)
    p.set_defaults(func=run)
    return p


def load_probs(path: Path) -> np.ndarray:
    """An (L, H, W) array from a .npy file; anything else is a one-line ValueError."""
    with open(path, "rb") as handle:
        head = handle.read(len(NPY_MAGIC))
    if head != NPY_MAGIC:
        raise ValueError(
            f"--probs {path}: not a .npy file (no NumPy header); write it with numpy.save"
        )
    try:
        return np.load(path, allow_pickle=False)
    except ValueError:
        raise ValueError(f"--probs {path}: not a plain numeric .npy array") from None


def resolve_unknown(spec: str | None, path: Path, labels: np.ndarray) -> int | None:
    """--unknown as a label value: an integer, or 'black' looked up in the PNG's palette."""
    if spec is None or spec.lower() == "none":
        return None
    if spec != "black":
        try:
            return int(spec)
        except ValueError:
            raise ValueError(f"--unknown must be an integer or 'black', got {spec!r}") from None
    with open_checked(path, "label mask") as im:
        palette = im.getpalette()
    if palette is None:
        raise ValueError(f"{path}: --unknown black needs a palette PNG")
    colours = np.array(palette).reshape(-1, 3)
    black = [int(v) for v in np.unique(labels) if v < len(colours) and not colours[v].any()]
    if not black:
        raise ValueError(f"{path}: no pixel has a black palette colour")
    return black[0]


def black_values(path: Path, labels: np.ndarray) -> list[int]:
    """Values of ``labels`` drawn black: palette entries coloured (0, 0, 0), or 0 in a
    greyscale mask."""
    with open_checked(path, "label mask") as im:
        palette = im.getpalette() if im.mode == "P" else None
    present = [int(v) for v in np.unique(labels)]
    if palette is None:
        return [0] if 0 in present else []
    colours = np.array(palette).reshape(-1, 3)
    return [v for v in present if v < len(colours) and not colours[v].any()]


def warn_black(path: Path, labels: np.ndarray) -> None:
    """One line when a mask refined without --unknown has black pixels: they become a class
    of their own, which is wrong for the classic annotations where black means unknown."""
    black = black_values(path, labels)
    if not black:
        return
    share = 100 * float(np.isin(labels, black).mean())
    print(
        f"deeplab crf: warning: {path}: {share:.1f}% of the pixels are black (value "
        f"{black[0]}), refined as a class of their own; if black means 'unknown' pass "
        "--unknown black, or --unknown none to keep it a class without this warning",
        file=sys.stderr,
    )


def run(args: argparse.Namespace) -> int:
    from deeplab.cli.feedback import prepare_crf

    params = params_from_args(args)
    image = load_image(args.image)
    probs = coarse = unknown = None
    if args.probs is not None:
        probs = load_probs(args.probs)
        if probs.ndim != 3 or probs.shape[1:] != image.shape[:2]:
            raise ValueError(
                f"--probs {args.probs}: shape {probs.shape}, expected (L, {image.shape[0]}, "
                f"{image.shape[1]}) for the image"
            )
    else:
        coarse = load_label(args.labels)
        if coarse.shape != image.shape[:2]:
            raise ValueError(
                f"{args.labels}: label map {coarse.shape} does not match image {image.shape[:2]}"
            )
        unknown = resolve_unknown(args.unknown, args.labels, coarse)
        if args.unknown is None:
            warn_black(args.labels, coarse)
    prepare_crf(params)
    start = time.perf_counter()
    if probs is not None:
        q = dense_crf(image, probs, params)
        labels = q.argmax(0)
    else:
        assert coarse is not None
        q, labels = dense_crf_from_labels(
            image, coarse, params=params, confidence=args.confidence, unknown=unknown
        )
    seconds = time.perf_counter() - start
    write_label_png(args.out, labels.astype(np.uint8))
    if args.save_probs is not None:
        buf = io.BytesIO()
        np.save(buf, q)
        write_bytes(args.save_probs, buf.getvalue())
    print(
        f"{args.image}: {q.shape[0]} labels, {image.shape[1]}x{image.shape[0]} px, "
        f"{params.iterations} iterations in {seconds:.2f} s -> {args.out}"
    )
    return 0
