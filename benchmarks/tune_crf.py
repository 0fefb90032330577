"""The CRF tuning and trimap experiment on held-out synthetic scenes (paper sections 4.2 and 5).

Runs the documented commands in order, timing each, then prints what they measured:

1. ``deeplab evaluate --save-logits`` on the tuning scenes (``--tune-seed``, default 1) and on
   a disjoint test family (``--test-seed``, default 2); both are held out from training's
   seed 0, and the network runs once per image here and never again;
2. ``deeplab tune-crf`` on the tuning scenes' saved scores;
3. ``deeplab evaluate --from-logits --trimap`` on the test scenes, once with the default
   preset and once with the tuned parameters: tuning and scoring never share an image.

::

    python benchmarks/tune_crf.py --out runs/tune_synthetic \\
        --weights src/deeplab/assets/deeplab-largefov-tiny-synthetic.safetensors
    python benchmarks/tune_crf.py --weights W --out O --num-images 30 --rounds 0   # quicker

Re-running with the same ``--out`` reuses the saved scores and resumes the search.

``--compare-engines N`` times the tuner's evaluation engine instead: the paper's coarse grid
(w1 5:10, theta_alpha 50:10:100, theta_beta 3:1:10: 288 parameter sets) on the first N
tuning scenes, each set scored alone as before (:func:`deeplab.tune.engine.score_each`) and
then with the work the sets share done once (:func:`deeplab.tune.engine.score_shared`, what
``tune-crf`` runs), both on one thread in this process; it prints both times and checks
that every confusion matrix is identical::

    python benchmarks/tune_crf.py --weights W --out O --compare-engines 100
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from deeplab.cli import main as deeplab
from deeplab.saved_scores import LOGITS_META

WIDTHS = (1, 5, 10, 20, 40)


def _run(argv: list[str], timings: dict[str, float], name: str) -> None:
    print("$ deeplab " + " ".join(argv), flush=True)
    start = time.perf_counter()
    code = deeplab(argv)
    timings[name] = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"deeplab {argv[0]} failed with exit status {code}")


def _trimap_rows(result: dict[str, Any]) -> list[str]:
    tri = result["trimap"]
    widths = tri["without_crf"]["widths"]
    rows = []
    for w in WIDTHS:
        i = widths.index(w)
        plain = tri["without_crf"]["mean_iou"][i]
        crf = tri["with_crf"]["mean_iou"][i]
        acc_plain = tri["without_crf"]["pixel_accuracy"][i]
        acc_crf = tri["with_crf"]["pixel_accuracy"][i]
        rows.append(
            f"| {w} | {100 * plain:.2f} | {100 * crf:.2f} | {100 * (crf - plain):+.2f} | "
            f"{100 * acc_plain:.2f} | {100 * acc_crf:.2f} | {100 * (acc_crf - acc_plain):+.2f} |"
        )
    return rows


def compare_engines(logits: Path, args: argparse.Namespace) -> int:
    """Time the coarse grid on ``args.compare_engines`` images, per set vs shared work."""
    import numba
    import torch

    from deeplab.crf import kernel_cache
    from deeplab.data import SyntheticScenes
    from deeplab.saved_scores import load_saved_logits, saved_path
    from deeplab.tune import SearchSpace, param_key, select_images
    from deeplab.tune.engine import group_tasks, score_each, score_shared

    numba.set_num_threads(1)  # as in each tune-crf worker
    torch.set_num_threads(1)
    scenes = SyntheticScenes(args.count, size=tuple(args.size), seed=args.tune_seed)
    picks = select_images(logits, scenes, args.compare_engines)
    k = len(scenes.class_names)
    data = []
    for index, name in picks:
        sample = scenes[index]
        saved = load_saved_logits(saved_path(logits, name))
        data.append((sample.image, sample.label, saved.logits))
    grid = SearchSpace().grid()
    todo = {param_key(p): p for p in grid}
    settings = [(key, p.to_dict()) for key, p in todo.items()]
    # Compile (or load) the kernels before timing either path.
    score_shared(*data[0], k, settings[:1])
    score_each(*data[0], k, settings[:1])
    print(f"{len(grid)} parameter sets x {len(data)} images of {args.size[0]}x{args.size[1]}, "
          "one thread", flush=True)  # fmt: skip

    # Before: every set built all its kernels, the spatial one included (dense_crf now
    # keeps that one for the next image of the same size).
    kept = kernel_cache.MAX_ENTRIES
    kernel_cache.MAX_ENTRIES = 0
    kernel_cache.clear()
    start = time.perf_counter()
    alone = {(key, i): m for i, d in enumerate(data) for key, m in score_each(*d, k, settings)}
    t_alone = time.perf_counter() - start
    kernel_cache.MAX_ENTRIES = kept
    print(f"each set alone (before):   {t_alone:8.1f} s", flush=True)
    start = time.perf_counter()
    shared = {
        (key, i): m
        for i, group in group_tasks(todo, len(data))
        for key, m in score_shared(*data[i], k, group)
    }
    t_shared = time.perf_counter() - start
    print(f"shared work (tune-crf now): {t_shared:8.1f} s", flush=True)
    same = alone.keys() == shared.keys() and all(
        np.array_equal(alone[key], shared[key]) for key in alone
    )
    print(f"speed-up {t_alone / t_shared:.2f}x; {len(alone)} confusion matrices "
          f"{'all identical' if same else 'DIFFER'}")  # fmt: skip
    return 0 if same else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", required=True, help="checkpoint of a synthetic-trained model")
    p.add_argument("--model", default="deeplab-largefov-tiny")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tune-seed", type=int, default=1)
    p.add_argument("--test-seed", type=int, default=2)
    p.add_argument("--count", type=int, default=100, help="scenes per family")
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(128, 128),
        metavar=("H", "W"),
        help="scene size (default 128 128, the shipped network's training size)",
    )
    p.add_argument("--num-images", type=int, default=100, help="tune-crf --num-images")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--default", default="deeplab-largefov", help="the preset compared against")
    p.add_argument("--tune-args", default="", help="extra tune-crf options, e.g. '--w1 3:10:1'")
    p.add_argument(
        "--compare-engines",
        type=int,
        default=0,
        metavar="N",
        help="only time the coarse grid on N tuning scenes, each set alone vs shared work",
    )
    args = p.parse_args()

    out: Path = args.out
    timings: dict[str, float] = {}
    common = ["--threads", "1", "--no-progress", "--workers", str(args.workers)]
    families = {"tune": args.tune_seed, "test": args.test_seed}
    size = ["--synthetic-size", str(args.size[0]), str(args.size[1])]
    for name, seed in families.items():
        data = ["--data", "synthetic", "--synthetic-seed", str(seed),
                "--synthetic-count", str(args.count), *size]  # fmt: skip
        if not (out / f"logits_{name}" / LOGITS_META).is_file():
            _run(["evaluate", "--model", args.model, "--weights", args.weights, "--crf", "none",
                  "--save-logits", str(out / f"logits_{name}"),
                  "--out", str(out / f"network_{name}"), *data, *common],
                 timings, f"evaluate {name} (network, saves the scores)")  # fmt: skip
        if args.compare_engines:
            return compare_engines(out / "logits_tune", args)
    tune_data = [
        "--synthetic-seed",
        str(args.tune_seed),
        "--synthetic-count",
        str(args.count),
        *size,
    ]
    _run(["tune-crf", "--logits", str(out / "logits_tune"), "--out", str(out / "tune"),
          "--num-images", str(args.num_images), "--rounds", str(args.rounds),
          "--reference", args.default, "--workers", str(args.workers), "--no-progress",
          *tune_data, *args.tune_args.split()], timings, "tune-crf")  # fmt: skip
    test_data = [
        "--synthetic-seed",
        str(args.test_seed),
        "--synthetic-count",
        str(args.count),
        *size,
    ]
    for name, crf in (("default", args.default), ("tuned", str(out / "tune" / "best_crf.json"))):
        _run(["evaluate", "--from-logits", str(out / "logits_test"), "--crf", crf, "--trimap",
              "--out", str(out / f"test_{name}"), *test_data, *common],
             timings, f"evaluate test --trimap ({name})")  # fmt: skip

    tune = json.loads((out / "tune" / "ranking.json").read_text())
    tests = {n: json.loads((out / f"test_{n}" / "results.json").read_text())
             for n in ("default", "tuned")}  # fmt: skip
    best = tune["params"]
    digest = hashlib.sha256(Path(args.weights).read_bytes()).hexdigest()
    lines = [
        "# CRF tuning on synthetic scenes",
        "",
        f"Network: {args.model}, {args.weights} (sha256 {digest[:16]}...).",
        "",
        "| step | wall time (s) |",
        "|:---|---:|",
        *(f"| {k} | {v:.1f} |" for k, v in timings.items()),
        "",
        f"Best of {len(tune['ranking'])} parameter sets on {tune['num_images']} tuning images "
        f"(seed {args.tune_seed}, {args.size[0]}x{args.size[1]}): w1={best['w1']:g}, "
        f"theta_alpha={best['theta_alpha']:g}, "
        f"theta_beta={best['theta_beta']:g}, w2={best['w2']:g}, "
        f"theta_gamma={best['theta_gamma']:g}.",
        "",
        f"| mean IoU (%) | tuning set (seed {args.tune_seed}) | test set (seed {args.test_seed}) |",
        "|:---|---:|---:|",
        f"| no CRF | {100 * tune['no_crf']['mean_iou']:.2f} | "
        f"{100 * tests['default']['without_crf']['mean_iou']:.2f} |",
        f"| {args.default} | {100 * tune['reference']['mean_iou']:.2f} | "
        f"{100 * tests['default']['with_crf']['mean_iou']:.2f} |",
        f"| tuned | {100 * tune['mean_iou']:.2f} | "
        f"{100 * tests['tuned']['with_crf']['mean_iou']:.2f} |",
    ]
    header = [
        "| w (px) | mIoU no CRF | mIoU CRF | gain | acc. no CRF | acc. CRF | gain |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("tuned", "default"):
        lines += ["", f"Trimap on the test set, {name} CRF (%):", "", *header]
        lines += _trimap_rows(tests[name])
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
