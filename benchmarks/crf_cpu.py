"""CPU speed and memory of deeplab's dense CRF against pydensecrf2, on the same inputs.

    python benchmarks/crf_cpu.py            # everything (about 8 minutes on 2 cores)
    python benchmarks/crf_cpu.py --quick    # the headline comparison only
    python benchmarks/crf_cpu.py --busy     # headline, busy machine, presets, pools only

Sections: the headline comparison (our default threads and one thread against
pydensecrf2, alternated run by run); the same with one competing busy process (a child
spinning on one core), adding our threads fixed at the maximum
(``DEEPLAB_ADAPTIVE_THREADS=0``); other settings people run (preset krahenbuhl2013;
pydensecrf-style calls with sxy 1 and symmetric normalisation through the drop-in);
process pools (multiprocessing and joblib, sizes 1, 2 and 4) refining different images,
against one process's one-thread rate; scaling with pixels and labels.

Prints Markdown tables of measured figures; nothing is asserted. Each memory figure comes
from a fresh child process: peak resident memory during one run minus the resident
memory just before it (Linux /proc/self/status, peak reset through clear_refs).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "tests" / "data" / "voc_mini" / "VOC2012" / "JPEGImages" / "2007_000033.jpg"


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


def run_ours(image: np.ndarray, probs: np.ndarray, preset: str = "deeplab-largefov") -> np.ndarray:
    from deeplab.crf import CRFParams, dense_crf

    return dense_crf(image, probs, CRFParams.preset(preset))


def run_ours_krahenbuhl(image: np.ndarray, probs: np.ndarray) -> np.ndarray:
    return run_ours(image, probs, "krahenbuhl2013")


def run_reference_krahenbuhl(image: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """pydensecrf2 with the krahenbuhl2013 preset (symmetric normalisation, 5 iterations)."""
    import pydensecrf.densecrf as dcrf

    return _pydensecrf_style(
        dcrf,
        image,
        probs,
        sxy_gauss=3,
        compat_gauss=3,
        sxy_bilat=80,
        srgb=13,
        compat_bilat=10,
        iterations=5,
    )


def _pydensecrf_style(
    dcrf, image, probs, *, sxy_gauss, compat_gauss, sxy_bilat, srgb, compat_bilat, iterations
):
    """The classic pydensecrf script, through whichever module ``dcrf`` is."""
    num_labels, h, w = probs.shape
    unary = np.ascontiguousarray(-np.log(np.maximum(probs, 1e-8)).reshape(num_labels, -1))
    d = dcrf.DenseCRF2D(w, h, num_labels)
    d.setUnaryEnergy(unary)
    d.addPairwiseGaussian(sxy=sxy_gauss, compat=compat_gauss)
    d.addPairwiseBilateral(
        sxy=sxy_bilat, srgb=srgb, rgbim=np.ascontiguousarray(image), compat=compat_bilat
    )
    return np.array(d.inference(iterations)).reshape(num_labels, h, w)


# pydensecrf's README example: Gaussian sxy 1 (spatial smoothing at pixel scale), bilateral
# sxy 80 / srgb 13, symmetric normalisation (its default), 5 iterations.
_DROPIN = {
    "sxy_gauss": 1,
    "compat_gauss": 3,
    "sxy_bilat": 80,
    "srgb": 13,
    "compat_bilat": 10,
    "iterations": 5,
}


def run_dropin(image: np.ndarray, probs: np.ndarray) -> np.ndarray:
    import deeplab.crf.pydensecrf as dcrf

    return _pydensecrf_style(dcrf, image, probs, **_DROPIN)


def run_reference_dropin(image: np.ndarray, probs: np.ndarray) -> np.ndarray:
    import pydensecrf.densecrf as dcrf

    return _pydensecrf_style(dcrf, image, probs, **_DROPIN)


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


# -- a busy machine -------------------------------------------------------------------------
@contextlib.contextmanager
def busy_process():
    """Another process spinning on one core for the duration of the block."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)  # let the scheduler see it
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def fixed_threads():
    """Our kernels on every thread the cap allows, whatever else runs (no adaptation)."""
    os.environ["DEEPLAB_ADAPTIVE_THREADS"] = "0"
    try:
        yield
    finally:
        del os.environ["DEEPLAB_ADAPTIVE_THREADS"]


def _one_thread(fn):
    def run(*args):
        import numba

        before = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            return fn(*args)
        finally:
            numba.set_num_threads(before)

    return run


def _fixed(fn):
    def run(*args):
        with fixed_threads():
            return fn(*args)

    return run


def busy(repeats: int) -> None:
    """Quiet and with one competing busy process: default, one thread, threads fixed at the
    maximum, and pydensecrf2, all alternated run by run within each condition."""
    w, h, labels = 500, 375, 21
    image, probs = make_image(w, h), make_probs(labels, h, w)
    arms = {
        "deeplab, default": run_ours,
        "deeplab, 1 thread": _one_thread(run_ours),
        "deeplab, threads fixed at the maximum": _fixed(run_ours),
        "pydensecrf2": run_reference,
    }
    print(f"## A busy machine: {w}x{h}, {labels} labels, deeplab-largefov (medians of {repeats})")
    print()
    print("| machine | " + " | ".join(arms) + " | default / pydensecrf2 | default / 1 thread |")
    print("|---|" + "---|" * (len(arms) + 2))
    for condition in ("quiet", "one busy process"):
        ctx = busy_process() if condition != "quiet" else contextlib.nullcontext()
        with ctx:
            times = timed_many(list(arms.values()), image, probs, repeats=repeats)
        med = [statistics.median(t) for t in times]
        cells = " | ".join(f"{m * 1e3:.0f} ms" for m in med)
        print(f"| {condition} | {cells} | {med[0] / med[3]:.2f} | {med[0] / med[1]:.2f} |")
    print()


