"""The GPU check: one script, under 5 minutes on a lent GPU, printing measured figures only.

    python benchmarks/gpu.py                         # everything, about 2-4 minutes
    python benchmarks/gpu.py --photos DIR --out DIR  # real photos; JSON + log written to DIR
    python benchmarks/gpu.py --quick                 # tiny sizes: checks the script runs

1. The torch CRF (``deeplab.crf.torch_backend.DenseCRF``, preset deeplab-largefov, 10
   mean-field iterations) on batches of 1, 4 and 16 500x375 21-label images: ms per image
   and memory per image; its marginals against the numba CPU backend on the same images
   (labels agreeing, max |dQ|); one training step (forward + backward, 5 iterations).
2. DeepLab-7x7 and DeepLab-LargeFOV training images/s at 321x321 (forward + backward + SGD)
   in channels_last with float16 autocast, and in float32 for reference (paper Table 2, one
   Titan, Caffe: 1.44 and 4.84 img/s); 513x513 inference latency of one image.
3. End-to-end training (network -> x8 upsampling -> 5 unrolled CRF updates -> NLL): seconds
   per iteration against the network alone, the figure that decides whether end-to-end
   training pays where the CRF is cheap.

Each section is timed on the device (synchronised wall clock, medians after warm-up) and
guarded: an error in one is printed and the rest still run. A time budget (``--budget``)
skips what would not fit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import crf_torch  # benchmarks/ is not a package: its modules by path
import networks

START = time.perf_counter()
RESULTS: dict[str, object] = {}
SUMMARY: list[str] = []


def elapsed() -> float:
    return time.perf_counter() - START


def say(line: str = "") -> None:
    print(line, flush=True)
    SUMMARY.append(line)


DEVICE = "cuda"


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_mib(fn: Callable[[], object]) -> float:
    if DEVICE != "cuda":
        return float("nan")  # crf_torch.py measures CPU memory in child processes
    sync()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    sync()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def empty_cache() -> None:
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def device_name() -> str:
    if DEVICE == "cuda":
        return torch.cuda.get_device_name()
    return f"CPU ({torch.get_num_threads()} threads)"


# -- 1. the CRF ------------------------------------------------------------------------------


def crf_section(args: argparse.Namespace) -> None:
    from deeplab.crf import CRFParams

    say(
        f"## torch CRF on {device_name()}: {crf_torch.WIDTH}x{crf_torch.HEIGHT}, "
        f"{crf_torch.LABELS} labels, preset {crf_torch.PRESET}, 10 iterations"
    )
    crf = crf_torch.make_crf(DEVICE, learn=False)
    rows = []
    say("| batch | ms per image | ms per batch | memory per image (MiB) |")
    say("|---:|---:|---:|---:|")
    for batch in args.batches:
        images, logits = crf_torch.make_batch(batch, DEVICE)
        run = lambda i=images, g=logits: crf_torch.run_inference(crf, i, g)  # noqa: E731
        t = median_seconds(run, args.repeats, warmup=2)
        mem = peak_mib(run) / batch
        rows.append(
            {
                "batch": batch,
                "ms_per_image": t * 1e3 / batch,
                "ms_per_batch": t * 1e3,
                "mib_per_image": mem,
            }
        )
        say(f"| {batch} | {t * 1e3 / batch:.2f} | {t * 1e3:.1f} | {mem:.0f} |")
    RESULTS["crf_inference"] = rows

    # Agreement with the numba CPU backend on the same images (the CPU backend is exact
    # against pydensecrf2; see tests/crf/test_reference.py).
    n = min(4, max(args.batches))
    images, logits = crf_torch.make_batch(n, DEVICE)
    with torch.no_grad():
        q_gpu = crf(images, logits).cpu().numpy()
    params = CRFParams.preset(crf_torch.PRESET)
    try:
        from deeplab.crf import dense_crf_from_logits

        ref_name = "numba CPU backend"
        refs = [
            dense_crf_from_logits(crf_torch.make_image(i), crf_torch.make_logits(i), params)
            for i in range(n)
        ]
    except Exception as exc:  # the device's numba may not build our vector kernels
        say(
            f"(numba backend unavailable there: {type(exc).__name__}: {exc}; "
            "comparing with the torch CPU backend instead)"
        )
        ref_name = "torch CPU backend"
        with torch.no_grad():
            refs = list(
                crf_torch.make_crf("cpu", learn=False)(*crf_torch.make_batch(n, "cpu")).numpy()
            )
    dq = max(float(np.abs(q_gpu[i] - refs[i]).max()) for i in range(n))
    agree = float(np.mean([(q_gpu[i].argmax(0) == refs[i].argmax(0)).mean() for i in range(n)]))
    RESULTS["crf_agreement"] = {
        "reference": ref_name,
        "images": n,
        "max_abs_dq": dq,
        "labels_agreeing": agree,
    }
    say(
        f"agreement with the {ref_name} on {n} images: labels {100 * agree:.3f}%, max |dQ| {dq:.2e}"
    )

    # One training step: forward + backward through 5 iterations, learnable w1, w2, compat.
    learn = crf_torch.make_crf(DEVICE, learn=True)
    images, logits = crf_torch.make_batch(4, DEVICE)
    t = median_seconds(lambda: crf_torch.run_train_step(learn, images, logits), args.repeats)
    RESULTS["crf_train_step_batch4_ms_per_image"] = t * 1e3 / 4
    say(
        f"training step (forward + backward, 5 iterations, batch 4): {t * 1e3 / 4:.2f} ms per image"
    )
    say()


# -- 1b. the volume CRF -----------------------------------------------------------------------


def volume_section(args: argparse.Namespace) -> None:
    """The 3-D CRF (deeplab.crf.torch_volume) on the GPU against the numba CPU backend."""
    from deeplab.crf import CRFParams
    from deeplab.crf import dense_crf_3d as dense_crf_3d_cpu
    from deeplab.crf.torch_volume import dense_crf_3d

    d, h, w = args.volume
    rng = np.random.default_rng(0)
    # Two channels: a bright ball in noise, and a smooth ramp (benchmarks/crf_3d.py's kind).
    z, y, x = np.mgrid[:d, :h, :w].astype(np.float32)
    ball = ((z - d / 2) ** 2 + (y - h / 2) ** 2 + (x - w / 2) ** 2) < (min(d, h, w) / 3) ** 2
    vol = np.stack([100 * ball + rng.normal(0, 20, ball.shape), x / w * 50], -1)
    vol = vol.astype(np.float32)
    spacing = (2.0, 1.0, 1.0)
    params = CRFParams(w1=5.0, theta_alpha=10.0, theta_beta=20.0, w2=3.0, theta_gamma=3.0)
    say(f"## volume CRF on {device_name()}: {w}x{h}x{d} voxels, 2 channels, spacing {spacing}")
    say("| labels | GPU ms | CPU (numba) ms | labels agreeing | max abs dQ |")
    say("|---:|---:|---:|---:|---:|")
    rows = []
    for labels in (2, 5):
        p = rng.random((labels, d, h, w), dtype=np.float32) + 0.5 * ball[None] * (
            np.arange(labels)[:, None, None, None] == 1
        )
        p /= p.sum(0, keepdims=True)
        probs = torch.from_numpy(p).to(DEVICE)
        vt = torch.from_numpy(vol).to(DEVICE)
        run = lambda v=vt, q=probs: dense_crf_3d(v, q, params, spacing=spacing)  # noqa: E731
        t_gpu = median_seconds(run, max(2, args.repeats // 3))
        q_gpu = run().cpu().numpy()
        t0 = time.perf_counter()
        q_cpu = dense_crf_3d_cpu(vol, p, params, spacing=spacing)
        t_cpu = time.perf_counter() - t0
        agree = float((q_gpu.argmax(0) == q_cpu.argmax(0)).mean())
        dq = float(np.abs(q_gpu - q_cpu).max())
        rows.append({"labels": labels, "gpu_ms": t_gpu * 1e3, "cpu_ms": t_cpu * 1e3,
                     "labels_agreeing": agree, "max_abs_dq": dq})  # fmt: skip
        say(f"| {labels} | {t_gpu * 1e3:.1f} | {t_cpu * 1e3:.0f} | {100 * agree:.3f}% | {dq:.1e} |")
    RESULTS["volume_crf"] = rows
    say()


# -- 2. the networks ---------------------------------------------------------------------------


def network_section(args: argparse.Namespace) -> None:
    device = torch.device(DEVICE)
    say(
        f"## networks: training at {args.crop}x{args.crop} (forward + backward + SGD), "
        f"inference of one {args.infer_size}x{args.infer_size} image; channels_last"
    )
    say(
        f"| model | precision | batch | train img/s | paper img/s (Titan) | "
        f"{args.infer_size}x{args.infer_size} infer ms |"
    )
    say("|---|---|---:|---:|---:|---:|")
    rows = []
    for precision, amp in (("float16 autocast", True), ("float32", False)):
        for batch in args.net_batches:
            if elapsed() > args.budget * 0.75:
                say(f"(skipped {precision} batch {batch}: time budget)")
                continue
            ns = SimpleNamespace(batch=batch, crop=args.crop, infer_size=args.infer_size, amp=amp)
            runners = {
                name: networks.Runner(name, ns, device) for name in networks.PAPER_TRAIN_IMG_S
            }
            train = networks.measure(runners, "train_step", 2, args.repeats, device)
            infer = networks.measure(runners, "infer", 2, args.repeats, device)
            for name in runners:
                img_s = batch / statistics.median(train[name])
                ms = statistics.median(infer[name]) * 1e3
                paper = networks.PAPER_TRAIN_IMG_S[name]
                rows.append(
                    {
                        "model": name,
                        "precision": precision,
                        "batch": batch,
                        "train_img_s": img_s,
                        "infer_ms": ms,
                    }
                )
                say(f"| {name} | {precision} | {batch} | {img_s:.1f} | {paper} | {ms:.2f} |")
            del runners
            empty_cache()
    RESULTS["networks"] = rows
    say()


# -- 3. end-to-end training ------------------------------------------------------------------


def end_to_end_section(args: argparse.Namespace) -> None:
    from deeplab.models import build_model
    from deeplab.train.end_to_end import CRFTrainingNet, crf_layer

    device = torch.device(DEVICE)
    batch, crop = args.e2e_batch, args.crop
    say(
        f"## end-to-end training step, deeplab-largefov, batch {batch} at {crop}x{crop}, "
        "float16 autocast for the network, float32 CRF (5 iterations)"
    )
    torch.manual_seed(0)
    net = build_model("deeplab-largefov").to(device, memory_format=torch.channels_last)
    model = CRFTrainingNet(net, crf_layer("deeplab-largefov", train_iterations=5)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    x = (torch.rand(batch, 3, crop, crop, device=device) * 255 - 117).contiguous(
        memory_format=torch.channels_last
    )
    full = torch.randint(0, 21, (batch, crop, crop), device=device)
    out = net.variant.output_size(crop, training=True)
    coarse = torch.randint(0, 21, (batch, out, out), device=device)

    def step(with_crf: bool) -> None:
        model.train()
        with torch.autocast(DEVICE, dtype=torch.float16, enabled=DEVICE == "cuda"):
            if with_crf:
                loss = F.nll_loss(model(x), full, ignore_index=255)
            else:
                loss = F.cross_entropy(net(x), coarse, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t_net = median_seconds(lambda: step(False), args.repeats, warmup=2)
    t_e2e = median_seconds(lambda: step(True), args.repeats, warmup=2)
    RESULTS["end_to_end"] = {"batch": batch, "crop": crop, "network_s": t_net, "e2e_s": t_e2e}
    say(
        f"| step | s per iteration | img/s |\n|---|---:|---:|\n"
        f"| network alone (piecewise) | {t_net:.4f} | {batch / t_net:.1f} |\n"
        f"| network + CRF (end to end) | {t_e2e:.4f} | {batch / t_e2e:.1f} |"
    )
    say(f"end-to-end / piecewise time per iteration: {t_e2e / t_net:.2f}x")
    say()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, help="folder of .jpg/.png photos for the CRF")
    parser.add_argument("--out", type=Path, help="write gpu.json and gpu.md here")
    parser.add_argument("--budget", type=float, default=270.0, help="seconds (default 270)")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs (default 10)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check the script")
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["crf", "volume", "networks", "end_to_end"],
        choices=["crf", "volume", "networks", "end_to_end"],
        help="what to run (all)",
    )
    parser.add_argument("--device", default="cuda", help="cuda (default); cpu to test the script")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    args.batches, args.net_batches = (1, 4, 16), (1, 10, 30)
    args.crop, args.infer_size, args.e2e_batch = 321, 513, 10
    args.volume = (100, 150, 120)  # D, H, W: the MONAI issue 2250 size
    if args.quick:
        args.volume = (10, 15, 12)
        crf_torch.WIDTH, crf_torch.HEIGHT = 100, 75
        args.batches, args.net_batches, args.repeats = (1, 2), (1,), 2
        args.crop, args.infer_size, args.e2e_batch = 65, 65, 2
    if args.photos is not None:
        crf_torch.PHOTOS = sorted(
            p for p in args.photos.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"}
        )
    source = args.photos or crf_torch.VOC
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: this script measures a GPU; nothing was run", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    where = device_name()
    if DEVICE == "cuda":
        props = torch.cuda.get_device_properties(0)
        where = (
            f"{props.name}, {props.total_memory / 2**30:.0f} GiB, "
            f"{props.multi_processor_count} SMs, CUDA {torch.version.cuda}"
        )
    say(
        f"# benchmarks/gpu.py: {where}; torch {torch.__version__}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    say(
        f"CRF images: {len(crf_torch.PHOTOS)} real photos from {source}, resized"
        if crf_torch.PHOTOS
        else "CRF images: synthetic textured images (no --photos)"
    )
    say()
    failed = 0
    sections = {"crf": crf_section, "volume": volume_section, "networks": network_section,
                "end_to_end": end_to_end_section}  # fmt: skip
    for name in args.sections:
        section = sections[name]
        if elapsed() > args.budget:
            say(f"({name}: skipped, {elapsed():.0f} s of the {args.budget:.0f} s budget spent)")
            continue
        t0 = time.perf_counter()
        try:
            section(args)
        except Exception:
            failed += 1
            say(f"({name}: FAILED)\n" + traceback.format_exc())
        RESULTS[f"{name}_section_s"] = time.perf_counter() - t0
        empty_cache()
    say(f"total {elapsed():.0f} s")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu.json").write_text(json.dumps(RESULTS, indent=2))
        (args.out / "gpu.md").write_text("\n".join(SUMMARY) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
