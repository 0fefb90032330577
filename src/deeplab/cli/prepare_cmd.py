"""`deeplab prepare-voc`: write the paper's ``train_aug`` split from VOC 2012 and SBD, once.

::

    deeplab prepare-voc --voc VOCdevkit --sbd benchmark_RELEASE
    deeplab prepare-voc --voc VOCdevkit --sbd benchmark_RELEASE --out ~/voc_aug   # VOC read-only

Writes ``SegmentationClassAug/`` (SBD's labels as PNGs, VOC's own where VOC has one) and
``ImageSets/SegmentationAug/{train_aug,trainval_aug}.txt`` under ``--out`` (default: the VOC
folder). Training and evaluation only read them (``--data voc --split train_aug``, plus
``--aug-root`` when ``--out`` was given). Interrupted, it resumes where it stopped.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "prepare-voc",
        help="write the train_aug split (SegmentationClassAug) from VOC 2012 and SBD",
        description="Write SegmentationClassAug/ (SBD's extra labels plus VOC's own) and the "
        "train_aug / trainval_aug lists that `--data voc --split train_aug` reads (paper "
        "section 5: 10,582 training images on the full data). Training and evaluation never "
        "write into the VOC folder; this command does, once, unless --out points elsewhere.",
    )
    p.add_argument(
        "--voc", type=Path, required=True, help="VOC2012 folder (or VOCdevkit / the folder above)"
    )
    p.add_argument(
        "--sbd",
        type=Path,
        required=True,
        help="SBD folder: benchmark_RELEASE, its dataset/ folder, or the folder above",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder to write into (default: the VOC folder); pass it as --aug-root later",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from deeplab.data.sbd import prepare_train_aug
    from deeplab.data.voc import read_name_list

    files = prepare_train_aug(args.voc, args.sbd, out_dir=args.out)
    labels = sum(1 for _ in files.labels.glob("*.png"))
    train_aug = len(read_name_list(files.train_aug))
    trainval_aug = len(read_name_list(files.trainval_aug))
    print(f"{files.labels}: {labels} label PNGs")
    print(f"{files.train_aug}: {train_aug} names")
    print(f"{files.trainval_aug}: {trainval_aug} names")
    use = ["--data", "voc", "--voc-root", str(args.voc)]
    if args.out is not None:
        use += ["--aug-root", str(args.out)]
    print(f"train on it with: deeplab train {shlex.join([*use, '--split', 'train_aug'])} ...")
    return 0
