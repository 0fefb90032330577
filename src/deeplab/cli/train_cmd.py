"""`deeplab train`: train a DeepLab variant with the paper's recipe (or overrides of it).

One process::

    deeplab train --model deeplab-largefov-tiny --data synthetic --out runs/tiny

Many (PyTorch's own launcher; NCCL on GPUs, gloo on CPUs)::

    torchrun --nproc_per_node 4 -m deeplab train --model deeplab-largefov \\
        --data voc --voc-root VOC2012 --sbd-root benchmark_RELEASE --out runs/largefov

SIGTERM or SIGUSR1 (a scheduler's pre-emption) ends the run after the current iteration
with a checkpoint and exit status 75; ``--resume`` continues from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
import types
import typing
from pathlib import Path
from typing import Any

from deeplab.cli.data_args import (
    add_data_options,
    add_threads_option,
    apply_threads,
    data_spec_from_args,
)
from deeplab.cli.feedback import close_bar
from deeplab.data import DataSpec
from deeplab.train.preemption import PREEMPTED_EXIT_STATUS
from deeplab.train.recipe import AMP_MODES, Recipe, load_config_file, resolve_recipe

log = logging.getLogger(__name__)

# Recipe fields given their own spelling or handling below.
_SPECIAL = {"model", "init", "amp"}
# Help texts that read better on the command line than the recipe's field notes.
_HELP = {
    "classifier_lr_mult": "learning-rate multiple of the final classifier layers (the paper: "
    "10, its fc8 rate 0.01 against 0.001 for the rest)",
}


def _none_or(kind: type) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__
    return parse


def _add_recipe_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "recipe (defaults: the paper's recipe for --model, then --config, then these)"
    )
    g.add_argument("--model", help="network variant (required unless --config/--resume names it)")
    g.add_argument(
        "--init", default=None, metavar="WEIGHTS|none",
        help="initial weights: a registered name (e.g. vgg16_20M) or a checkpoint; "
        "'none' trains from scratch (default: the variant's ImageNet init, if any)",
    )  # fmt: skip
    g.add_argument("--amp", choices=AMP_MODES, default=None, help="CUDA mixed precision")
    help_text = Recipe.field_help()
    hints = typing.get_type_hints(Recipe)
    for f in dataclasses.fields(Recipe):
        if f.name in _SPECIAL:
            continue
        option = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = isinstance(hint, types.UnionType) and type(None) in args
        base = next(a for a in args if a is not type(None)) if optional else hint
        if base is bool:
            g.add_argument(option, action=argparse.BooleanOptionalAction, default=None,
                           help=help_text[f.name])  # fmt: skip
        else:
            text = _HELP.get(f.name, help_text[f.name])
            g.add_argument(option, type=_none_or(base) if optional else base, default=None,
                           help=f"{text} (default {f.default})")  # fmt: skip


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        help="train a network (paper section 5 recipe; torchrun for several processes)",
        description="Train a DeepLab variant. Recipe values: the paper's for --model, "
        "overridden by --config FILE (JSON) and then by the options below. The resolved "
        "config, checkpoints, a JSONL log, the final model and a training curve go to --out.",
        epilog=f"Exit status: 0 when the run reached --stop-at or its last iteration; "
        f"{PREEMPTED_EXIT_STATUS} when SIGTERM or SIGUSR1 (pre-emption) stopped it after the "
        "current iteration and a checkpoint (run again with --resume; a second signal ends "
        "it at once); 1 on an error (e.g. a full disk: the message names the file, the bytes "
        "needed and the bytes free; the previous checkpoint is kept).",
    )
    p.add_argument("--config", type=Path, help="JSON recipe, e.g. configs/deeplab-largefov.json")
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest valid checkpoint in --out")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument(
        "--stop-at",
        type=int,
        default=None,
        help="stop after this many iterations with a checkpoint (resume later)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_threads_option(p)
    _add_recipe_options(p)
    add_data_options(
        p,
        split_help="VOC list to train on (default train_aug)",
        seed_help="synthetic scene family (default 0; evaluate uses 1: held out)",
    )
    p.set_defaults(func=run)
    return p


def _init_none(args: argparse.Namespace) -> bool:
    return args.init is not None and args.init.lower() == "none"


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    values = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(Recipe)}
    if _init_none(args):
        values["init"] = None
    return {k: v for k, v in values.items() if v is not None}


def resolve(args: argparse.Namespace) -> tuple[Recipe, DataSpec]:
    """The recipe and data source of this invocation (saved run < --config < options)."""
    config: dict[str, Any] = {}
    base_data = None
    saved = args.out / "config.json"
    if args.resume and saved.is_file():
        record = json.loads(saved.read_text(encoding="utf-8"))
        config.update(load_config_file(saved))
        if isinstance(record.get("data"), dict) and "kind" in record["data"]:
            base_data = DataSpec.from_dict(record["data"])
    if args.config is not None:
        config.update(load_config_file(args.config))
    recipe = resolve_recipe(args.model, config or None, _overrides(args))
    if _init_none(args):
        # None means "not given" to resolve_recipe; `--init none` must beat a config's init.
        recipe = recipe.replace(init=None)
    data = data_spec_from_args(args, base_data)
    return recipe, data


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from deeplab.train import train

    apply_threads(args)
    recipe, data = resolve(args)
    rank = int(os.environ.get("RANK", "0"))
    bar: tqdm | None = None
    marks = {"time": time.perf_counter(), "iteration": 0}

    def progress(event: dict[str, Any]) -> None:
        nonlocal bar
        kind = event["event"]
        if kind == "start":
            marks.update(time=time.perf_counter(), iteration=event["iteration"])
            if not args.no_progress:
                bar = tqdm(total=event["stop"], initial=event["iteration"], unit="it",
                           desc="train", dynamic_ncols=True, file=sys.stderr)  # fmt: skip
            else:
                print(
                    f"training {recipe.model} from iteration {event['iteration']} to "
                    f"{event['stop']} on {event['world_size']} process(es), {event['device']}"
                )
        elif kind == "step" and bar is not None:
            now = time.perf_counter()
            done = event["iteration"] - marks["iteration"]
            rate = done * recipe.batch / max(now - marks["time"], 1e-9)
            bar.set_postfix(loss=f"{event['loss']:.3f}", lr=f"{event['lr']:.2g}",
                            img_s=f"{rate:.1f}", refresh=False)  # fmt: skip
            bar.update(1)
        elif kind == "end" and bar is not None:
            bar.close()

    try:
        result = train(recipe, data, args.out, resume=args.resume, device=args.device,
                       callback=progress if rank == 0 else None, stop_at=args.stop_at)  # fmt: skip
    except BaseException:
        close_bar(bar, failed=True)  # the error is printed alone
        raise
    if rank == 0:
        state = "finished" if result.finished else "stopped"
        loss = "n/a" if result.last_loss is None else f"{result.last_loss:.4f}"
        print(
            f"{state} at iteration {result.iteration}/{recipe.iterations} in "
            f"{result.seconds:.1f} s, last loss {loss}; run directory {result.run_dir}"
        )
        if result.model_path is not None:
            print(f"model: {result.model_path}")
        if result.preempted:
            print(f"stopped by a signal after a checkpoint; continue with --resume "
                  f"(exit status {PREEMPTED_EXIT_STATUS})")  # fmt: skip
        if result.collapsed_to is not None:
            print(
                f"deeplab train: warning: the network ended predicting only "
                f"'{result.collapsed_to}' on the training pixels: training collapsed to one "
                "class; try a smaller --lr, more --iterations, or check the labels",
                file=sys.stderr,
            )
    return PREEMPTED_EXIT_STATUS if result.preempted else 0
