"""CPU speed and memory of deeplab's dense CRF against pydensecrf2, on the same inputs.

    python benchmarks/crf_cpu.py            # everything (about 5 minutes on 2 cores)
    python benchmarks/crf_cpu.py --quick    # the headline comparison only

Prints Markdown tables of measured figures; nothing is asserted. Each memory figure comes
from a fresh child process: peak resident memory during one run minus the resident
memory just before it (Linux /proc/self/status, peak reset through clear_refs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT.parent / "shared" / "data" / "voc_mini" / "VOC2012" / "JPEGImages" / "2007_000033.jpg"


def make_image(width: int, height: int) -> np.ndarray:
    """A real photo resized to (H, W, 3) uint8, or a textured synthetic one without it."""
    if PHOTO.is_file():
        with Image.open(PHOTO) as im:
            return np.array(im.convert("RGB").resize((width, height), Image.BILINEAR))
    rng = np.random.default_rng(0)
    small = rng.integers(
        0, 256, size=(max(height // 16, 2), max(width // 16, 2), 3), dtype=np.uint8
    )
    return np.array(Image.fromarray(small).resize((width, height), Image.BILINEAR))


def make_probs(num_labels: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Network-like probabilities: stride-8 scores bilinearly upsampled, then softmax."""
    rng = np.random.default_rng(seed)
    gh, gw = height // 8 + 1, width // 8 + 1
    coarse = rng.normal(size=(num_labels, gh, gw)).astype(np.float32) * 3
    up = np.stack(
        [np.array(Image.fromarray(c).resize((width, height), Image.BILINEAR)) for c in coarse]
    )
    up -= up.max(0, keepdims=True)
    e = np.exp(up)
    return (e / e.sum(0, keepdims=True)).astype(np.float32)


def run_ours(image: np.ndarray, probs: np.ndarray) -> np.ndarray:
    from deeplab.crf import CRFParams, dense_crf

    return dense_crf(image, probs, CRFParams.preset("deeplab-largefov"))


def run_reference(image: np.ndarray, probs: np.ndarray) -> np.ndarray:
    import pydensecrf.densecrf as dcrf

    num_labels, h, w = probs.shape
    unary = np.ascontiguousarray(-np.log(np.maximum(probs, 1e-8)).reshape(num_labels, -1))
    d = dcrf.DenseCRF2D(w, h, num_labels)
    d.setUnaryEnergy(unary)
    d.addPairwiseGaussian(sxy=3, compat=3, normalization=dcrf.NORMALIZE_AFTER)
    d.addPairwiseBilateral(
        sxy=121,
        srgb=5,
        rgbim=np.ascontiguousarray(image),
        compat=4,
        normalization=dcrf.NORMALIZE_AFTER,
    )
    return np.array(d.inference(10)).reshape(num_labels, h, w)


IMPLEMENTATIONS = {"deeplab": run_ours, "pydensecrf2": run_reference}


def timed(fn, *args, repeats: int) -> list[float]:
    fn(*args)  # warm-up: numba loads its cached machine code, caches fill
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        out.append(time.perf_counter() - start)
    return out


def timed_pair(fn_a, fn_b, *args, repeats: int) -> tuple[list[float], list[float]]:
    """Alternate the two implementations run by run, so that any drift of the machine's
    speed (other tenants, frequency) falls on both alike."""
    fn_a(*args)
    fn_b(*args)
    out_a, out_b = [], []
    for _ in range(repeats):
        for fn, out in ((fn_a, out_a), (fn_b, out_b)):
            start = time.perf_counter()
            fn(*args)
            out.append(time.perf_counter() - start)
    return out_a, out_b


def set_threads(n: int | None) -> None:
    import numba

    numba.set_num_threads(n or numba.config.NUMBA_NUM_THREADS)


# -- memory, measured in a child process ------------------------------------------------
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _child_memory(impl: str, width: int, height: int, labels: int) -> None:
    image = make_image(width, height)
    probs = make_probs(labels, height, width)
    # Compile / load the kernels on a small input so that only the run itself is measured.
    IMPLEMENTATIONS[impl](make_image(64, 48), make_probs(labels, 48, 64))
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    IMPLEMENTATIONS[impl](image, probs)
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    print(json.dumps({"peak_mib": (peak - before) / 1024, "seconds": seconds}))


