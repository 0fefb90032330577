"""Training checkpoints: safetensors for tensors, a JSON sidecar for everything else.

A checkpoint of iteration ``t`` is two files in the run's ``checkpoints/`` folder::

    iter_000400.safetensors   model/<name>      the network's state dict
                              momentum/<name>   SGD momentum buffers, by parameter name
                              rng/<kind>/<rank> torch RNG states (uint8 tensors), per process
    iter_000400.json          iteration, size and sha256 of the .safetensors file, the AMP
                              grad-scaler state and other JSON values

Nothing is pickled. Both files are written atomically (temporary file, fsync, rename), the
tensors first, so a sidecar only exists for complete tensors; loading checks the recorded
size and sha256, and :func:`load_latest` falls back to the previous checkpoint when the
newest one is missing or damaged, saying so in the log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load

from deeplab.io_utils import atomic_write_bytes
from deeplab.models.weights import safetensors_bytes

__all__ = [
    "CHECKPOINT_FORMAT",
    "CorruptCheckpointError",
    "TrainState",
    "list_checkpoints",
    "load_checkpoint",
    "load_latest",
    "prune_checkpoints",
    "save_checkpoint",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "deeplab-train-checkpoint"
CHECKPOINT_VERSION = 1
_NAME = re.compile(r"^iter_(\d{6,})\.json$")
_SECTIONS = ("model", "momentum", "rng")


class CorruptCheckpointError(ValueError):
    """A checkpoint whose files are missing, truncated or altered."""


@dataclass
class TrainState:
    """What a checkpoint holds.

    Attributes:
        iteration: iterations completed (training resumes at this 0-based iteration).
        model: the network's state dict (CPU tensors).
        momentum: SGD momentum buffer per parameter name (parameters not yet stepped absent).
        rng: named uint8 RNG states, e.g. ``"torch_cpu/0"`` for rank 0's CPU generator.
        meta: JSON-able values (grad-scaler state, world size, loss, ...).
    """

    iteration: int
    model: dict[str, torch.Tensor]
    momentum: dict[str, torch.Tensor] = field(default_factory=dict)
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def _paths(directory: Path, iteration: int) -> tuple[Path, Path]:
    stem = f"iter_{iteration:06d}"
    return directory / f"{stem}.safetensors", directory / f"{stem}.json"


def save_checkpoint(directory: str | os.PathLike[str], state: TrainState) -> Path:
    """Write ``state`` as ``iter_<iteration>.{safetensors,json}``; returns the JSON path."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for section, values in (("model", state.model), ("momentum", state.momentum),
                            ("rng", state.rng)):  # fmt: skip
        for name, tensor in values.items():
            # Own, contiguous CPU copies: safetensors refuses shared or strided storage.
            tensors[f"{section}/{name}"] = tensor.detach().to("cpu").contiguous().clone()
    payload = safetensors_bytes(
        tensors, {"format": CHECKPOINT_FORMAT, "iteration": str(state.iteration)}
    )
    tensor_path, meta_path = _paths(folder, state.iteration)
    atomic_write_bytes(tensor_path, payload)
    record = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "iteration": state.iteration,
        "file": tensor_path.name,
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "meta": state.meta,
    }
    atomic_write_bytes(meta_path, (json.dumps(record, indent=2) + "\n").encode())
    log.info("checkpoint %d: %s (%.1f MB)", state.iteration, tensor_path, len(payload) / 1e6)
    return meta_path


