"""Command-line options naming a data source, shared by ``deeplab train`` and ``evaluate``.

Not a subcommand: :func:`add_data_options` adds the options, :func:`data_spec_from_args`
turns them into a :class:`deeplab.data.DataSpec`. Options left unset keep the values
of ``base`` (a run's recorded data source on ``--resume``) or the command's defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from deeplab.data import DATA_KINDS, DataSpec

__all__ = [
    "add_data_options",
    "add_threads_option",
    "apply_threads",
    "data_spec_from_args",
    "record_saved_data",
    "saved_data",
]

# option dest -> DataSpec field
_FIELDS = {
    "data": "kind",
    "voc_root": "voc_root",
    "sbd_root": "sbd_root",
    "aug_root": "aug_root",
    "split": "split",
    "images": "images",
    "masks": "masks",
    "classes": "classes",
    "camvid_root": "camvid_root",
    "synthetic_count": "synthetic_count",
    "synthetic_size": "synthetic_size",
    "synthetic_seed": "synthetic_seed",
    "limit": "limit",
}


def add_data_options(parser: argparse.ArgumentParser, split_help: str, seed_help: str) -> None:
    g = parser.add_argument_group("data (default: synthetic scenes)")
    g.add_argument("--data", choices=DATA_KINDS, default=None, help="data source")
    g.add_argument("--voc-root", help="VOC2012 folder (or VOCdevkit / the folder above)")
    g.add_argument(
        "--sbd-root",
        help="SBD benchmark_RELEASE (named in the hint when train_aug is not prepared; see "
        "deeplab prepare-voc)",
    )
    g.add_argument(
        "--aug-root",
        help="where deeplab prepare-voc --out wrote SegmentationClassAug and the train_aug "
        "lists (default: the VOC folder)",
    )
    g.add_argument("--split", default=None, help=split_help)
    g.add_argument("--images", help="folder data: images folder")
    g.add_argument("--masks", help="folder data: label PNG folder")
    g.add_argument("--classes", help="folder data: class-names file, one per line")
    g.add_argument(
        "--camvid-root", help="CamVid folder (train/, trainannot/, train.txt, val/, ...)"
    )
    g.add_argument("--synthetic-count", type=int, default=None, help="number of scenes")
    g.add_argument(
        "--synthetic-size", type=int, nargs=2, metavar=("H", "W"), default=None,
        help="scene size (default 200 200)",
    )  # fmt: skip
    g.add_argument("--synthetic-seed", type=int, default=None, help=seed_help)
    g.add_argument("--limit", type=int, default=None, help="use only the first N samples")


def data_spec_from_args(
    args: argparse.Namespace, base: DataSpec | None = None, **defaults: Any
) -> DataSpec:
    """Given options over ``base`` over ``defaults`` over DataSpec's own defaults."""
    values: dict[str, Any] = {**defaults, **(base.to_dict() if base is not None else {})}
    for dest, name in _FIELDS.items():
        value = getattr(args, dest, None)
        if value is not None:
            values[name] = value
    return DataSpec.from_dict(values)


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=int, default=None,
        help="CPU threads per process for torch and the CRF, fixed (default: as many as "
        "there are cores free, re-decided as the machine's load changes)",
    )  # fmt: skip


def apply_threads(args: argparse.Namespace) -> None:
    """--threads N: exactly N threads for torch and for the CRF's numba kernels, with no
    adaptation to the load (bit-identical training needs a fixed count). Without it both
    follow the free cores (``deeplab.threads``, ``deeplab.crf.threads``)."""
    threads = getattr(args, "threads", None)
    if not threads:  # not given, or 0: the default
        return
    if threads < 0:
        raise SystemExit(f"error: --threads must be at least 1, got {threads}")
    import os

    import numba

    from deeplab.threads import set_torch_thread_cap

    # Worker processes (evaluate --workers, tune-crf) inherit the setting.
    os.environ["DEEPLAB_ADAPTIVE_THREADS"] = "0"
    # numba.config sets its NUMBA_* names from the environment at import time, so a type
    # checker cannot see them as attributes: read the module's namespace.
    pool = int(vars(numba.config)["NUMBA_NUM_THREADS"])
    numba.set_num_threads(max(1, min(int(threads), pool)))
    # After numba: launching its OpenMP pool resets torch's thread count to all cores.
    set_torch_thread_cap(int(threads))


def record_saved_data(folder: Path, data: DataSpec) -> None:
    """Add the data source to a --save-logits folder's meta.json, so that re-scoring the
    saved scores (`evaluate --from-logits`, `tune-crf`) needs no data option repeated."""
    from deeplab.saved_scores import update_meta

    update_meta(folder, data=data.to_dict())


def saved_data(folder: Path) -> DataSpec | None:
    """The data source a --save-logits folder records (None: an older folder without it)."""
    from deeplab.saved_scores import LOGITS_META, read_meta

    record = read_meta(folder).get("data")
    if not isinstance(record, dict):
        return None
    try:
        return DataSpec.from_dict(record)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{Path(folder) / LOGITS_META}: bad 'data' record: {exc}") from None
