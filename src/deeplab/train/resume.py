"""What a checkpoint carries of the live run besides the weights, and putting it back.

Each process's torch RNG states (so dropout draws continue exactly) and the SGD momentum
buffers by parameter name (paper section 5: momentum 0.9), in the form
:class:`deeplab.train.checkpoint.TrainState` stores them.
"""

from __future__ import annotations

import logging

import torch

from deeplab.distributed import DistContext
from deeplab.train.checkpoint import TrainState

__all__ = ["momentum_buffers", "restore_momentum", "restore_rng", "rng_states"]

log = logging.getLogger(__name__)


def rng_states(ctx: DistContext) -> dict[str, torch.Tensor]:
    """Every process's torch RNG states, ``torch_cpu/<rank>`` (and ``torch_cuda/<rank>``).

    A collective: every process must call it.
    """
    states = {f"torch_cpu/{r}": s for r, s in enumerate(ctx.all_gather(torch.get_rng_state()))}
    if ctx.device.type == "cuda":
        cuda = torch.cuda.get_rng_state(ctx.device)
        states.update({f"torch_cuda/{r}": s for r, s in enumerate(ctx.all_gather(cuda))})
    return states


def restore_rng(state: TrainState, ctx: DistContext) -> None:
    """Put back this process's RNG states, unless the checkpoint had another world size."""
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


def _named_parameters(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's parameters by the names its groups carry (``recipe.param_groups``)."""
    return {
        name: p
        for group in optimizer.param_groups
        for name, p in zip(group["names"], group["params"], strict=True)
    }


def momentum_buffers(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """SGD momentum buffers by parameter name (parameters without one yet are left out)."""
    out = {}
    for name, p in _named_parameters(optimizer).items():
        buf = optimizer.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            out[name] = buf
    return out


def restore_momentum(optimizer: torch.optim.Optimizer, buffers: dict[str, torch.Tensor]) -> None:
    """Load :func:`momentum_buffers` output back; a name or shape this run lacks is an error."""
    params = _named_parameters(optimizer)
    unknown = sorted(set(buffers) - set(params))
    if unknown:
        raise ValueError(
            f"checkpoint has momentum for parameters this model does not train: {unknown[:5]}"
        )
    for name, buf in buffers.items():
        p = params[name]
        if buf.shape != p.shape:
            raise ValueError(f"momentum {name}: shape {tuple(buf.shape)} != {tuple(p.shape)}")
        optimizer.state[p]["momentum_buffer"] = buf.to(p.device, p.dtype).clone()
