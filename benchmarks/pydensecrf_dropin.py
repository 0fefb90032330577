"""Speed of deeplab.crf.pydensecrf against pydensecrf2: the same code, the module swapped.

    python benchmarks/pydensecrf_dropin.py [--repeats 5] [--threads N]

Two workloads, each run through both modules in this one process on the same inputs:

- pydensecrf's classic demo on the vendored photos (crf_examples/im{1,2,3}.png with their
  coarse annotations): unary_from_labels(gt_prob=0.7, zero_unsure=True), Gaussian sxy=3
  compat=3, bilateral sxy=80 srgb=13 compat=10, symmetric normalisation, 5 iterations;
- a DeepLab-style run: 500x375, 21 labels, unary_from_softmax of network-like scores,
  deeplab-largefov settings (Gaussian sxy=3 compat=3, bilateral sxy=121 srgb=5 compat=4,
  NORMALIZE_AFTER, 10 iterations).

Each timing covers the whole flow (CRF construction, unary, kernels, inference) after one
warm-up call per module; the two modules alternate so machine load hits both alike.
Prints median milliseconds, the ratio and the agreement of the outputs; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"  # the vendored photos (tests/data/README.md)
EXAMPLES = DATA / "crf_examples"
VOC_PHOTO = DATA / "voc_mini" / "VOC2012" / "JPEGImages" / "2007_000033.jpg"


def classic_demo(dcrf: ModuleType, utils: ModuleType, img: np.ndarray, labels: np.ndarray):
    """pydensecrf's example: labels 1..n from the annotation colours, 0 = unknown."""
    n_labels = int(labels.max())
    d = dcrf.DenseCRF2D(img.shape[1], img.shape[0], n_labels)
    d.setUnaryEnergy(utils.unary_from_labels(labels, n_labels, gt_prob=0.7, zero_unsure=True))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=img, compat=10)
    return np.array(d.inference(5))


def deeplab_largefov(dcrf: ModuleType, utils: ModuleType, img: np.ndarray, probs: np.ndarray):
    """DeepLab-LargeFOV's CRF (paper section 4.2) written against the pydensecrf API."""
    d = dcrf.DenseCRF2D(img.shape[1], img.shape[0], probs.shape[0])
    d.setUnaryEnergy(utils.unary_from_softmax(probs))
    d.addPairwiseGaussian(sxy=3, compat=3, normalization=dcrf.NORMALIZE_AFTER)
    d.addPairwiseBilateral(sxy=121, srgb=5, rgbim=img, compat=4, normalization=dcrf.NORMALIZE_AFTER)
    return np.array(d.inference(10))


def annotation_labels(path: Path) -> np.ndarray:
    """Colours of a coarse annotation as labels 1..n, black (unknown) as 0."""
    with Image.open(path) as im:
        rgb = np.array(im.convert("RGB")).astype(np.uint32)
    packed = rgb[..., 0] + (rgb[..., 1] << 8) + (rgb[..., 2] << 16)
    colours, labels = np.unique(packed, return_inverse=True)
    labels = labels.reshape(packed.shape)
    return labels if colours[0] == 0 else labels + 1


def voc_like_inputs(width: int = 500, height: int = 375, num_labels: int = 21):
    """A VOC photo resized to width x height, and softmax probabilities of smooth scores
    (stride-8 noise bilinearly upsampled, as a network's output)."""
    with Image.open(VOC_PHOTO) as im:
        img = np.array(im.convert("RGB").resize((width, height), Image.BILINEAR))
    rng = np.random.default_rng(0)
    coarse = rng.normal(size=(num_labels, height // 8 + 1, width // 8 + 1)).astype(np.float32)
    scores = np.stack(
        [np.array(Image.fromarray(3 * c).resize((width, height), Image.BILINEAR)) for c in coarse]
    )
    e = np.exp(scores - scores.max(0, keepdims=True))
    return img, (e / e.sum(0, keepdims=True)).astype(np.float32)


def compare(
    name: str,
    flow: Callable[..., np.ndarray],
    args: tuple,
    modules: dict[str, tuple[ModuleType, ModuleType]],
    repeats: int,
) -> tuple[float, float]:
    outputs = {label: flow(*mods, *args) for label, mods in modules.items()}  # warm-up
    times: dict[str, list[float]] = {label: [] for label in modules}
    for _ in range(repeats):
        for label, mods in modules.items():
            t0 = time.perf_counter()
            flow(*mods, *args)
            times[label].append(1e3 * (time.perf_counter() - t0))
    ours_ms = statistics.median(times["deeplab"])
    ref_ms = statistics.median(times["pydensecrf2"])
    q, q_ref = outputs["deeplab"], outputs["pydensecrf2"]
    agree = float((q.argmax(0) == q_ref.argmax(0)).mean())
    diff = float(np.abs(q - q_ref).max())
    print(
        f"| {name} | {ref_ms:.1f} | {ours_ms:.1f} | {ref_ms / ours_ms:.2f}x | "
        f"{100 * agree:.3f}% | {diff:.1e} |"
    )
    return ours_ms, ref_ms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per module")
    parser.add_argument("--threads", type=int, default=None, help="numba threads (default all)")
    opts = parser.parse_args(argv)
    try:
        import pydensecrf.densecrf as ref_dcrf
        import pydensecrf.utils as ref_utils
    except ImportError:
        print("pydensecrf2 is not installed: pip install pydensecrf2", file=sys.stderr)
        return 1
    import numba

    import deeplab.crf.pydensecrf as our_dcrf
    import deeplab.crf.pydensecrf.utils as our_utils

    if opts.threads is not None:
        numba.set_num_threads(opts.threads)
    modules = {"deeplab": (our_dcrf, our_utils), "pydensecrf2": (ref_dcrf, ref_utils)}
    print(
        f"numba threads: {numba.get_num_threads()} of {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.1f}; median of {opts.repeats} runs after a warm-up\n"
    )
    print("| workload | pydensecrf2 ms | deeplab ms | speed-up | labels equal | max dQ |")
    print("|---|---|---|---|---|---|")
    for k in (1, 2, 3):
        img = np.array(Image.open(EXAMPLES / f"im{k}.png").convert("RGB"))
        labels = annotation_labels(EXAMPLES / f"anno{k}.png")
        h, w = img.shape[:2]
        compare(
            f"classic demo im{k} ({w}x{h}, {labels.max()} labels, 5 it)",
            classic_demo,
            (img, labels),
            modules,
            opts.repeats,
        )
    img, probs = voc_like_inputs()
    compare(
        "deeplab-largefov 500x375, 21 labels, 10 it",
        deeplab_largefov,
        (img, probs),
        modules,
        opts.repeats,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
