"""`deeplab demo`: the main job on the embedded default data."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tqdm import tqdm

from deeplab.cli.crf_cmd import add_param_options, params_from_args
from deeplab.demo import run_demo


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="run the whole pipeline on generated scenes")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder")
    p.add_argument("--scenes", type=int, default=8, help="number of synthetic scenes")
    p.add_argument("--seed", type=int, default=0)
    add_param_options(p, default="deeplab")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    bar = tqdm(total=args.scenes, desc="scenes", unit="img")

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    result = run_demo(
        args.out,
        num_scenes=args.scenes,
        seed=args.seed,
        params=params_from_args(args),
        progress=progress,
    )
    bar.close()
    print(
        f"mean IoU: coarse {100 * result.coarse.mean_iou():.2f}%, "
        f"with CRF {100 * result.refined.mean_iou():.2f}% "
        f"({time.perf_counter() - start:.1f} s)"
    )
    print(f"wrote {len(result.files)} files to {args.out}/ (results.md, one panel per scene)")
    return 0