def timed_many(fns, *args, repeats: int) -> list[list[float]]:
    """Like :func:`timed_pair` for any number of implementations."""
    for fn in fns:
        fn(*args)
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, times in zip(fns, out, strict=True):
            start = time.perf_counter()
            fn(*args)
            times.append(time.perf_counter() - start)
    return out


def presets(repeats: int) -> None:
    """Settings people run besides the benchmark's: the krahenbuhl2013 preset and the
    classic pydensecrf script (sxy 1, symmetric) through the drop-in."""
    w, h, labels = 500, 375, 21
    image, probs = make_image(w, h), make_probs(labels, h, w)
    print("## Other settings (500x375, 21 labels, both alternated run by run)")
    print()
    print("| setting | threads | deeplab (ms) | pydensecrf2 (ms) | ratio | labels agreeing |")
    print("|---|---|---|---|---|---|")
    cases = {
        "preset krahenbuhl2013 (symmetric, 5 iterations)": (
            run_ours_krahenbuhl,
            run_reference_krahenbuhl,
        ),
        "drop-in, sxy 1 / 80, srgb 13, symmetric, 5 iterations": (run_dropin, run_reference_dropin),
    }
    for name, (ours, ref) in cases.items():
        agree = float((ours(image, probs).argmax(0) == ref(image, probs).argmax(0)).mean())
        for threads, fn in (("default", ours), ("1", _one_thread(ours))):
            ours_t, ref_t = timed_pair(fn, ref, image, probs, repeats=repeats)
            a, b = statistics.median(ours_t), statistics.median(ref_t)
            print(
                f"| {name} | {threads} | {a * 1e3:.0f} | {b * 1e3:.0f} | {a / b:.2f} | "
                f"{agree:.4%} |"
            )
    print()


# -- process pools --------------------------------------------------------------------------
POOL_IMAGES = 4
POOL_TASKS = 24


@functools.lru_cache(maxsize=POOL_IMAGES)
def _pool_inputs(index: int) -> tuple[np.ndarray, np.ndarray]:
    image = make_image(500, 375)
    if index % 2:
        image = np.ascontiguousarray(image[:, ::-1])
    return image, make_probs(21, 375, 500, seed=index)


def pool_task(index: int) -> int:
    """What a user's worker does: refine one image (inputs cached per process)."""
    image, probs = _pool_inputs(index % POOL_IMAGES)
    return int(run_ours(image, probs).argmax(0).sum())


def _pool_warm(_: int) -> int:
    for i in range(POOL_IMAGES):
        _pool_inputs(i)
    return pool_task(0)


def pools() -> None:
    import multiprocessing

    import numba

    cores = len(os.sched_getaffinity(0))
    numba.set_num_threads(1)
    for i in range(POOL_IMAGES):
        pool_task(i)
    start = time.perf_counter()
    for i in range(POOL_TASKS // 2):
        pool_task(i)
    single = (POOL_TASKS // 2) / (time.perf_counter() - start)
    set_threads(None)
    print(
        f"## Process pools: {POOL_TASKS} different 500x375 21-label images per run, {cores} cores"
    )
    print()
    print(f"one process, one thread: {single:.2f} images/s")
    print()
    print("| pool | processes | images/s | / (min(N, cores) x one-thread rate) |")
    print("|---|---|---|---|")
    ctx = multiprocessing.get_context("spawn")
    for n in (1, 2, 4):
        with ctx.Pool(n) as pool:
            pool.map(_pool_warm, range(4 * n), chunksize=1)
            start = time.perf_counter()
            pool.map(pool_task, range(POOL_TASKS), chunksize=1)
            rate = POOL_TASKS / (time.perf_counter() - start)
        print(f"| multiprocessing | {n} | {rate:.2f} | {rate / (min(n, cores) * single):.2f} |")
    try:
        from joblib import Parallel, delayed
    except ImportError:
        print("| joblib | - | not installed | |")
        print()
        return
    # loky's workers import the task by module name, as they would a user's module.
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    sys.path.insert(0, here)
    import crf_cpu as module

    for n in (1, 2, 4):
        with Parallel(n_jobs=n) as parallel:
            parallel(delayed(module._pool_warm)(i) for i in range(4 * n))
            start = time.perf_counter()
            parallel(delayed(module.pool_task)(i) for i in range(POOL_TASKS))
            rate = POOL_TASKS / (time.perf_counter() - start)
        print(f"| joblib (loky) | {n} | {rate:.2f} | {rate / (min(n, cores) * single):.2f} |")
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
    parser.add_argument(
        "--busy", action="store_true", help="headline, busy machine, other settings and pools only"
    )
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
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average at start: {load}")
    print()
    headline(args.repeats)
    if args.quick:
        return
    busy(args.repeats)
    presets(args.repeats)
    pools()
    if not args.busy:
        scaling(args.repeats)


if __name__ == "__main__":
    main()
