"""The training loop (paper section 5, training) on one process or many (``torchrun``).

One iteration reads the global batch of the deterministic stream (:mod:`deeplab.train.data`)
as micro-batches, sums the pixel-wise cross-entropy (label 255 ignored) of every
micro-batch, divides by the number of valid label pixels in the whole global batch (summed
over processes first), and takes one SGD step. Gradients therefore equal those of a single
forward pass over the global batch, whatever ``accumulate`` and the number of processes:
runs with the same ``batch`` agree up to float rounding. (Caffe normalised each micro-batch
by its own pixel count; with equal-sized crops the two differ only through void pixels.)

A run directory holds::

    config.json            the resolved recipe and data source (plus world size, versions)
    checkpoints/           iter_NNNNNN.safetensors + .json (deeplab.train.checkpoint)
    log.jsonl              one record per log interval: iteration, loss, lr, images/s
    model.safetensors      the final weights (deeplab.models.load_model reads them)
    class_weights.json     with class_balance: the loss weights and the pixel counts
    crf.json               end-to-end runs: the learnt CRF parameters (``--crf crf.json``)
    training_curve.png     loss and learning rate against the iteration

With ``crf_end_to_end`` the network is followed by the unrolled mean-field CRF
(:mod:`deeplab.train.end_to_end`) and trained through it on full-resolution labels.

SIGTERM or SIGUSR1 ends a run after the iteration under way, with a checkpoint there
(:mod:`deeplab.train.preemption`); every process stops after the same iteration.

Only rank 0 writes files. Everything random (initialisation, data order, crops, mirrors,
dropout) derives from the recipe's seed, and checkpoints carry the RNG state of every
process, so on the CPU a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

import deeplab
from deeplab.crf.torch_backend import DenseCRF
from deeplab.data.balance import class_counts, class_weights
from deeplab.data.classes import IGNORE_INDEX
from deeplab.data.sample import SegmentationDataset
from deeplab.data.transforms import TrainTransform
from deeplab.distributed import DistContext, setup
from deeplab.io_utils import atomic_write_bytes
from deeplab.models import DeepLab, save_model
from deeplab.threads import rebalance_torch_threads
from deeplab.train.checkpoint import TrainState, load_latest, prune_checkpoints, save_checkpoint
from deeplab.train.data import DataSpec, MicroBatchSampler, TrainStream, build_dataset
from deeplab.train.end_to_end import CRFTrainingNet, crf_layer, crf_param_group
from deeplab.train.initial import initial_model
from deeplab.train.logs import append_log, plot_training_curve, read_log, truncate_log
from deeplab.train.preemption import StopRequest, ignore_stop_signals, shut_down_workers
from deeplab.train.recipe import Recipe, lr_at, param_groups
from deeplab.train.resume import momentum_buffers, restore_momentum, restore_rng, rng_states

__all__ = ["ProgressCallback", "TrainResult", "train"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[dict[str, Any]], None]
"""Receives events: ``{"event": "start" | "step" | "checkpoint" | "end", ...}``."""

CONFIG_NAME = "config.json"
LOG_NAME = "log.jsonl"
MODEL_NAME = "model.safetensors"
CURVE_NAME = "training_curve.png"
CRF_NAME = "crf.json"
COLLAPSE_WINDOW = 20
"""Iterations at the end of a run whose predictions are checked for a collapse."""


@dataclass
class TrainResult:
    """What :func:`train` returns (on every process)."""

    run_dir: Path
    model: DeepLab  # the trained network (unwrapped, on the training device)
    iteration: int  # iterations completed
    finished: bool  # reached recipe.iterations (False: stopped at ``stop_at`` or by a signal)
    seconds: float  # wall time of this call
    last_loss: float | None
    model_path: Path | None  # final weights (rank 0, finished runs)
    preempted: bool = False  # stopped early by SIGTERM/SIGUSR1, after a checkpoint
    collapsed_to: str | None = None  # the one class predicted at the end, if it collapsed


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
        atomic_write_bytes(run_dir / "class_weights.json", json.dumps(record, indent=1).encode())
    return torch.tensor(weights, dtype=torch.float32)


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or amp == "none":
        if amp in ("bf16", "fp16") and device.type != "cuda":
            log.info("mixed precision %s is for CUDA; training in float32 on %s", amp, device)
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _process_seed(seed: int, rank: int) -> int:
    # Distinct, seed-determined dropout streams per process.
    return int(np.random.SeedSequence([seed, rank, 7]).generate_state(1, np.uint64)[0] >> 1)


def _write_config(run_dir: Path, recipe: Recipe, data: dict[str, Any], world_size: int) -> None:
    config = {
        "recipe": recipe.to_dict(),
        "data": data,
        "world_size": world_size,
        "deeplab_version": deeplab.__version__,
        "torch_version": torch.__version__,
    }
    atomic_write_bytes(run_dir / CONFIG_NAME, (json.dumps(config, indent=2) + "\n").encode())


def _check_resumed_config(run_dir: Path, recipe: Recipe) -> None:
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


def train(
    recipe: Recipe,
    data: DataSpec | SegmentationDataset,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    device: str | torch.device | None = "auto",
    callback: ProgressCallback | None = None,
    stop_at: int | None = None,
) -> TrainResult:
    """Train ``recipe`` on ``data``, writing the run directory ``out_dir`` (module docstring).

    Args:
        data: a :class:`DataSpec` (recorded in ``config.json``) or an opened dataset.
        resume: continue from the newest valid checkpoint in ``out_dir`` (none: start).
            Without it, a directory that already has checkpoints is an error.
        device: "auto" (GPU ``LOCAL_RANK`` if available), "cpu", "cuda", "cuda:N".
        callback: progress events (the CLI draws its progress bar from them).
        stop_at: stop after this many iterations with a checkpoint, as a pre-empted job
            would (for tests and time-sliced runs); ``--resume`` continues.

    Called from the main thread, SIGTERM or SIGUSR1 ends the run after the current
    iteration with a checkpoint: ``preempted`` in the result (:mod:`deeplab.train.preemption`).
    """
    start_time = time.perf_counter()
    ctx = setup(device)
    try:
        with StopRequest() as stop_request, contextlib.ExitStack() as cleanup:
            return _train(recipe, data, Path(out_dir), resume, ctx, callback, stop_at,
                          start_time, stop_request, cleanup)  # fmt: skip
    finally:
        ctx.close()


@dataclass(frozen=True)
class _Run:
    """What every step of a run reads: the recipe, the processes, the run directory."""

    recipe: Recipe
    ctx: DistContext
    run_dir: Path
    callback: ProgressCallback | None
    start_time: float

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def emit(self, event: dict[str, Any]) -> None:
        """Pass a progress event to the callback, on rank 0 only."""
        if self.callback is not None and self.ctx.is_main:
            self.callback(event)


@dataclass(frozen=True)
class _Data:
    """The opened training set, its class count and how ``config.json`` records it."""

    dataset: SegmentationDataset
    record: dict[str, Any]
    num_classes: int


@dataclass
class _Trainee:
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
        return self.device.type == "cuda"


@dataclass
class _ClassWatch:
    """Classes the network predicted on the labelled pixels of the last iterations, and the
    labelled ones: a run that ends predicting one class everywhere has collapsed."""

    predicted: torch.Tensor  # (K,) int64 pixel counts
    labelled: torch.Tensor  # (K,) int64 pixel counts

    @classmethod
    def empty(cls, num_classes: int) -> _ClassWatch:
        return cls(
            torch.zeros(num_classes, dtype=torch.int64), torch.zeros(num_classes, dtype=torch.int64)
        )

    @torch.no_grad()
    def add(self, out: torch.Tensor, y: torch.Tensor) -> None:
        """Count (B, K, h, w) scores' argmax and (B, h, w) labels where labelled."""
        k = len(self.predicted)
        known = y != IGNORE_INDEX
        self.predicted += torch.bincount(out.detach().argmax(1)[known].cpu(), minlength=k)[:k]
        self.labelled += torch.bincount(y[known].cpu(), minlength=k)[:k]


