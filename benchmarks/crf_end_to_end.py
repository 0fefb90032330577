"""End-to-end (DCNN + unrolled CRF) against piecewise (DCNN, then the tuned CRF) training,
at equal training time, on held-out synthetic scenes.

Both arms start from the same trained network (default: the shipped tiny checkpoint) and
the same CRF parameters (default: the shipped ones, tuned on training scenes):

- piecewise: the network alone trains on for ``--budget`` seconds (stride-8 loss), then
  the tuned CRF refines its output at test time;
- end-to-end: network and CRF train together for ``--budget`` seconds
  (``--crf-end-to-end``: 5 mean-field updates in training, w1 and w2 learnt), then the
  learnt CRF (10 updates) refines the output at test time.

Each arm's iteration count comes from timing a few of its iterations first, so the two
get the same wall time. Prints a Markdown table of measured figures; nothing is asserted.

::

    python benchmarks/crf_end_to_end.py --out runs/e2e              # 180 s per arm
    python benchmarks/crf_end_to_end.py --out runs/e2e --e2e-lr 2e-3 --crf-lr-mult 100

An arm whose run directory already holds a model is scored, not trained again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from deeplab.cli import main as deeplab
from deeplab.crf import CRFParams
from deeplab.data import DataSpec
from deeplab.train import read_log, resolve_recipe, train

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "src" / "deeplab" / "assets"
CONFIG = ROOT / "configs" / "deeplab-largefov-tiny-synthetic.json"


def _recipe(weights: Path, crf: Path | None, iterations: int, lr: float, crf_lr_mult: float):
    # The shipped network's recipe at its last learning rate, no further drop.
    overrides: dict[str, Any] = {
        "init": str(weights),
        "iterations": iterations,
        "lr": lr,
        "lr_step": 10**6,
        "checkpoint_every": max(iterations, 1),
        "log_every": 1,
    }
    if crf is not None:
        overrides.update(crf_end_to_end=True, crf=str(crf), crf_lr_mult=crf_lr_mult)
    return resolve_recipe(config=CONFIG, overrides=overrides)


def _seconds_per_iteration(run: Path) -> float:
    records = read_log(run / "log.jsonl")
    # From the end of the first iteration (start-up, first-call costs) to the last.
    return (records[-1]["wall_s"] - records[0]["wall_s"]) / (len(records) - 1)


def _evaluate(weights: Path, crf: Path, out: Path, count: int, size: int) -> dict[str, Any]:
    argv = [
        "evaluate", "--weights", str(weights), "--data", "synthetic", "--synthetic-seed", "1",
        "--synthetic-count", str(count), "--synthetic-size", str(size), str(size),
        "--crf", str(crf), "--workers", "2", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    if deeplab(argv) != 0:
        raise SystemExit(f"deeplab evaluate failed for {weights}")
    return json.loads((out / "results.json").read_text())


def _miou(scores: dict[str, Any], key: str) -> str:
    return f"{100 * scores[key]['mean_iou']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--weights", type=Path, default=ASSETS / "deeplab-largefov-tiny-synthetic.safetensors"
    )
    parser.add_argument("--crf", type=Path, default=ASSETS / "crf-synthetic.json")
    parser.add_argument("--budget", type=float, default=180.0, help="training seconds per arm")
    parser.add_argument("--lr", type=float, default=0.002, help="piecewise: body learning rate")
    parser.add_argument("--e2e-lr", type=float, default=2e-4, help="end-to-end: body lr")
    parser.add_argument("--crf-lr-mult", type=float, default=10.0, help="end-to-end: w1, w2")
    parser.add_argument("--eval-count", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = DataSpec(kind="synthetic", synthetic_count=2000, synthetic_size=(128, 128))
    args.out.mkdir(parents=True, exist_ok=True)
    arms = {
        "piecewise": (None, args.lr),
        f"end-to-end, lr {args.e2e_lr:g}, CRF x{args.crf_lr_mult:g}": (args.crf, args.e2e_lr),
    }
    rows = []
    for name, (crf, lr) in arms.items():
        run = args.out / name.replace(", ", "_").replace(" ", "-")
        if (run / "model.safetensors").is_file():  # an earlier invocation trained this arm
            seconds = read_log(run / "log.jsonl")[-1]["wall_s"]
            iterations = read_log(run / "log.jsonl")[-1]["iteration"]
        else:
            probe = run.with_name(run.name + "-probe")
            shutil.rmtree(probe, ignore_errors=True)
            train(_recipe(args.weights, crf, 6, lr, args.crf_lr_mult), data, probe)
            per_it = _seconds_per_iteration(probe)
            iterations = max(1, int(args.budget / per_it))
            print(f"{name}: {per_it:.2f} s per iteration -> {iterations} iterations", flush=True)
            start = time.perf_counter()
            train(_recipe(args.weights, crf, iterations, lr, args.crf_lr_mult), data, run)
            seconds = time.perf_counter() - start
        test_crf = run / "crf.json" if crf is not None else args.crf
        scores = _evaluate(run / "model.safetensors", test_crf, run / "eval", args.eval_count, 128)
        p = CRFParams.load(test_crf)
        rows.append((name, iterations, seconds, scores, p))
    base = _evaluate(args.weights, args.crf, args.out / "start-eval", args.eval_count, 128)
    p0 = CRFParams.load(args.crf)
    print()
    print(f"## {args.eval_count} held-out 128x128 scenes (seed 1), budget {args.budget:.0f} s")
    print()
    print("| arm | iterations | training s | mIoU DCNN | mIoU DCNN+CRF | CRF w1 / w2 |")
    print("|---|---:|---:|---:|---:|---|")
    print(
        f"| start (no further training) | 0 | 0 | {_miou(base, 'without_crf')} | "
        f"{_miou(base, 'with_crf')} | {p0.w1:.3g} / {p0.w2:.3g} |"
    )
    for name, iterations, seconds, scores, p in rows:
        print(
            f"| {name} | {iterations} | {seconds:.0f} | {_miou(scores, 'without_crf')} | "
            f"{_miou(scores, 'with_crf')} | {p.w1:.3g} / {p.w2:.3g} |"
        )


if __name__ == "__main__":
    main()
