"""Speed and memory of the PyTorch CRF backend on batches of VOC-sized images.

    python benchmarks/crf_torch.py               # CPU (torch's default threads), CUDA if present
    python benchmarks/crf_torch.py --no-cuda     # CPU only
    python benchmarks/crf_torch.py --train       # also forward + backward (learnable CRF)
    python benchmarks/crf_torch.py --threads 1   # one CPU thread (steadier on a busy machine)
    python benchmarks/crf_torch.py --generic-cpu # CPU tensors through the torch lattice

On the CPU, float32 tensors take the backend's compiled path (numba lattice kernels; in
inference the numba backend's fused mean field per image); ``--generic-cpu`` measures the
generic torch lattice instead, the path CUDA runs.

500x375 images, 21 labels, preset deeplab-largefov (10 mean-field iterations, normalise
after), batches of 1, 4 and 16 through ``deeplab.crf.torch_backend.DenseCRF`` in inference
mode; the numba CPU backend, one image at a time, for reference, and the ratio of torch's
CPU ms per image (batch 1) to it. Prints Markdown tables of measured figures; nothing is
asserted. "CPU ms" is the process's CPU time (all threads,
spinning included): on a busy machine it stays near the work done while wall time grows.

Memory per image: on the CPU the peak resident memory of a fresh child process during one
batch minus its resident memory just before (Linux /proc/self/status, peak reset through
clear_refs), divided by the batch size; on CUDA ``torch.cuda.max_memory_allocated`` during
one batch minus the memory allocated before it, divided by the batch size.
"""

from __future__ import annotations

import argparse
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
VOC = ROOT / "tests" / "data" / "voc_mini" / "VOC2012" / "JPEGImages"
PHOTOS = sorted(VOC.glob("*.jpg"))
WIDTH, HEIGHT, LABELS = 500, 375, 21
BATCHES = (1, 4, 16)
PRESET = "deeplab-largefov"