@dataclass
class _Progress:
    """Where the iterations stand: their range, the last loss, the log window."""

    start: int
    stop: int  # set to the last iteration done when a stop signal ends the run early
    watch_from: int  # first iteration of the collapse watch
    classes: _ClassWatch
    window_start: float
    window: list[float] = field(default_factory=list)  # losses since the last log record
    last_loss: float | None = None
    preempted: bool = False


@dataclass(frozen=True)
class _Step:
    """One iteration's outcome."""

    lr: float
    loss: float  # mean loss per valid label pixel of the global batch
    valid: int  # valid label pixels of the global batch


def _train(
    recipe: Recipe,
    data: DataSpec | SegmentationDataset,
    run_dir: Path,
    resume: bool,
    ctx: DistContext,
    callback: ProgressCallback | None,
    stop_at: int | None,
    start_time: float,
    stop_request: StopRequest,
    cleanup: contextlib.ExitStack,
) -> TrainResult:
    """The run, step by step: data, network, resume, iterations, final files."""
    run = _Run(recipe, ctx, run_dir, callback, start_time)
    source = _open_data(recipe, data)
    micro = recipe.micro_batch(ctx.world_size)
    state = _checkpoint_to_resume(run, resume)
    model = _initial_network(run, source, resume)
    trainee = _build_trainee(run, model, source)
    start = _resume(run, trainee, state)
    stop = recipe.iterations if stop_at is None else min(max(stop_at, start), recipe.iterations)
    net = _distributed(trainee.module, ctx)
    batches = _batches(recipe, source.dataset, trainee.crf is not None, start, stop, ctx)
    # Its workers ignore stop signals: end them on the way out, also after an error.
    cleanup.callback(shut_down_workers, batches)
    run.emit(
        {
            "event": "start",
            "iteration": start,
            "total": recipe.iterations,
            "stop": stop,
            "micro_batch": micro,
            "world_size": ctx.world_size,
            "device": str(ctx.device),
        }
    )
    progress = _Progress(
        start=start,
        stop=stop,
        watch_from=stop - min(COLLAPSE_WINDOW, stop - start),
        classes=_ClassWatch.empty(source.num_classes),
        window_start=time.perf_counter(),
    )
    _iterate(run, trainee, net, batches, progress, stop_request)
    return _finish(run, trainee, source, progress)


