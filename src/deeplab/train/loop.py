"""The training loop (paper section 5, SPEC section 2) on one process or many (``torchrun``).

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

import deeplab
from deeplab.data import (
    IGNORE_INDEX,
    DataSpec,
    SegmentationDataset,
    TrainTransform,
    build_dataset,
)
from deeplab.data.balance import class_counts, class_weights
from deeplab.distributed import DistContext, setup
from deeplab.io_utils import atomic_write_bytes
from deeplab.models import WEIGHTS, DeepLab, build_model, convert_file, save_model
from deeplab.models.convert import map_deeplab
from deeplab.models.remote import download_weights
from deeplab.models.weights import read_state_dict, weights_dir
from deeplab.threads import rebalance_torch_threads
from deeplab.train.checkpoint import (
    TrainState,
    load_latest,
    prune_checkpoints,
    save_checkpoint,
)
from deeplab.train.data import MicroBatchSampler, TrainStream
from deeplab.train.end_to_end import CRFTrainingNet, crf_layer, crf_param_group
from deeplab.train.logs import append_log, plot_training_curve, read_log, truncate_log
from deeplab.train.preemption import StopRequest, ignore_stop_signals, shut_down_workers
from deeplab.train.recipe import Recipe, classifier_parameter, lr_at, param_groups

__all__ = ["ProgressCallback", "TrainResult", "initial_model", "train"]

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


def _resolve_init(init: str) -> Path:
    if init in WEIGHTS:
        record = WEIGHTS[init]
        path = weights_dir() / record.filename
        if not path.exists() and record.url:
            # The published file itself (downloaded once, hash-checked), converted below.
            return download_weights(record)
        return path
    return Path(init)


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


def initial_model(recipe: Recipe, num_classes: int) -> DeepLab:
    """The network a run starts from: fresh (He / Gaussian init), or ``recipe.init``.

    Initial weights with another class count (e.g. ImageNet or VOC weights for a 6-class
    dataset) load everything but the final classifier layers, which stay fresh (paper
    section 5: fc8 is new). ``freeze_base`` None keeps the MSc default (base frozen).
    """
    model = build_model(recipe.model, num_classes=num_classes)
    if recipe.init is not None:
        path = _resolve_init(recipe.init)
        if not path.exists():
            hint = (
                f" (run `deeplab convert` on the file from {WEIGHTS[recipe.init].source})"
                if recipe.init in WEIGHTS
                else ""
            )
            raise FileNotFoundError(f"initial weights not found: {path}{hint}; or pass --init none")
        if path.suffix == ".safetensors":
            own = model.state_dict()
            state = {
                k: v
                for k, v in read_state_dict(path).items()
                if not (classifier_parameter(k) and k in own and v.shape != own[k].shape)
            }
            dropped = sorted(set(own) - set(state))
            mapped, report = map_deeplab(state, recipe.model, num_classes)
            with torch.no_grad():
                for key, tensor in mapped.items():
                    own[key].copy_(tensor)
            if report.missing:
                log.info("init %s: fresh %s", path, ", ".join(report.missing))
            if dropped:
                log.info("init %s has another class count: fresh %s", path, ", ".join(dropped))
        else:
            converted, _ = convert_file(path, recipe.model, num_classes)
            model.load_state_dict(converted.state_dict())
        log.info("initialised %s from %s", recipe.model, path)
    if model.variant.msc and recipe.init is None and recipe.freeze_base is not False:
        log.warning(
            "%s: the MSc branches will train on a frozen, untrained base; pass the trained "
            "base network with --init (paper section 4.3)",
            recipe.model,
        )
    if model.variant.msc or recipe.freeze_base is not None:
        frozen = model.variant.msc if recipe.freeze_base is None else recipe.freeze_base
        model.freeze_base(frozen, train_fc8=recipe.train_fc8)
    return model


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


def _rng_states(ctx: DistContext) -> dict[str, torch.Tensor]:
    states = {f"torch_cpu/{r}": s for r, s in enumerate(ctx.all_gather(torch.get_rng_state()))}
    if ctx.device.type == "cuda":
        cuda = torch.cuda.get_rng_state(ctx.device)
        states.update({f"torch_cuda/{r}": s for r, s in enumerate(ctx.all_gather(cuda))})
    return states


def _restore_rng(state: TrainState, ctx: DistContext) -> None:
    saved_world = int(state.meta.get("world_size", 1))
    cpu = state.rng.get(f"torch_cpu/{ctx.rank}")
    if cpu is None or saved_world != ctx.world_size:
        log.warning(
            "checkpoint was written by %d process(es), this run has %d: dropout draws differ "
            "from an uninterrupted run",
            saved_world,
            ctx.world_size,
        )
        return
    torch.set_rng_state(cpu)
    cuda = state.rng.get(f"torch_cuda/{ctx.rank}")
    if cuda is not None and ctx.device.type == "cuda":
        torch.cuda.set_rng_state(cuda, ctx.device)


def _momentum(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for group in optimizer.param_groups:
        for name, p in zip(group["names"], group["params"], strict=True):
            buf = optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                out[name] = buf
    return out


def _restore_momentum(optimizer: torch.optim.Optimizer, buffers: dict[str, torch.Tensor]) -> None:
    params = {
        name: p
        for group in optimizer.param_groups
        for name, p in zip(group["names"], group["params"], strict=True)
    }
    unknown = sorted(set(buffers) - set(params))
    if unknown:
        raise ValueError(f"checkpoint has momentum for parameters this model does not train: "
                         f"{unknown[:5]}")  # fmt: skip
    for name, buf in buffers.items():
        p = params[name]
        if buf.shape != p.shape:
            raise ValueError(f"momentum {name}: shape {tuple(buf.shape)} != {tuple(p.shape)}")
        optimizer.state[p]["momentum_buffer"] = buf.to(p.device, p.dtype).clone()


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
    def emit(event: dict[str, Any]) -> None:
        if callback is not None and ctx.is_main:
            callback(event)

    dataset = build_dataset(data) if isinstance(data, DataSpec) else data
    data_record = data.to_dict() if isinstance(data, DataSpec) else {"dataset": repr(data)}
    num_classes = recipe.num_classes or dataset.num_classes
    if recipe.num_classes is not None and recipe.num_classes != dataset.num_classes:
        raise ValueError(
            f"recipe has {recipe.num_classes} classes, the dataset {dataset.num_classes}"
        )
    micro = recipe.micro_batch(ctx.world_size)
    ckpt_dir = run_dir / "checkpoints"
    state = load_latest(ckpt_dir) if resume else None
    if not resume and list(ckpt_dir.glob("iter_*.json")):
        raise FileExistsError(f"{run_dir} already has checkpoints: pass --resume or a new --out")
    if state is not None and state.iteration > recipe.iterations:
        raise ValueError(
            f"checkpoint is at iteration {state.iteration}, past iterations={recipe.iterations}"
        )
    torch.manual_seed(recipe.seed)  # the same initialisation on every process
    model = initial_model(recipe, num_classes)
    # Written once the start cannot fail on its inputs (missing initial weights...), so a
    # failed start leaves no config.json that a later --resume would read.
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            _check_resumed_config(run_dir, recipe)
        _write_config(run_dir, recipe, data_record, ctx.world_size)
    model.class_names = tuple(dataset.class_names)
    device = ctx.device
    weight = _loss_weights(recipe, dataset, num_classes, run_dir if ctx.is_main else None)
    if weight is not None:
        weight = weight.to(device)
    model.to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    # The module that trains: the network, or the network with the CRF on top.
    trainee: torch.nn.Module = model
    crf = None
    groups = param_groups(model, recipe)
    if recipe.crf_end_to_end:
        if recipe.init is None:
            log.warning("end-to-end CRF training from an untrained network: pass --init")
        crf = crf_layer(recipe.crf, recipe.crf_train_iterations).to(device)
        trainee = CRFTrainingNet(model, crf)
        groups.append(crf_param_group(crf, recipe.crf_lr_mult))
    trainee.train()
    if not groups:
        raise ValueError(f"{recipe.model}: no trainable parameters")
    optimizer = torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum)
    amp_dtype = _amp_dtype(recipe.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    start = 0
    torch.manual_seed(_process_seed(recipe.seed, ctx.rank))
    if state is not None:
        trainee.load_state_dict(state.model)
        _restore_momentum(optimizer, state.momentum)
        if state.meta.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(state.meta["scaler"])
        _restore_rng(state, ctx)
        start = state.iteration
        log.info("resuming %s at iteration %d", run_dir, start)
    if ctx.is_main:
        # Records past the start will be redone; also those of a run that was killed
        # before its first checkpoint (start 0).
        truncate_log(run_dir / LOG_NAME, start)
    stop = recipe.iterations if stop_at is None else min(max(stop_at, start), recipe.iterations)

    net: torch.nn.Module
    if ctx.distributed:
        net = DistributedDataParallel(
            trainee, device_ids=[device.index] if device.type == "cuda" else None
        )
    else:
        net = trainee
    # End-to-end, the loss is on the CRF's full-resolution output: labels are not
    # subsampled to the network's stride-8 grid.
    transform = TrainTransform(
        crop_size=recipe.crop,
        label_stride=1 if crf is not None else 8,
        label_offset=0 if crf is not None else recipe.label_offset,
        mirror=recipe.mirror,
    )
    loader = DataLoader(
        TrainStream(dataset, transform, recipe.seed),
        batch_sampler=MicroBatchSampler(
            start, stop, recipe.batch, recipe.accumulate, ctx.rank, ctx.world_size
        ),
        num_workers=recipe.workers,
        pin_memory=device.type == "cuda",
        # Its own generator: creating the loader must not draw from the global RNG, whose
        # state (dropout) a resumed run restores exactly.
        generator=torch.Generator().manual_seed(recipe.seed),
        worker_init_fn=ignore_stop_signals,
    )
    batches = iter(loader)
    # Its workers ignore stop signals: end them on the way out, also after an error.
    cleanup.callback(shut_down_workers, batches)
    emit({"event": "start", "iteration": start, "total": recipe.iterations, "stop": stop,
          "micro_batch": micro, "world_size": ctx.world_size, "device": str(device)})  # fmt: skip

    last_loss: float | None = None
    preempted = False
    # Classes the network predicted on the labelled pixels of the last iterations: a run
    # that ends predicting one class everywhere (e.g. all background) has collapsed.
    predicted = torch.zeros(num_classes, dtype=torch.int64)
    labelled = torch.zeros(num_classes, dtype=torch.int64)
    watch_from = stop - min(COLLAPSE_WINDOW, stop - start)
    window: list[float] = []
    window_start = time.perf_counter()
    for t in range(start, stop):
        if device.type == "cpu":
            rebalance_torch_threads()
        lr = lr_at(t, recipe)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
        micro_batches = [next(batches) for _ in range(recipe.accumulate)]
        valid_here = sum(int((y != IGNORE_INDEX).sum()) for _, y in micro_batches)
        valid = int(ctx.all_reduce_sum(torch.tensor([valid_here], dtype=torch.int64)).item())
        # d(sum of losses / valid)/dw; DDP averages over processes, hence the world size.
        scale = ctx.world_size / max(valid, 1)
        loss_sum = torch.zeros((), dtype=torch.float64)
        for j, (x, y) in enumerate(micro_batches):
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            last = j == len(micro_batches) - 1
            sync = contextlib.nullcontext() if last or not ctx.distributed else net.no_sync()
            with sync:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    out = net(x)
                if out.shape[-2:] != y.shape[-2:]:
                    raise ValueError(
                        f"{recipe.model} maps crop {recipe.crop} to {tuple(out.shape[-2:])} "
                        f"scores but the subsampled labels are {tuple(y.shape[-2:])}: check "
                        f"crop and label_offset"
                    )
                # The CRF returns log marginals; the network, scores.
                loss_fn = F.nll_loss if crf is not None else F.cross_entropy
                loss = loss_fn(
                    out.float(), y, weight=weight, ignore_index=IGNORE_INDEX, reduction="sum"
                )
                scaler.scale(loss * scale).backward()
            if t >= watch_from:
                with torch.no_grad():
                    known = y != IGNORE_INDEX
                    predicted += torch.bincount(
                        out.detach().argmax(1)[known].cpu(), minlength=num_classes
                    )[:num_classes]
                    labelled += torch.bincount(y[known].cpu(), minlength=num_classes)[:num_classes]
            loss_sum += loss.detach().double().cpu()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

        # The stop flag travels with the loss: every process learns, in the same iteration,
        # whether any of them was signalled.
        flag = torch.tensor(float(stop_request.pending), dtype=torch.float64)
        totals = ctx.all_reduce_sum(torch.stack([loss_sum, flag]))
        last_loss = float(totals[0]) / max(valid, 1)
        preempted = bool(totals[1] > 0)
        if not np.isfinite(last_loss):
            raise ValueError(
                f"training diverged at iteration {t + 1} (loss {last_loss}): lower the learning "
                f"rate; the last checkpoint is in {ckpt_dir}"
            )
        window.append(last_loss)
        done = t + 1
        now = time.perf_counter()
        emit({"event": "step", "iteration": done, "loss": last_loss, "lr": lr,
              "images": recipe.batch})  # fmt: skip
        last_of_run = done == stop or preempted
        if done % recipe.log_every == 0 or last_of_run:
            elapsed = now - window_start
            record = {
                "iteration": done,
                "loss": float(np.mean(window)),
                "lr": lr,
                "images_per_s": recipe.batch * len(window) / max(elapsed, 1e-9),
                "valid_pixels": valid,
                "wall_s": now - start_time,
            }
            if crf is not None:
                w1, w2 = crf.kernel_weights()
                record.update(crf_w1=float(w1.detach()), crf_w2=float(w2.detach()))
            if ctx.is_main:
                append_log(run_dir / LOG_NAME, record)
            log.info("iteration %d: loss %.4f, lr %.3g", done, record["loss"], lr)
            window, window_start = [], now
        if done % recipe.checkpoint_every == 0 or last_of_run:
            rng = _rng_states(ctx)  # a collective: every process takes part
            if ctx.is_main:
                meta = {
                    "world_size": ctx.world_size,
                    "loss": last_loss,
                    "lr": lr,
                    "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                    "recipe": recipe.to_dict(),
                }
                path = save_checkpoint(
                    ckpt_dir,
                    TrainState(done, trainee.state_dict(), _momentum(optimizer), rng, meta),
                )
                prune_checkpoints(ckpt_dir, recipe.keep_checkpoints)
                emit({"event": "checkpoint", "iteration": done, "path": str(path)})
        if preempted:
            log.warning("stop signal: checkpoint written at iteration %d, leaving", done)
            stop = done
            break

    collapsed = _collapsed(predicted, labelled, tuple(dataset.class_names))
    if collapsed is not None:
        # Info, not a warning: the caller reports it (TrainResult.collapsed_to) once the run
        # is over, not in the middle of a progress bar.
        log.info("training collapsed: only '%s' predicted in the last %d iterations",
                 collapsed, stop - watch_from)  # fmt: skip
    finished = stop == recipe.iterations
    model_path = None
    if finished and ctx.is_main:
        model_path = run_dir / MODEL_NAME
        save_model(
            model,
            model_path,
            source=f"deeplab train ({recipe.iterations} iterations, seed {recipe.seed})",
            extra={
                "recipe": json.dumps(recipe.to_dict()),
                "data": json.dumps(data_record),
                "final_loss": f"{last_loss}",
            },
        )
        if crf is not None:
            # The learnt w1, w2 with the test-time iteration count, for --crf FILE.
            crf.to_params().save(run_dir / CRF_NAME)
        records = read_log(run_dir / LOG_NAME)
        if records:
            plot_training_curve(records, run_dir / CURVE_NAME, title=f"{recipe.model}")
    ctx.barrier()
    seconds = time.perf_counter() - start_time
    emit({"event": "end", "iteration": stop, "finished": finished, "seconds": seconds,
          "model_path": str(model_path) if model_path else None})  # fmt: skip
    return TrainResult(run_dir, model, stop, finished, seconds, last_loss, model_path,
                       preempted=preempted and not finished, collapsed_to=collapsed)  # fmt: skip


def _collapsed(
    predicted: torch.Tensor, labelled: torch.Tensor, class_names: tuple[str, ...]
) -> str | None:
    """The one class the network predicted when the labels held several, else None."""
    if int((labelled > 0).sum()) < 2 or int((predicted > 0).sum()) != 1:
        return None
    index = int(predicted.argmax())
    return class_names[index] if index < len(class_names) else str(index)
