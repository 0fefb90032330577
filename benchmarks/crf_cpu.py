"""CPU speed and memory of deeplab's dense CRF against pydensecrf2, on the same inputs.

    python benchmarks/crf_cpu.py            # everything (about 8 minutes on 2 cores)
    python benchmarks/crf_cpu.py --quick    # the headline comparison only
    python benchmarks/crf_cpu.py --busy     # headline, busy machine, presets, pools only

Sections: the headline comparison (our default threads and one thread against
pydensecrf2); the same with one competing busy process (a child
spinning on one core), adding our threads fixed at the maximum
(``DEEPLAB_ADAPTIVE_THREADS=0``); other settings people run (preset krahenbuhl2013;
pydensecrf-style calls with sxy 1 and symmetric normalisation through the drop-in);
process pools (multiprocessing and joblib, sizes 1, 2 and 4) refining different images,
against one process's one-thread rate; scaling with pixels and labels.

Every timed implementation runs in a process of its own, as its users run it (what one
keeps on its heap between calls must not speed up or slow down another), and the
processes are alternated call by call: medians of ``--repeats`` calls each after two
warm-up calls. Prints Markdown tables of measured figures; nothing is asserted. Each
memory figure comes from a fresh child process: peak resident memory during one run
minus the resident memory just before it (Linux /proc/self/status, peak reset through
clear_refs).
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


# Every timed arm runs in a process of its own, as users run each implementation: the
# heap each keeps between calls (deeplab.crf.heap raises glibc's M_TOP_PAD) is then its
# own, and one implementation's allocations do not warm or cool the other's.
ARMS = {
    "deeplab": (run_ours, None),
    "deeplab, 1 thread": (run_ours, 1),
    "deeplab, threads fixed": (run_ours, "fixed"),
    "pydensecrf2": (run_reference, None),
    "deeplab krahenbuhl2013": (run_ours_krahenbuhl, None),
    "deeplab krahenbuhl2013, 1 thread": (run_ours_krahenbuhl, 1),
    "pydensecrf2 krahenbuhl2013": (run_reference_krahenbuhl, None),
    "drop-in": (run_dropin, None),
    "drop-in, 1 thread": (run_dropin, 1),
    "pydensecrf2 drop-in call": (run_reference_dropin, None),
}


def _serve(arm: str, width: int, height: int, labels: int) -> None:
    """Child: time one arm on request (a line on stdin), one figure per line out."""
    fn, threads = ARMS[arm]
    if threads == "fixed":
        os.environ["DEEPLAB_ADAPTIVE_THREADS"] = "0"
    elif threads == 1:
        import numba

        numba.set_num_threads(1)
    image, probs = make_image(width, height), make_probs(labels, height, width)
    fn(image, probs)  # warm-up: numba loads its cached machine code, caches fill
    fn(image, probs)
    print("ready", flush=True)
    for _ in sys.stdin:
        start = time.perf_counter()
        fn(image, probs)
        print(time.perf_counter() - start, flush=True)


def timed_in_processes(
    arms: list[str], width: int, height: int, labels: int, *, repeats: int
) -> list[list[float]]:
    """Seconds per call of each arm, each in a process of its own, alternated call by
    call so that any drift of the machine's speed falls on all alike."""
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--serve", arm, str(width), str(height), str(labels)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for arm in arms
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        out: list[list[float]] = [[] for _ in arms]
        for _ in range(repeats):
            for proc, times in zip(procs, out, strict=True):
                assert proc.stdin is not None and proc.stdout is not None
                # The previous worker's idle threads spin for a moment after its call: on
                # a quiet machine nothing else may be running when a call starts.
                time.sleep(0.05)
                proc.stdin.write("go\n")
                proc.stdin.flush()
                times.append(float(proc.stdout.readline()))
        return out
    finally:
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait()


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
    times = timed_in_processes(
        ["deeplab", "deeplab, 1 thread", "pydensecrf2"], w, h, labels, repeats=repeats
    )
    ours, one, ref = (statistics.median(t) for t in times)
    print(f"| all | {ours * 1e3:.0f} | {ref * 1e3:.0f} | {ours / ref:.2f} |")
    print(f"| 1 | {one * 1e3:.0f} | {ref * 1e3:.0f} | {one / ref:.2f} |")
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


def busy(repeats: int) -> None:
    """Quiet and with one competing busy process: default, one thread, threads fixed at the
    maximum, and pydensecrf2, all alternated run by run within each condition."""
    w, h, labels = 500, 375, 21
    arms = ["deeplab", "deeplab, 1 thread", "deeplab, threads fixed", "pydensecrf2"]
    names = ["deeplab, default", "deeplab, 1 thread", "deeplab, threads fixed at the maximum"]
    print(f"## A busy machine: {w}x{h}, {labels} labels, deeplab-largefov (medians of {repeats})")
    print()
    header = " | ".join([*names, "pydensecrf2"])
    print(f"| machine | {header} | default / pydensecrf2 | default / 1 thread |")
    print("|---|" + "---|" * (len(arms) + 2))
    for condition in ("quiet", "one busy process"):
        ctx = busy_process() if condition != "quiet" else contextlib.nullcontext()
        with ctx:
            times = timed_in_processes(arms, w, h, labels, repeats=repeats)
        med = [statistics.median(t) for t in times]
        cells = " | ".join(f"{m * 1e3:.0f} ms" for m in med)
        print(f"| {condition} | {cells} | {med[0] / med[3]:.2f} | {med[0] / med[1]:.2f} |")
    print()


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
            run_ours_krahenbuhl, run_reference_krahenbuhl, "deeplab krahenbuhl2013",
            "pydensecrf2 krahenbuhl2013",
        ),
        "drop-in, sxy 1 / 80, srgb 13, symmetric, 5 iterations": (
            run_dropin, run_reference_dropin, "drop-in", "pydensecrf2 drop-in call",
        ),
    }  # fmt: skip
    for name, (ours, ref, arm, ref_arm) in cases.items():
        agree = float((ours(image, probs).argmax(0) == ref(image, probs).argmax(0)).mean())
        times = timed_in_processes(
            [arm, f"{arm}, 1 thread", ref_arm], w, h, labels, repeats=repeats
        )
        a, a1, b = (statistics.median(t) for t in times)
        for threads, t in (("default", a), ("1", a1)):
            print(
                f"| {name} | {threads} | {t * 1e3:.0f} | {b * 1e3:.0f} | {t / b:.2f} | "
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
    parser.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        arm, w, h, labels = args.serve
        _serve(arm, int(w), int(h), int(labels))
        return
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