def make_image(index: int) -> np.ndarray:
    """(H, W, 3) uint8: the real VOC photos resized (mirrored for odd turns), or a
    textured synthetic image without them."""
    if PHOTOS:
        with Image.open(PHOTOS[index % len(PHOTOS)]) as im:
            img = np.array(im.convert("RGB").resize((WIDTH, HEIGHT), Image.BILINEAR))
        return np.ascontiguousarray(img[:, ::-1]) if (index // len(PHOTOS)) % 2 else img
    rng = np.random.default_rng(index)
    small = rng.integers(0, 256, size=(HEIGHT // 16, WIDTH // 16, 3), dtype=np.uint8)
    return np.array(Image.fromarray(small).resize((WIDTH, HEIGHT), Image.BILINEAR))


def make_logits(index: int) -> np.ndarray:
    """(L, H, W) float32 network-like scores: stride-8 noise bilinearly upsampled."""
    rng = np.random.default_rng(100 + index)
    coarse = rng.normal(size=(LABELS, HEIGHT // 8 + 1, WIDTH // 8 + 1)).astype(np.float32) * 3
    return np.stack(
        [np.array(Image.fromarray(c).resize((WIDTH, HEIGHT), Image.BILINEAR)) for c in coarse]
    )


def make_batch(size: int, device: str):
    import torch

    images = torch.from_numpy(np.stack([make_image(i) for i in range(size)]))
    logits = torch.from_numpy(np.stack([make_logits(i) for i in range(size)]))
    return images.permute(0, 3, 1, 2).contiguous().to(device), logits.to(device)


def make_crf(device: str, learn: bool = False):
    """Inference: fixed weights, eval mode (10 iterations). Training: learnable w1, w2 and
    compatibility, train mode with 5 iterations."""
    from deeplab.crf.torch_backend import DenseCRF

    crf = DenseCRF(
        PRESET, learn_weights=learn, num_labels=LABELS, learn_compat=learn, train_iterations=5
    )
    return crf.to(device).train(learn)


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def run_inference(crf, images, logits) -> None:
    import torch

    with torch.no_grad():
        crf(images, logits)


def run_train_step(crf, images, logits) -> None:
    logits = logits.detach().requires_grad_()
    crf(images, logits, log=True)[:, 0].mean().backward()


def timed(fn, device: str, repeats: int, warm_up=None) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds (all threads) of each of ``repeats`` runs."""
    (warm_up or fn)()  # allocator pools, lazily loaded kernels
    sync(device)
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


# -- memory --------------------------------------------------------------------------------
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _child_cpu_memory(batch: int, train: bool) -> None:
    crf = make_crf("cpu", learn=train)
    images, logits = make_batch(batch, "cpu")
    step = run_train_step if train else run_inference
    small_img, small_log = images[:1, :, :48, :64].contiguous(), logits[:1, :, :48, :64]
    step(crf, small_img, small_log)  # load torch's kernels before measuring
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    step(crf, images, logits)
    peak = _status_kib("VmHWM")
    print(json.dumps({"peak_mib": (peak - before) / 1024}))


def cpu_memory_per_image(batch: int, train: bool) -> float:
    import torch

    from deeplab.crf import torch_meanfield

    threads = str(torch.get_num_threads())
    generic = str(int(not torch_meanfield._COMPILED_CPU))
    cmd = [sys.executable, __file__, "--child", str(batch), str(int(train)), threads, generic]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"] / batch


def cuda_memory_per_image(fn, batch: int) -> float:
    import torch

    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20 / batch


# -- reports --------------------------------------------------------------------------------
def numba_reference(repeats: int) -> float:
    """Seconds of the numba backend on one image (as many threads as torch uses)."""
    from deeplab.crf import CRFParams, dense_crf_from_logits

    image, logits = make_image(0), make_logits(0)
    params = CRFParams.preset(PRESET)
    wall, _ = timed(lambda: dense_crf_from_logits(image, logits, params), "cpu", repeats)
    return statistics.median(wall)


def match_numba_threads() -> None:
    """The compiled kernels (numba backend, torch's CPU path) get torch's thread count."""
    import numba
    import torch

    numba.set_num_threads(min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


def report(device: str, train: bool, repeats: int) -> float:
    """Print one table; return batch 1's wall seconds per image."""
    import torch

    what = (
        "training step (forward + backward, 5 iterations, learnable w1, w2, compat)"
        if train
        else "inference (no_grad, 10 iterations)"
    )
    threads = f"CPU, {torch.get_num_threads()} threads (torch and numba)"
    name = torch.cuda.get_device_name() if device == "cuda" else threads
    print(f"### {name}: {what}")
    print()
    print("| batch | ms per image | ms per batch | CPU ms per image | memory per image (MiB) |")
    print("|---|---|---|---|---|")
    crf = make_crf(device, learn=train)
    per_image = {}
    for batch in BATCHES:
        t, cpu, mem = measure(crf, batch, device, repeats, train)
        per_image[batch] = t / batch
        cpu_ms = "-" if device == "cuda" else f"{cpu * 1e3 / batch:.0f}"
        print(f"| {batch} | {t * 1e3 / batch:.0f} | {t * 1e3:.0f} | {cpu_ms} | {mem:.0f} |")
    print()
    return per_image[1]


def measure(crf, batch: int, device: str, repeats: int, train: bool) -> tuple[float, float, float]:
    """Median wall and process CPU seconds per batch, and MiB per image, of one batch."""
    step = run_train_step if train else run_inference
    images, logits = make_batch(batch, device)
    reps = repeats if device == "cuda" else max(1, repeats // batch)
    warm = None
    if device != "cuda":
        # On the CPU one small image warms up as well as a whole batch would, in less time.
        small = images[:1, :, :48, :64], logits[:1, :, :48, :64]
        warm = lambda: step(crf, *small)  # noqa: E731
    wall, cpu = timed(lambda: step(crf, images, logits), device, reps, warm)
    if device == "cuda":
        mem = cuda_memory_per_image(lambda: step(crf, images, logits), batch)
    else:
        mem = cpu_memory_per_image(batch, train)
    return statistics.median(wall), statistics.median(cpu), mem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=4, help="timed runs of batch 1")
    parser.add_argument("--no-cuda", action="store_true", help="skip CUDA even if present")
    parser.add_argument("--train", action="store_true", help="also time forward + backward")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--generic-cpu",
        action="store_true",
        help="CPU tensors through the generic torch lattice (as CUDA), not the numba kernels",
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    from deeplab.crf import torch_meanfield

    if args.child:
        torch.set_num_threads(int(args.child[2]))
        torch_meanfield._COMPILED_CPU = not bool(int(args.child[3]))
        match_numba_threads()
        _child_cpu_memory(int(args.child[0]), bool(int(args.child[1])))
        return
    torch_meanfield._COMPILED_CPU = not args.generic_cpu
    if args.threads:
        torch.set_num_threads(args.threads)
    match_numba_threads()

    print(
        f"torch {torch.__version__}; {WIDTH}x{HEIGHT}, {LABELS} labels, preset {PRESET} "
        "(10 iterations, normalise after)"
    )
    # Wall-clock figures on a shared machine depend on what else runs: say what did.
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average at start {load}")
    print()
    devices = ["cpu"]
    if torch.cuda.is_available() and not args.no_cuda:
        devices.append("cuda")
    path = "generic torch lattice" if args.generic_cpu else "compiled kernels"
    print(f"CPU tensors: {path}")
    print()
    cpu_ms = {}
    for device in devices:
        cpu_ms[device, False] = report(device, False, args.repeats)
        if args.train:
            cpu_ms[device, True] = report(device, True, args.repeats)
    t = numba_reference(max(1, args.repeats // 2))
    print(
        f"numba CPU backend (deeplab.crf.dense_crf_from_logits), one image, "
        f"{torch.get_num_threads()} threads: {t * 1e3:.0f} ms"
    )
    ratio = cpu_ms["cpu", False] / t
    print(
        f"torch on the CPU, batch 1, inference: {cpu_ms['cpu', False] * 1e3:.0f} ms per image, "
        f"{ratio:.2f}x the numba backend"
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average at the end {load}")


if __name__ == "__main__":
    main()
