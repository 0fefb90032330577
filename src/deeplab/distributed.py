"""One or many processes with PyTorch's own engine (``torchrun``), for training and evaluation.

``torchrun --nproc_per_node N -m deeplab train ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables set; :func:`setup` reads them and
joins the process group: NCCL when the processes drive GPUs, gloo on CPUs. Without those
variables everything runs in one process and the collectives below are no-ops.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

__all__ = ["DistContext", "resolve_device", "setup", "shard"]

log = logging.getLogger(__name__)


def resolve_device(spec: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``/None: this process's GPU if there is one, else the CPU; ``"cuda"`` without
    an index means the local rank's GPU."""
    if isinstance(spec, torch.device):
        return spec
    text = "auto" if spec is None else str(spec)
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(text)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


@dataclass
class DistContext:
    """Rank, world size and device of this process, with the collectives the package uses."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # whether setup() created the process group (close() ends it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def _comm_device(self) -> torch.device:
        # NCCL only moves CUDA tensors; gloo only CPU ones.
        if self.distributed and dist.get_backend() == "nccl":
            return self.device
        return torch.device("cpu")

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum of ``tensor`` over all processes (a new tensor on the input's device)."""
        if not self.distributed:
            return tensor.clone()
        t = tensor.detach().to(self._comm_device()).clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.to(tensor.device)

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every process's ``tensor`` (same shape and dtype everywhere), in rank order."""
        if not self.distributed:
            return [tensor.clone()]
        t = tensor.detach().to(self._comm_device()).contiguous()
        out = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(out, t)
        return [o.to(tensor.device) for o in out]

    def barrier(self) -> None:
        if self.distributed:
            if dist.get_backend() == "nccl":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def close(self) -> None:
        """Leave the process group if :func:`setup` joined it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def setup(device: str | torch.device | None = "auto") -> DistContext:
    """Join the ``torchrun`` process group if the environment describes one.

    Each process gets GPU ``LOCAL_RANK`` when CUDA is used.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world <= 1:
        return DistContext(device=dev)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if backend == "nccl":
            dist.init_process_group(backend=backend, device_id=dev)
        else:
            dist.init_process_group(backend=backend)
        owns = True
        log.info("rank %d/%d joined the %s process group on %s", rank, world, backend, dev)
    return DistContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        device=dev,
        owns_group=owns,
    )


def shard(num_items: int, rank: int, world_size: int) -> range:
    """The item indices process ``rank`` handles: ``rank, rank + world_size, ...``.

    Interleaved (not contiguous) so that images of similar size, often neighbours in a
    list, spread over the processes.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    return range(rank, num_items, world_size)