def _open_data(recipe: Recipe, data: DataSpec | SegmentationDataset) -> _Data:
    """Open the data source and check its class count against the recipe's."""
    dataset = build_dataset(data) if isinstance(data, DataSpec) else data
    record = data.to_dict() if isinstance(data, DataSpec) else {"dataset": repr(data)}
    if recipe.num_classes is not None and recipe.num_classes != dataset.num_classes:
        raise ValueError(
            f"recipe has {recipe.num_classes} classes, the dataset {dataset.num_classes}"
        )
    return _Data(dataset, record, recipe.num_classes or dataset.num_classes)


def _checkpoint_to_resume(run: _Run, resume: bool) -> TrainState | None:
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


def _initial_network(run: _Run, source: _Data, resume: bool) -> DeepLab:
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


def _build_trainee(run: _Run, model: DeepLab, source: _Data) -> _Trainee:
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
    return _Trainee(model, module, crf, optimizer, scaler, amp_dtype, weight, device)


def _resume(run: _Run, trainee: _Trainee, state: TrainState | None) -> int:
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


def _distributed(module: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """``module`` wrapped for data-parallel training when there are several processes."""
    if not ctx.distributed:
        return module
    device = ctx.device
    return DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None
    )


def _batches(
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


def _iterate(
    run: _Run,
    trainee: _Trainee,
    net: torch.nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    progress: _Progress,
    stop_request: StopRequest,
) -> None:
    """Iterations ``progress.start .. progress.stop - 1``, with log records and checkpoints;
    a stop signal ends them early, after a checkpoint."""
    recipe = run.recipe
    for t in range(progress.start, progress.stop):
        step = _iteration(run, trainee, net, batches, t, progress, stop_request)
        progress.window.append(step.loss)
        done = t + 1
        now = time.perf_counter()
        run.emit({"event": "step", "iteration": done, "loss": step.loss, "lr": step.lr,
                  "images": recipe.batch})  # fmt: skip
        last_of_run = done == progress.stop or progress.preempted
        if done % recipe.log_every == 0 or last_of_run:
            _log_record(run, trainee, progress, step, done, now)
        if done % recipe.checkpoint_every == 0 or last_of_run:
            _checkpoint(run, trainee, step, done)
        if progress.preempted:
            log.warning("stop signal: checkpoint written at iteration %d, leaving", done)
            progress.stop = done
            break


def _iteration(
    run: _Run,
    trainee: _Trainee,
    net: torch.nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    t: int,
    progress: _Progress,
    stop_request: StopRequest,
) -> _Step:
    """Iteration ``t``: one SGD step on the global batch, read as ``recipe.accumulate``
    micro-batches (module docstring); sets ``progress.last_loss`` and ``.preempted``."""
    recipe, ctx = run.recipe, run.ctx
    if trainee.device.type == "cpu":
        rebalance_torch_threads()
    lr = lr_at(t, recipe)
    for group in trainee.optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]
    micro_batches = [next(batches) for _ in range(recipe.accumulate)]
    valid_here = sum(int((y != IGNORE_INDEX).sum()) for _, y in micro_batches)
    valid = int(ctx.all_reduce_sum(torch.tensor([valid_here], dtype=torch.int64)).item())
    # d(sum of losses / valid)/dw; DDP averages over processes, hence the world size.
    scale = ctx.world_size / max(valid, 1)
    watch = progress.classes if t >= progress.watch_from else None
    loss_sum = torch.zeros((), dtype=torch.float64)
    for j, (x, y) in enumerate(micro_batches):
        last = j == len(micro_batches) - 1
        loss_sum += _micro_batch(recipe, trainee, net, x, y, scale, last, watch)
    trainee.scaler.step(trainee.optimizer)
    trainee.scaler.update()
    trainee.optimizer.zero_grad(set_to_none=True)

    # The stop flag travels with the loss: every process learns, in the same iteration,
    # whether any of them was signalled.
    flag = torch.tensor(float(stop_request.pending), dtype=torch.float64)
    totals = ctx.all_reduce_sum(torch.stack([loss_sum, flag]))
    loss = float(totals[0]) / max(valid, 1)
    progress.last_loss = loss
    progress.preempted = bool(totals[1] > 0)
    if not np.isfinite(loss):
        raise ValueError(
            f"training diverged at iteration {t + 1} (loss {loss}): lower the learning "
            f"rate; the last checkpoint is in {run.ckpt_dir}"
        )
    return _Step(lr, loss, valid)


