"""The dense CRF on volumes: deeplab against the 3-D CRFs people use, side by side.

    python benchmarks/crf_3d.py                  # 100x150x120, 2 and 5 labels; growth to 128^3
    python benchmarks/crf_3d.py --full           # ... and growth to 256^3, more repeats
    python benchmarks/crf_3d.py --size 40 60 50 --growth 32 48 --repeats 1   # a quick look
    python benchmarks/crf_3d.py --growth --repeats 3   # the side-by-side tables only

A two-channel volume (two MRI-like contrasts of smooth blobs, 0..255, with noise) and
network-like probabilities (coarse scores upsampled, softmax), the same for every
implementation: deeplab's :func:`deeplab.crf.dense_crf_3d` (all threads and one thread),
pydensecrf2's generic ``DenseCRF`` with the same 3-D features (what its users write),
SimpleCRF's ``denseCRF3D`` and MONAI's ``CRF`` where they are installed and work (else
the table says why not). Times include building the features and lattices, as a user's
call does. Each implementation runs in a process of its own, as its users run it, after a
warm-up call; the processes take turns call by call. Peak memory: a fresh child process per
figure, peak resident memory during one run minus the resident memory just before it
(Linux /proc/self/status, peak reset through clear_refs). Prints Markdown; asserts
nothing.

Model (all implementations): spatial kernel w2 = 2, 5 voxels; bilateral w1 = 3, 5 voxels,
intensity std 5; 5 iterations; symmetric normalisation, the default of pydensecrf2 and of
SimpleCRF's DenseCRF code; spacing 1 mm (SimpleCRF and MONAI take voxel units).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

W1, THETA_ALPHA, THETA_BETA, W2, THETA_GAMMA, ITERATIONS = 3.0, 5.0, 5.0, 2.0, 5.0, 5
NORMALIZATION = "symmetric"


# -- inputs ---------------------------------------------------------------------------------
def _upsample(coarse: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Trilinear upsampling of (..., d, h, w) to (..., D, H, W)."""
    out = coarse
    for axis, size in zip((-3, -2, -1), shape, strict=True):
        n = out.shape[axis]
        pos = np.linspace(0, n - 1, size)
        lo = np.floor(pos).astype(int).clip(0, n - 2)
        frac = (pos - lo).reshape([-1 if a == axis % out.ndim else 1 for a in range(out.ndim)])
        out = np.take(out, lo, axis=axis) * (1 - frac) + np.take(out, lo + 1, axis=axis) * frac
    return out


def make_volume(shape: tuple[int, int, int], channels: int = 2, seed: int = 0) -> np.ndarray:
    """(D, H, W, C) uint8: smooth blobs in two contrasts, with noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=tuple(max(s // 12, 2) for s in shape))
    tissue = _upsample(coarse, shape)
    chans = []
    for c in range(channels):
        contrast = 60 * (tissue if c % 2 == 0 else -tissue) + 128
        chans.append(contrast + rng.normal(size=shape) * 6)
    return np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)


def make_probs(shape: tuple[int, int, int], labels: int, seed: int = 1) -> np.ndarray:
    """(L, D, H, W) float32 probabilities: coarse scores (stride 8) upsampled, softmax."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(labels, *(max(s // 8, 2) for s in shape))) * 3
    up = _upsample(coarse, shape).astype(np.float32)
    up -= up.max(0, keepdims=True)
    e = np.exp(up)
    return (e / e.sum(0, keepdims=True)).astype(np.float32)


# -- implementations --------------------------------------------------------------------------
def run_deeplab(volume: np.ndarray, probs: np.ndarray) -> np.ndarray:
    from deeplab.crf import CRFParams, dense_crf_3d

    params = CRFParams(
        w1=W1, theta_alpha=THETA_ALPHA, theta_beta=THETA_BETA, w2=W2, theta_gamma=THETA_GAMMA,
        iterations=ITERATIONS, normalization=NORMALIZATION,
    )  # fmt: skip
    return dense_crf_3d(volume, probs, params, spacing=(1.0, 1.0, 1.0), backend="numba")


def run_deeplab_one_thread(volume: np.ndarray, probs: np.ndarray) -> np.ndarray:
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return run_deeplab(volume, probs)
    finally:
        numba.set_num_threads(before)


