"""Starting a training run: the data, the network, its optimizer, and a resumed checkpoint.

:func:`deeplab.train.loop.train` calls these steps in order (the paper's training recipe,
section 5: SGD with momentum 0.9 on the network initialised from ImageNet VGG-16, see
:mod:`deeplab.train.recipe`). :class:`Run` is what every step of a run reads;
:class:`Trainee` is what the loop trains. Nothing here is public API.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

import deeplab
from deeplab.crf.torch_backend import DenseCRF
from deeplab.data import DataSpec, build_dataset
from deeplab.data.balance import class_counts, class_weights
from deeplab.data.sample import SegmentationDataset
from deeplab.data.transforms import TrainTransform
from deeplab.distributed import DistContext
from deeplab.io_utils import atomic_write_bytes
from deeplab.models import DeepLab
from deeplab.train.checkpoint import TrainState, load_latest
from deeplab.train.data import MicroBatchSampler, TrainStream
from deeplab.train.end_to_end import CRFTrainingNet, crf_layer, crf_param_group
from deeplab.train.initial import initial_model
from deeplab.train.logs import truncate_log
from deeplab.train.preemption import ignore_stop_signals
from deeplab.train.recipe import Recipe, param_groups
from deeplab.train.resume import restore_momentum, restore_rng

__all__ = [
    "ProgressCallback",
    "Run",
    "TrainData",
    "Trainee",
    "build_trainee",
    "checkpoint_to_resume",
    "initial_network",
    "open_data",
    "resume_from",
    "training_batches",
    "wrap_distributed",
]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[dict[str, Any]], None]
"""Receives events: ``{"event": "start" | "step" | "checkpoint" | "end", ...}``."""

# The run directory (deeplab.train.loop's docstring lists what each file holds).
CONFIG_NAME = "config.json"
LOG_NAME = "log.jsonl"
MODEL_NAME = "model.safetensors"
CURVE_NAME = "training_curve.png"
CRF_NAME = "crf.json"
CLASS_WEIGHTS_NAME = "class_weights.json"
CHECKPOINTS_DIR = "checkpoints"


@dataclass(frozen=True)
class Run:
    """What every step of a run reads: the recipe, the processes, the run directory."""

    recipe: Recipe
    ctx: DistContext
    run_dir: Path
    callback: ProgressCallback | None
    start_time: float

    @property
    def ckpt_dir(self) -> Path:
        """The run's ``checkpoints/`` folder."""
        return self.run_dir / CHECKPOINTS_DIR

    def emit(self, event: dict[str, Any]) -> None:
        """Pass a progress event to the callback, on rank 0 only."""
        if self.callback is not None and self.ctx.is_main:
            self.callback(event)


@dataclass(frozen=True)
class TrainData:
    """The opened training set, its class count and how ``config.json`` records it."""

    dataset: SegmentationDataset
    record: dict[str, Any]
    num_classes: int


@dataclass
class Trainee:
    """The network (under the CRF end-to-end), its optimizer and what its loss needs."""

    model: DeepLab
    module: torch.nn.Module  # what trains: the network, or CRFTrainingNet(network, crf)
    crf: DenseCRF | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    weight: torch.Tensor | None  # (K,) class weights of the loss, or None
    device: torch.device

    @property
    def channels_last(self) -> bool:
        """Whether images go in channels-last (on CUDA, where convolutions prefer it)."""
        return self.device.type == "cuda"


def open_data(recipe: Recipe, data: DataSpec | SegmentationDataset) -> TrainData:
    """Open the data source and check its class count against the recipe's."""
    dataset = build_dataset(data) if isinstance(data, DataSpec) else data
    record = data.to_dict() if isinstance(data, DataSpec) else {"dataset": repr(data)}
    if recipe.num_classes is not None and recipe.num_classes != dataset.num_classes:
        raise ValueError(
            f"recipe has {recipe.num_classes} classes, the dataset {dataset.num_classes}"
        )
    return TrainData(dataset, record, recipe.num_classes or dataset.num_classes)


def checkpoint_to_resume(run: Run, resume: bool) -> TrainState | None:
    """The newest valid checkpoint with ``resume``; without it, checkpoints are an error."""
    state = load_latest(run.ckpt_dir) if resume else None
    if not resume and list(run.ckpt_dir.glob("iter_*.json")):
        raise FileExistsError(
            f"{run.run_dir} already has checkpoints: pass --resume or a new --out"
        )
    if state is not None and state.iteration > run.recipe.iterations:
        raise ValueError(
            f"checkpoint is at iteration {state.iteration}, past iterations={run.recipe.iterations}"
        )
    return state


def initial_network(run: Run, source: TrainData, resume: bool) -> DeepLab:
    """The same initial network on every process; then ``config.json`` (rank 0)."""
    torch.manual_seed(run.recipe.seed)
    model = initial_model(run.recipe, source.num_classes)
    # Written once the start cannot fail on its inputs (missing initial weights...), so a
    # failed start leaves no config.json that a later --resume would read.
    if run.ctx.is_main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            _check_resumed_config(run.run_dir, run.recipe)
        _write_config(run.run_dir, run.recipe, source.record, run.ctx.world_size)
    return model


