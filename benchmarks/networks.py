"""Training and inference speed of DeepLab-7x7 vs DeepLab-LargeFOV (paper section 5, Table 2).

The paper (one Titan GPU, Caffe): 7x7 trains at 1.44 img/s, LargeFOV at 4.84 img/s, a 3.36x
ratio. This script measures both networks in one run, on the same machine:

* training images/s: forward + backward + SGD step (momentum 0.9, weight decay 5e-4) on
  random Caffe-convention crops of 321x321 with random labels at stride 8 (41x41),
* inference latency for one 513x513 image (the released test size), in eval mode.

The models run interleaved, call by call, so that load from other processes on a shared
machine hits both alike; the ratio is the median of per-round ratios. It prints measured
figures only. ``--device cuda`` runs in channels_last with float16 autocast.

    python benchmarks/networks.py                  # CPU, about 1.5 minutes on 2 cores
    python benchmarks/networks.py --device cuda --iters 20 --batch 10
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)

from deeplab.models import build_model

PAPER_TRAIN_IMG_S = {"deeplab-7x7": 1.44, "deeplab-largefov": 4.84}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _once(fn: Callable[[], None], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


class Runner:
    """One network with its optimizer, fixed random inputs, a train step and an inference."""

    def __init__(self, name: str, args: argparse.Namespace, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        # float16 autocast on CUDA unless the caller asks for float32 (``args.amp``).
        self.amp = self.cuda and getattr(args, "amp", True)
        fmt = torch.channels_last if self.cuda else torch.contiguous_format
        self.model = build_model(name).to(device=device, memory_format=fmt)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4
        )
        crop = args.crop
        self.x = (torch.rand(args.batch, 3, crop, crop, device=device) * 255 - 117).contiguous(
            memory_format=fmt
        )
        out = self.model.variant.output_size(crop, training=True)
        self.labels = torch.randint(0, 21, (args.batch, out, out), device=device)
        size = args.infer_size
        self.image = (torch.rand(1, 3, size, size, device=device) * 255 - 117).contiguous(
            memory_format=fmt
        )

    def train_step(self) -> None:
        self.model.train()
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            loss = F.cross_entropy(self.model(self.x), self.labels, ignore_index=255)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    @torch.inference_mode()
    def infer(self) -> None:
        self.model.eval()
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            self.model(self.image)


def measure(
    runners: dict[str, Runner], phase: str, warmup: int, iters: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of each runner's ``phase`` ("train_step" or "infer"), interleaved."""
    for runner in runners.values():
        for _ in range(warmup):
            getattr(runner, phase)()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(iters):
        for name, runner in runners.items():
            times[name].append(_once(getattr(runner, phase), device))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--batch", type=int, default=1, help="training batch (default: 1)")
    parser.add_argument("--crop", type=int, default=321, help="training crop (default: 321)")
    parser.add_argument("--infer-size", type=int, default=513, help="inference size (513)")
    parser.add_argument("--iters", type=int, default=3, help="timed rounds (default: 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds (default: 1)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--models", nargs="+", default=list(PAPER_TRAIN_IMG_S))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    )
    print(f"device: {device.type} ({where}); torch {torch.__version__}")
    print(
        f"train: batch {args.batch} at {args.crop}x{args.crop}, forward+backward+SGD; "
        f"inference: 1 image at {args.infer_size}x{args.infer_size}; median and best of "
        f"{args.iters} rounds after {args.warmup} warm-up, models interleaved"
    )
    runners = {name: Runner(name, args, device) for name in args.models}
    train = measure(runners, "train_step", args.warmup, args.iters, device)
    infer = measure(runners, "infer", args.warmup, args.iters, device)
    print(
        f"{'model':<18} {'train img/s':>11} {'(best)':>7} {'paper img/s':>11} "
        f"{'infer ms':>9} {'(best)':>7}"
    )
    for name in args.models:
        speed = args.batch / statistics.median(train[name])
        best = args.batch / min(train[name])
        paper = PAPER_TRAIN_IMG_S.get(name)
        paper_s = f"{paper:.2f}" if paper else "-"
        ms = [t * 1e3 for t in infer[name]]
        print(
            f"{name:<18} {speed:>11.3f} {best:>7.3f} {paper_s:>11} "
            f"{statistics.median(ms):>9.0f} {min(ms):>7.0f}"
        )
    if {"deeplab-7x7", "deeplab-largefov"} <= set(runners):
        pairs = zip(train["deeplab-7x7"], train["deeplab-largefov"], strict=True)
        train_ratio = statistics.median(a / b for a, b in pairs)
        pairs = zip(infer["deeplab-7x7"], infer["deeplab-largefov"], strict=True)
        infer_ratio = statistics.median(a / b for a, b in pairs)
        print(
            f"LargeFOV / 7x7 speed: training {train_ratio:.2f}x (paper, Titan GPU: 3.36x), "
            f"inference {infer_ratio:.2f}x (medians of per-round ratios)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