def memory(impl: str, width: int, height: int, labels: int) -> dict:
    cmd = [sys.executable, __file__, "--child", impl, str(width), str(height), str(labels)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- reports ------------------------------------------------------------------------------
def headline(repeats: int) -> None:
    w, h, labels = 500, 375, 21
    image, probs = make_image(w, h), make_probs(labels, h, w)
    q_ours, q_ref = run_ours(image, probs), run_reference(image, probs)
    print(f"## {w}x{h}, {labels} labels, preset deeplab-largefov (10 iterations, normalise-after)")
    print()
    agree = float((q_ours.argmax(0) == q_ref.argmax(0)).mean())
    max_dq = float(np.abs(q_ours - q_ref).max())
    print(f"agreement with pydensecrf2: labels {agree:.6f}, max |dQ| {max_dq:.2e}")
    print()
    print("| threads | deeplab (ms) | pydensecrf2 (ms) | ratio |")
    print("|---|---|---|---|")
    for threads in (None, 1):
        set_threads(threads)
        ours_t, ref_t = timed_pair(run_ours, run_reference, image, probs, repeats=repeats)
        ours, ref = statistics.median(ours_t), statistics.median(ref_t)
        label = "all" if threads is None else str(threads)
        print(f"| {label} | {ours * 1e3:.0f} | {ref * 1e3:.0f} | {ours / ref:.2f} |")
    set_threads(None)
    print()
    print("| peak memory above baseline | deeplab (MiB) | pydensecrf2 (MiB) |")
    print("|---|---|---|")
    ours_m = memory("deeplab", w, h, labels)["peak_mib"]
    ref_m = memory("pydensecrf2", w, h, labels)["peak_mib"]
    print(f"| {w}x{h}, {labels} labels | {ours_m:.0f} | {ref_m:.0f} |")
    print()


def scaling(repeats: int) -> None:
    print("## Scaling (deeplab, all threads)")
    print()
    print("| pixels | size | labels | ms | ms per megapixel-label |")
    print("|---|---|---|---|---|")
    base_w, base_h = 500, 375
    for mp in (0.25, 0.5, 1, 2, 4, 8, 12):
        scale = (mp * 1e6 / (base_w * base_h)) ** 0.5
        w, h = int(base_w * scale), int(base_h * scale)
        image, probs = make_image(w, h), make_probs(21, h, w)
        t = statistics.median(timed(run_ours, image, probs, repeats=1 if mp > 2 else repeats))
        per = t * 1e3 / (w * h / 1e6) / 21
        print(f"| {w * h / 1e6:.2f} MP | {w}x{h} | 21 | {t * 1e3:.0f} | {per:.1f} |")
    image = make_image(base_w, base_h)
    for labels in (2, 5, 10, 21, 50, 100):
        probs = make_probs(labels, base_h, base_w)
        t = statistics.median(timed(run_ours, image, probs, repeats=repeats))
        print(
            f"| {base_w * base_h / 1e6:.2f} MP | {base_w}x{base_h} | {labels} | {t * 1e3:.0f} | "
            f"{t * 1e3 / (base_w * base_h / 1e6) / labels:.1f} |"
        )
    print()
    m = memory("deeplab", 4000, 3000, 21)
    print(
        f"4000x3000, 21 labels: {m['seconds']:.1f} s, peak memory above baseline "
        f"{m['peak_mib'] / 1024:.2f} GiB"
    )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="headline comparison only")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        impl, w, h, labels = args.child
        _child_memory(impl, int(w), int(h), int(labels))
        return
    import numba

    print(f"numba {numba.__version__}, {numba.config.NUMBA_NUM_THREADS} threads available")
    print()
    headline(args.repeats)
    if not args.quick:
        scaling(args.repeats)


if __name__ == "__main__":
    main()
