"""`deeplab crf`: refine probabilities or a coarse label map of one image with the CRF."""

from __future__ import annotations

import argparse
import io
import logging
import time
from pathlib import Path

import numpy as np

from deeplab.crf import CRFParams, dense_crf, dense_crf_from_labels
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


def add_param_options(parser: argparse.ArgumentParser, default: str = "deeplab-largefov") -> None:
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
        group.add_argument(f"--{opt}", dest=dest, type=typ, default=None, help=text)


def params_from_args(args: argparse.Namespace) -> CRFParams:
    base = CRFParams.resolve(args.crf)
    return base.replace(**{dest: getattr(args, dest) for dest, _, _ in PARAM_OPTIONS.values()})


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
    p.add_argument("--confidence", type=float, default=0.7, help="trust in --labels (0..1)")
    p.add_argument(
        "--unknown",
        default=None,
        help="label value meaning 'unknown', or 'black' for the palette entry coloured black "
        "(the classic dense-CRF annotations)",
    )
    p.add_argument("--out", type=Path, required=True, help="refined labels, palette PNG")
    p.add_argument("--save-probs", type=Path, help="also save the (L, H, W) marginals, .npy")
    add_param_options(p)
    p.set_defaults(func=run)
    return p


def load_probs(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{path}: not a plain numeric .npy array ({exc})") from None


def resolve_unknown(spec: str | None, path: Path, labels: np.ndarray) -> int | None:
    """--unknown as a label value: an integer, or 'black' looked up in the PNG's palette."""
    if spec is None:
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


def run(args: argparse.Namespace) -> int:
    params = params_from_args(args)
    image = load_image(args.image)
    start = time.perf_counter()
    if args.probs is not None:
        probs = load_probs(args.probs)
        q = dense_crf(image, probs, params)
        labels = q.argmax(0)
    else:
        coarse = load_label(args.labels)
        if coarse.shape != image.shape[:2]:
            raise ValueError(
                f"{args.labels}: label map {coarse.shape} does not match image {image.shape[:2]}"
            )
        unknown = resolve_unknown(args.unknown, args.labels, coarse)
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