def _micro_batch(
    recipe: Recipe,
    trainee: _Trainee,
    net: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    scale: float,
    last: bool,
    watch: _ClassWatch | None,
) -> torch.Tensor:
    """Forward and backward of one micro-batch, x (B, 3, H, W) and labels y (B, h, w);
    returns its summed loss (a float64 CPU scalar). Gradients sync on the ``last`` only."""
    device = trainee.device
    x = x.to(device, non_blocking=True)
    y = y.to(device, non_blocking=True)
    if trainee.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    sync = (
        net.no_sync()
        if isinstance(net, DistributedDataParallel) and not last
        else contextlib.nullcontext()
    )
    amp = trainee.amp_dtype
    with sync:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            out = net(x)
        if out.shape[-2:] != y.shape[-2:]:
            raise ValueError(
                f"{recipe.model} maps crop {recipe.crop} to {tuple(out.shape[-2:])} "
                f"scores but the subsampled labels are {tuple(y.shape[-2:])}: check "
                f"crop and label_offset"
            )
        # The CRF returns log marginals; the network, scores.
        loss_fn = F.nll_loss if trainee.crf is not None else F.cross_entropy
        loss = loss_fn(
            out.float(), y, weight=trainee.weight, ignore_index=IGNORE_INDEX, reduction="sum"
        )
        trainee.scaler.scale(loss * scale).backward()
    if watch is not None:
        watch.add(out, y)
    return loss.detach().double().cpu()


