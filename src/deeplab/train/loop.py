"""The training loop (paper section 5, training) on one process or many (``torchrun``).

:func:`train` runs the steps of :func:`_train` in order: open the data, build (or resume)
the network and its optimizer (:mod:`deeplab.train.start`), iterate, write the final files.

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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)
from torch.nn.parallel import DistributedDataParallel

from deeplab.data import IGNORE_INDEX, DataSpec, SegmentationDataset
from deeplab.distributed import setup
from deeplab.models import DeepLab, save_model
from deeplab.threads import rebalance_torch_threads
from deeplab.train.checkpoint import TrainState, prune_checkpoints, save_checkpoint
from deeplab.train.logs import append_log, plot_training_curve, read_log
from deeplab.train.preemption import StopRequest, shut_down_workers
from deeplab.train.recipe import Recipe, lr_at
from deeplab.train.resume import momentum_buffers, rng_states
from deeplab.train.start import (
    CRF_NAME,
    CURVE_NAME,
    LOG_NAME,
    MODEL_NAME,
    ProgressCallback,
    Run,
    TrainData,
    Trainee,
    build_trainee,
    checkpoint_to_resume,
    initial_network,
    open_data,
    resume_from,
    training_batches,
    wrap_distributed,
)

__all__ = ["ProgressCallback", "TrainResult", "train"]

log = logging.getLogger(__name__)

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
            run = Run(recipe, ctx, Path(out_dir), callback, start_time)
            return _train(run, data, resume, stop_at, stop_request, cleanup)
    finally:
        ctx.close()


def _train(
    run: Run,
    data: DataSpec | SegmentationDataset,
    resume: bool,
    stop_at: int | None,
    stop_request: StopRequest,
    cleanup: contextlib.ExitStack,
) -> TrainResult:
    """The run, step by step: data, network, resume, iterations, final files."""
    recipe, ctx = run.recipe, run.ctx
    source = open_data(recipe, data)
    micro = recipe.micro_batch(ctx.world_size)
    state = checkpoint_to_resume(run, resume)
    model = initial_network(run, source, resume)
    trainee = build_trainee(run, model, source)
    start = resume_from(run, trainee, state)
    stop = recipe.iterations if stop_at is None else min(max(stop_at, start), recipe.iterations)
    net = wrap_distributed(trainee.module, ctx)
    batches = training_batches(recipe, source.dataset, trainee.crf is not None, start, stop, ctx)
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
    progress = _Progress.begin(start, stop, source.num_classes)
    _iterate(run, trainee, net, batches, progress, stop_request)
    return _finish(run, trainee, source, progress)


def _iterate(
    run: Run,
    trainee: Trainee,
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
    run: Run,
    trainee: Trainee,
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
    trainee: Trainee,
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
    run: Run, trainee: Trainee, progress: _Progress, step: _Step, done: int, now: float
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


def _checkpoint(run: Run, trainee: Trainee, step: _Step, done: int) -> None:
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


def _finish(run: Run, trainee: Trainee, source: TrainData, progress: _Progress) -> TrainResult:
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
    run: Run, trainee: Trainee, source: TrainData, last_loss: float | None
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


@dataclass
class _ClassWatch:
    """Classes the network predicted on the labelled pixels of the last iterations, and the
    labelled ones: a run that ends predicting one class everywhere has collapsed."""

    predicted: torch.Tensor  # (K,) int64 pixel counts
    labelled: torch.Tensor  # (K,) int64 pixel counts

    @classmethod
    def empty(cls, num_classes: int) -> _ClassWatch:
        """Zero counts for ``num_classes`` classes."""
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

    @classmethod
    def begin(cls, start: int, stop: int, num_classes: int) -> _Progress:
        """Before iteration ``start``; the collapse watch covers the last iterations."""
        return cls(
            start=start,
            stop=stop,
            watch_from=stop - min(COLLAPSE_WINDOW, stop - start),
            classes=_ClassWatch.empty(num_classes),
            window_start=time.perf_counter(),
        )


@dataclass(frozen=True)
class _Step:
    """One iteration's outcome."""

    lr: float
    loss: float  # mean loss per valid label pixel of the global batch
    valid: int  # valid label pixels of the global batch


def _collapsed(
    predicted: torch.Tensor, labelled: torch.Tensor, class_names: tuple[str, ...]
) -> str | None:
    """The one class the network predicted when the labels held several, else None."""
    if int((labelled > 0).sum()) < 2 or int((predicted > 0).sum()) != 1:
        return None
    index = int(predicted.argmax())
    return class_names[index] if index < len(class_names) else str(index)