def build_trainee(run: Run, model: DeepLab, source: TrainData) -> Trainee:
    """Move the network to the device, add the CRF end-to-end, make the SGD optimizer."""
    recipe, device = run.recipe, run.ctx.device
    model.class_names = tuple(source.dataset.class_names)
    main_dir = run.run_dir if run.ctx.is_main else None
    weight = _loss_weights(recipe, source.dataset, source.num_classes, main_dir)
    if weight is not None:
        weight = weight.to(device)
    model.to(device)
    if device.type == "cuda":
        # torch's stubs omit the memory_format keyword that Module.to accepts.
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    module: torch.nn.Module = model
    crf = None
    groups = param_groups(model, recipe)
    if recipe.crf_end_to_end:
        if recipe.init is None:
            log.warning("end-to-end CRF training from an untrained network: pass --init")
        crf = crf_layer(recipe.crf, recipe.crf_train_iterations).to(device)
        module = CRFTrainingNet(model, crf)
        groups.append(crf_param_group(crf, recipe.crf_lr_mult))
    module.train()
    if not groups:
        raise ValueError(f"{recipe.model}: no trainable parameters")
    optimizer = torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum)
    amp_dtype = _amp_dtype(recipe.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    return Trainee(model, module, crf, optimizer, scaler, amp_dtype, weight, device)


def resume_from(run: Run, trainee: Trainee, state: TrainState | None) -> int:
    """Seed this process's dropout, load ``state`` if any; returns the first iteration."""
    start = 0
    torch.manual_seed(_process_seed(run.recipe.seed, run.ctx.rank))
    if state is not None:
        trainee.module.load_state_dict(state.model)
        restore_momentum(trainee.optimizer, state.momentum)
        if state.meta.get("scaler") and trainee.scaler.is_enabled():
            trainee.scaler.load_state_dict(state.meta["scaler"])
        restore_rng(state, run.ctx)
        start = state.iteration
        log.info("resuming %s at iteration %d", run.run_dir, start)
    if run.ctx.is_main:
        # Records past the start will be redone; also those of a run that was killed
        # before its first checkpoint (start 0).
        truncate_log(run.run_dir / LOG_NAME, start)
    return start


def wrap_distributed(module: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """``module`` wrapped for data-parallel training when there are several processes."""
    if not ctx.distributed:
        return module
    device = ctx.device
    return DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None
    )


def training_batches(
    recipe: Recipe,
    dataset: SegmentationDataset,
    end_to_end: bool,
    start: int,
    stop: int,
    ctx: DistContext,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This process's micro-batches of iterations ``start .. stop - 1``: (x, y) pairs."""
    # End-to-end, the loss is on the CRF's full-resolution output: labels are not
    # subsampled to the network's stride-8 grid.
    transform = TrainTransform(
        crop_size=recipe.crop,
        label_stride=1 if end_to_end else 8,
        label_offset=0 if end_to_end else recipe.label_offset,
        mirror=recipe.mirror,
    )
    loader = DataLoader(
        TrainStream(dataset, transform, recipe.seed),
        batch_sampler=MicroBatchSampler(
            start, stop, recipe.batch, recipe.accumulate, ctx.rank, ctx.world_size
        ),
        num_workers=recipe.workers,
        pin_memory=ctx.device.type == "cuda",
        # Its own generator: creating the loader must not draw from the global RNG, whose
        # state (dropout) a resumed run restores exactly.
        generator=torch.Generator().manual_seed(recipe.seed),
        worker_init_fn=ignore_stop_signals,
    )
    return iter(loader)


def _loss_weights(
    recipe: Recipe, dataset: SegmentationDataset, num_classes: int, run_dir: Path | None
) -> torch.Tensor | None:
    """(K,) float32 class weights of the loss (``recipe.class_balance``), or None.

    Counted over the whole training set, so a resumed run gets the same weights; recorded
    in ``class_weights.json`` of the run directory (``run_dir`` None: not written).
    """
    if recipe.class_balance == "none":
        return None
    counts = class_counts(dataset, num_classes)
    weights = class_weights(counts, recipe.class_balance)
    assert weights is not None
    if run_dir is not None:
        record = {
            "mode": recipe.class_balance,
            "classes": list(dataset.class_names),
            "weights": [float(w) for w in weights],
            "pixels": [int(n) for n in counts.pixels],
        }
        atomic_write_bytes(run_dir / CLASS_WEIGHTS_NAME, json.dumps(record, indent=1).encode())
    return torch.tensor(weights, dtype=torch.float32)


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``recipe.amp`` on ``device``; None: float32 (always off CUDA)."""
    if device.type != "cuda" or amp == "none":
        if amp in ("bf16", "fp16") and device.type != "cuda":
            log.info("mixed precision %s is for CUDA; training in float32 on %s", amp, device)
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _process_seed(seed: int, rank: int) -> int:
    """The torch seed of process ``rank``'s dropout stream, derived from the recipe's seed."""
    return int(np.random.SeedSequence([seed, rank, 7]).generate_state(1, np.uint64)[0] >> 1)


def _write_config(run_dir: Path, recipe: Recipe, data: dict[str, Any], world_size: int) -> None:
    """Write ``config.json``: the recipe, the data source, the world size and versions."""
    config = {
        "recipe": recipe.to_dict(),
        "data": data,
        "world_size": world_size,
        "deeplab_version": deeplab.__version__,
        "torch_version": torch.__version__,
    }
    atomic_write_bytes(run_dir / CONFIG_NAME, (json.dumps(config, indent=2) + "\n").encode())


def _check_resumed_config(run_dir: Path, recipe: Recipe) -> None:
    """Warn about every recipe field that differs from the saved ``config.json``'s."""
    path = run_dir / CONFIG_NAME
    if not path.is_file():
        return
    saved = json.loads(path.read_text(encoding="utf-8")).get("recipe", {})
    changed = {k: (saved.get(k), v) for k, v in recipe.to_dict().items() if saved.get(k) != v}
    if changed:
        log.warning(
            "resuming with a changed recipe (saved -> now): %s",
            ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items()),
        )