def run_pydensecrf2(volume: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """pydensecrf2's generic DenseCRF with 3-D features, as its users build them."""
    import pydensecrf.densecrf as dcrf

    labels = probs.shape[0]
    d, h, w = probs.shape[1:]
    z, y, x = np.mgrid[:d, :h, :w].reshape(3, -1).astype(np.float32)
    crf = dcrf.DenseCRF(d * h * w, labels)
    unary = -np.log(np.maximum(probs.reshape(labels, -1), 1e-8))
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    norm = dcrf.NORMALIZE_SYMMETRIC
    spatial = np.stack([x, y, z]) / np.float32(THETA_GAMMA)
    crf.addPairwiseEnergy(np.ascontiguousarray(spatial), compat=W2, normalization=norm)
    colours = volume.reshape(-1, volume.shape[-1]).T.astype(np.float32) / np.float32(THETA_BETA)
    bilateral = np.concatenate([np.stack([x, y, z]) / np.float32(THETA_ALPHA), colours])
    crf.addPairwiseEnergy(np.ascontiguousarray(bilateral), compat=W1, normalization=norm)
    return np.array(crf.inference(ITERATIONS)).reshape(probs.shape)


def run_simplecrf(volume: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """SimpleCRF's denseCRF3D: uint8 (D, H, W, C) and (D, H, W, L) in, labels out."""
    import denseCRF3D

    param = {
        "MaxIterations": float(ITERATIONS), "PosW": W2, "PosRStd": THETA_GAMMA,
        "PosCStd": THETA_GAMMA, "PosZStd": THETA_GAMMA, "BilateralW": W1,
        "BilateralRStd": THETA_ALPHA, "BilateralCStd": THETA_ALPHA,
        "BilateralZStd": THETA_ALPHA, "ModalityNum": float(volume.shape[-1]),
        "BilateralModsStds": (THETA_BETA,) * volume.shape[-1],
    }  # fmt: skip
    p = np.ascontiguousarray(np.moveaxis(np.maximum(probs, 1e-8), 0, -1))
    return denseCRF3D.densecrf3d(np.ascontiguousarray(volume), p, param)


def run_monai(volume: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """MONAI's CRF block (its own permutohedral filter; compiled extension monai._C)."""
    import torch
    from monai.networks.blocks import CRF

    crf = CRF(
        iterations=ITERATIONS, bilateral_weight=W1, gaussian_weight=W2,
        bilateral_spatial_sigma=THETA_ALPHA, bilateral_color_sigma=THETA_BETA,
        gaussian_spatial_sigma=THETA_GAMMA, update_factor=1.0,
    )  # fmt: skip
    logits = torch.from_numpy(np.log(np.maximum(probs, 1e-8)))[None]
    feats = torch.from_numpy(np.moveaxis(volume, -1, 0).astype(np.float32))[None]
    with torch.no_grad():
        return crf(logits, feats)[0].numpy()


IMPLEMENTATIONS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "deeplab": run_deeplab,
    "deeplab, 1 thread": run_deeplab_one_thread,
    "pydensecrf2": run_pydensecrf2,
    "SimpleCRF": run_simplecrf,
    "MONAI": run_monai,
}
PEERS = ("pydensecrf2", "SimpleCRF", "MONAI")


def threads_of(name: str) -> str:
    if name.startswith("deeplab"):
        import numba

        return "1" if "1 thread" in name else f"up to {numba.get_num_threads()} (adaptive)"
    if name == "MONAI":
        import torch

        return str(torch.get_num_threads())
    return "1"


def unavailable(name: str) -> str | None:
    """Why an implementation cannot run here, or None when it runs (on a tiny input)."""
    try:
        IMPLEMENTATIONS[name](make_volume((4, 5, 6)), make_probs((4, 5, 6), 2))
    except Exception as exc:
        text = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {text[0] if text else ''}"[:160]
    return None


# -- measurement ---------------------------------------------------------------------------------
def _serve(name: str, shape: tuple[int, int, int], labels: int) -> None:
    """Child: time one implementation on request (a line on stdin): wall and CPU seconds
    (all of this process's threads) per line out."""
    volume, probs = make_volume(shape), make_probs(shape, labels)
    IMPLEMENTATIONS[name](volume, probs)  # warm-up
    print("ready", flush=True)
    for _ in sys.stdin:
        start, start_cpu = time.perf_counter(), time.process_time()
        IMPLEMENTATIONS[name](volume, probs)
        print(time.perf_counter() - start, time.process_time() - start_cpu, flush=True)


def timed_alternating(
    names: list[str], shape: tuple[int, int, int], labels: int, repeats: int
) -> dict[str, tuple[float, float]]:
    """Median wall and CPU seconds of each implementation, each in a process of its own
    (as its users run it: what one keeps on its heap must not help or hinder another),
    after one warm-up call, then run by run in turn so that any drift of the machine's
    speed falls on all alike. On a busy machine the CPU seconds say more than the wall."""
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--serve", name, *map(str, shape), str(labels)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for _ in range(repeats):
            for name, proc in zip(names, procs, strict=True):
                assert proc.stdin is not None and proc.stdout is not None
                time.sleep(0.05)  # the previous process's idle threads stop spinning
                proc.stdin.write("go\n")
                proc.stdin.flush()
                seconds, cpu_seconds = map(float, proc.stdout.readline().split())
                wall[name].append(seconds)
                cpu[name].append(cpu_seconds)
    finally:
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait()
    return {n: (statistics.median(wall[n]), statistics.median(cpu[n])) for n in names}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _child_memory(name: str, shape: tuple[int, int, int], labels: int) -> None:
    volume, probs = make_volume(shape), make_probs(shape, labels)
    IMPLEMENTATIONS[name](make_volume((8, 8, 8)), make_probs((8, 8, 8), labels))
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    IMPLEMENTATIONS[name](volume, probs)
    seconds = time.perf_counter() - start
    print(json.dumps({"peak_mib": (_status_kib("VmHWM") - before) / 1024, "seconds": seconds}))


def memory(name: str, shape: tuple[int, int, int], labels: int) -> dict | None:
    cmd = [sys.executable, __file__, "--child", name, *map(str, shape), str(labels)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def agreement(name: str, q: np.ndarray, q_ref: np.ndarray) -> str:
    if q.ndim == q_ref.ndim - 1:  # labels only
        return f"labels {float((q == q_ref.argmax(0)).mean()):.4f}"
    labels = float((q.argmax(0) == q_ref.argmax(0)).mean())
    return f"labels {labels:.4f}, max dQ {float(np.abs(q - q_ref).max()):.1e}"


# -- reports -------------------------------------------------------------------------------------
def side_by_side(shape: tuple[int, int, int], labels: int, runnable: list[str], repeats: int):
    volume, probs = make_volume(shape), make_probs(shape, labels)
    d, h, w = shape
    print(f"## {w}x{h}x{d} voxels (W x H x D), 2 channels, {labels} labels")
    print()
    times = timed_alternating(runnable, shape, labels, repeats)
    ref = IMPLEMENTATIONS["pydensecrf2"](volume, probs) if "pydensecrf2" in runnable else None
    peers = [times[n][0] for n in runnable if n in PEERS]
    fastest_peer = min(peers) if peers else None
    print("| implementation | threads | time (s) | CPU (s) | x fastest peer | peak memory (MiB) "
          "| agreement with pydensecrf2 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name in runnable:
        t, t_cpu = times[name]
        ratio = f"{t / fastest_peer:.2f}" if fastest_peer else "-"
        mem = memory(name, shape, labels)
        mem_s = f"{mem['peak_mib']:.0f}" if mem else "failed"
        agree = "-"
        if ref is not None and name != "pydensecrf2":
            agree = agreement(name, IMPLEMENTATIONS[name](volume, probs), ref)
        print(
            f"| {name} | {threads_of(name)} | {t:.2f} | {t_cpu:.2f} | {ratio} | {mem_s} | {agree} |"
        )
    print()
    return times


def growth(sizes: list[int], labels: int, runnable: list[str], repeats: int) -> None:
    names = [n for n in ("deeplab", "pydensecrf2") if n in runnable]
    print(f"## Growth with the volume ({labels} labels, 2 channels)")
    print()
    print("| size | voxels | " + " | ".join(f"{n} (s)" for n in names) + " | ratio | "
          + " | ".join(f"{n} CPU (s)" for n in names) + " |")  # fmt: skip
    print("|---|---|" + "---|" * (2 * len(names) + 1))
    for s in sizes:
        shape = (s, s, s)
        times = timed_alternating(names, shape, labels, repeats if s <= 128 else 1)
        med = [times[n][0] for n in names]
        ratio = f"{med[0] / med[1]:.2f}" if len(med) == 2 else "-"
        cells = " | ".join(f"{t:.2f}" for t in med)
        cpu = " | ".join(f"{times[n][1]:.2f}" for n in names)
        print(f"| {s}^3 | {s**3 / 1e6:.2f} M | {cells} | {ratio} | {cpu} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--size",
        type=int,
        nargs=3,
        default=[100, 150, 120],
        metavar=("D", "H", "W"),
        help="side-by-side volume (default 100 150 120)",
    )
    parser.add_argument("--labels", type=int, nargs="+", default=[2, 5])
    parser.add_argument(
        "--growth",
        type=int,
        nargs="*",
        default=[64, 128],
        help="cube sides of the growth table (default 64 128; --growth alone: no growth table)",
    )
    parser.add_argument("--full", action="store_true", help="growth 64 128 192 256 and 5 repeats")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--serve", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()  # fmt: skip
    if args.serve:
        name, d, h, w, labels = args.serve
        _serve(name, (int(d), int(h), int(w)), int(labels))
        return
    if args.child:
        name, d, h, w, labels = args.child
        _child_memory(name, (int(d), int(h), int(w)), int(labels))
        return
    if args.full:
        args.growth, args.repeats = [64, 128, 192, 256], max(args.repeats, 5)
    import numba

    print(f"numba {numba.__version__}, {numba.config.NUMBA_NUM_THREADS} threads available, "
          f"{os.cpu_count()} cores; load average at start: "
          + ", ".join(f"{x:.1f}" for x in os.getloadavg()))  # fmt: skip
    print()
    runnable = []
    for name in IMPLEMENTATIONS:
        why = unavailable(name)
        if why is None:
            runnable.append(name)
        else:
            print(f"- {name}: not run here ({why})")
    print()
    for labels in args.labels:
        side_by_side(tuple(args.size), labels, runnable, args.repeats)
    if args.growth:
        growth(args.growth, args.labels[0], runnable, args.repeats)


if __name__ == "__main__":
    main()