def _log_record(
    run: _Run, trainee: _Trainee, progress: _Progress, step: _Step, done: int, now: float
) -> None:
    """Append the log window's record to ``log.jsonl`` (rank 0) and start a new window."""
    elapsed = now - progress.window_start
    record = {
        "iteration": done,
        "loss": float(np.mean(progress.window)),
        "lr": step.lr,
        "images_per_s": run.recipe.batch * len(progress.window) / max(elapsed, 1e-9),
        "valid_pixels": step.valid,
        "wall_s": now - run.start_time,
    }
    if trainee.crf is not None:
        w1, w2 = trainee.crf.kernel_weights()
        record.update(crf_w1=float(w1.detach()), crf_w2=float(w2.detach()))
    if run.ctx.is_main:
        append_log(run.run_dir / LOG_NAME, record)
    log.info("iteration %d: loss %.4f, lr %.3g", done, record["loss"], step.lr)
    progress.window, progress.window_start = [], now


def _checkpoint(run: _Run, trainee: _Trainee, step: _Step, done: int) -> None:
    """Write the checkpoint of iteration ``done`` (rank 0) and prune the old ones."""
    rng = rng_states(run.ctx)  # a collective: every process takes part
    if not run.ctx.is_main:
        return
    scaler = trainee.scaler
    meta = {
        "world_size": run.ctx.world_size,
        "loss": step.loss,
        "lr": step.lr,
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "recipe": run.recipe.to_dict(),
    }
    state = TrainState(
        done, trainee.module.state_dict(), momentum_buffers(trainee.optimizer), rng, meta
    )
    path = save_checkpoint(run.ckpt_dir, state)
    prune_checkpoints(run.ckpt_dir, run.recipe.keep_checkpoints)
    run.emit({"event": "checkpoint", "iteration": done, "path": str(path)})


def _finish(run: _Run, trainee: _Trainee, source: _Data, progress: _Progress) -> TrainResult:
    """Check for a collapse, write the final files of a finished run, report the end."""
    recipe, ctx = run.recipe, run.ctx
    classes = progress.classes
    collapsed = _collapsed(classes.predicted, classes.labelled, tuple(source.dataset.class_names))
    if collapsed is not None:
        # Info, not a warning: the caller reports it (TrainResult.collapsed_to) once the run
        # is over, not in the middle of a progress bar.
        log.info("training collapsed: only '%s' predicted in the last %d iterations",
                 collapsed, progress.stop - progress.watch_from)  # fmt: skip
    finished = progress.stop == recipe.iterations
    model_path = None
    if finished and ctx.is_main:
        model_path = _write_final_files(run, trainee, source, progress.last_loss)
    ctx.barrier()
    seconds = time.perf_counter() - run.start_time
    run.emit(
        {
            "event": "end",
            "iteration": progress.stop,
            "finished": finished,
            "seconds": seconds,
            "model_path": str(model_path) if model_path else None,
        }
    )
    return TrainResult(
        run.run_dir,
        trainee.model,
        progress.stop,
        finished,
        seconds,
        progress.last_loss,
        model_path,
        preempted=progress.preempted and not finished,
        collapsed_to=collapsed,
    )


def _write_final_files(
    run: _Run, trainee: _Trainee, source: _Data, last_loss: float | None
) -> Path:
    """``model.safetensors``, ``crf.json`` end-to-end and the training curve; returns the
    model's path."""
    recipe = run.recipe
    model_path = run.run_dir / MODEL_NAME
    save_model(
        trainee.model,
        model_path,
        source=f"deeplab train ({recipe.iterations} iterations, seed {recipe.seed})",
        extra={
            "recipe": json.dumps(recipe.to_dict()),
            "data": json.dumps(source.record),
            "final_loss": f"{last_loss}",
        },
    )
    if trainee.crf is not None:
        # The learnt w1, w2 with the test-time iteration count, for --crf FILE.
        trainee.crf.to_params().save(run.run_dir / CRF_NAME)
    records = read_log(run.run_dir / LOG_NAME)
    if records:
        plot_training_curve(records, run.run_dir / CURVE_NAME, title=f"{recipe.model}")
    return model_path


def _collapsed(
    predicted: torch.Tensor, labelled: torch.Tensor, class_names: tuple[str, ...]
) -> str | None:
    """The one class the network predicted when the labels held several, else None."""
    if int((labelled > 0).sum()) < 2 or int((predicted > 0).sum()) != 1:
        return None
    index = int(predicted.argmax())
    return class_names[index] if index < len(class_names) else str(index)