def load_checkpoint(meta_path: str | os.PathLike[str]) -> TrainState:
    """Read and verify one checkpoint given its JSON sidecar.

    Raises :class:`CorruptCheckpointError` when a file is missing, unreadable, or its size
    or sha256 differs from the record.
    """
    mp = Path(meta_path)
    try:
        record = json.loads(mp.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
            raise CorruptCheckpointError(f"{mp}: not a {CHECKPOINT_FORMAT} record")
        name = str(record["file"])
        # A plain name in the record's own folder: a record must not point the loader at
        # another file ("../x", "/dev/zero", which would be read forever).
        if Path(name).name != name or name in ("", ".", ".."):
            raise CorruptCheckpointError(f"{mp}: tensor file {name!r} is not a plain file name")
        tensor_path = mp.parent / name
        expected_size, expected_sha = int(record["size"]), str(record["sha256"])
        iteration = int(record["iteration"])
        meta = record.get("meta") or {}
        if not isinstance(meta, dict):
            raise CorruptCheckpointError(f"{mp}: 'meta' is not an object")
    except (OSError, ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
        if isinstance(exc, CorruptCheckpointError):
            raise
        raise CorruptCheckpointError(f"{mp}: unreadable checkpoint record ({exc!r})") from None
    try:
        # The size first: a damaged record must not make us read a huge file.
        size = tensor_path.stat().st_size
        if size != expected_size:
            raise CorruptCheckpointError(
                f"{tensor_path}: {size} bytes, the record says {expected_size}"
            )
        payload = tensor_path.read_bytes()
    except OSError as exc:
        raise CorruptCheckpointError(f"{tensor_path}: cannot read ({exc})") from None
    if len(payload) != expected_size:
        raise CorruptCheckpointError(
            f"{tensor_path}: {len(payload)} bytes, the record says {expected_size}"
        )
    digest = hashlib.sha256(payload).hexdigest()
    if digest != expected_sha:
        raise CorruptCheckpointError(f"{tensor_path}: sha256 {digest} != recorded {expected_sha}")
    try:
        tensors = safetensors_load(payload)
    except SafetensorError as exc:
        raise CorruptCheckpointError(f"{tensor_path}: not readable safetensors ({exc})") from None
    sections: dict[str, dict[str, torch.Tensor]] = {s: {} for s in _SECTIONS}
    for key, tensor in tensors.items():
        section, _, name = key.partition("/")
        if section not in sections or not name:
            raise CorruptCheckpointError(f"{tensor_path}: unexpected tensor {key!r}")
        sections[section][name] = tensor
    return TrainState(
        iteration=iteration,
        model=sections["model"],
        momentum=sections["momentum"],
        rng=sections["rng"],
        meta=dict(meta),
    )


def list_checkpoints(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(iteration, JSON path) of every checkpoint record in ``directory``, oldest first."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        m = _NAME.match(path.name)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def load_latest(directory: str | os.PathLike[str]) -> TrainState | None:
    """The newest checkpoint that verifies, or None if there is none at all.

    Damaged ones are reported (log error) and skipped; if every checkpoint is damaged that
    is a :class:`CorruptCheckpointError` (starting over silently would hide it).
    """
    candidates = list_checkpoints(directory)
    problems = []
    for iteration, meta_path in reversed(candidates):
        try:
            state = load_checkpoint(meta_path)
        except CorruptCheckpointError as exc:
            log.error("checkpoint %d is damaged, trying the previous one: %s", iteration, exc)
            problems.append(str(exc))
            continue
        if problems:
            log.warning("resuming from checkpoint %d instead of the newest", iteration)
        return state
    if problems:
        raise CorruptCheckpointError("no usable checkpoint: " + "; ".join(problems))
    return None


def prune_checkpoints(directory: str | os.PathLike[str], keep: int) -> list[int]:
    """Delete all but the ``keep`` newest checkpoints (and tensor files whose record is
    gone, e.g. left by a crash between the two writes); returns the deleted iterations."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    folder = Path(directory)
    records = list_checkpoints(folder)
    deleted = []
    for iteration, meta_path in records[:-keep]:
        tensor_path, _ = _paths(folder, iteration)
        # Record first: a record without tensors reads as damaged, tensors without a
        # record are invisible; either way never a checkpoint that looks valid but is not.
        meta_path.unlink(missing_ok=True)
        tensor_path.unlink(missing_ok=True)
        deleted.append(iteration)
    kept = {it for it, _ in records[-keep:]}
    newest = max(kept, default=-1)
    for path in folder.glob("iter_*.safetensors"):
        m = re.match(r"^iter_(\d+)\.safetensors$", path.name)
        if m and int(m.group(1)) not in kept and int(m.group(1)) < newest:
            path.unlink(missing_ok=True)
    return deleted
