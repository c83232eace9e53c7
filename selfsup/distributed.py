"""The one module of selfsup that touches ``torch.distributed``.

Everything here is exact and free of collectives when no process group is initialised, so the
same code runs in a single CPU process (tests, notebooks) and under DDP on many nodes.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a process group with more than one process is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


class _GatherWithGrad(torch.autograd.Function):
    """``all_gather`` whose backward hands every rank the gradient of its own slice summed over all ranks.

    Every rank uses the gathered tensor in its own loss, so the gradient reaching rank ``r``'s
    inputs must include the contributions of the losses computed on all other ranks. Returning only
    the local slice of the local gradient (what ``torch.distributed.nn.all_gather`` did before
    PyTorch 2.2, and what several SSL libraries still do) silently drops them.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.rank = dist.get_rank()
        gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, tensor.contiguous())
        return tuple(gathered)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack(grads)
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        return stacked[ctx.rank]


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` ([N, ...], the same N on every rank) from all ranks along dim 0,
    with gradients flowing back to every rank. Returns ``tensor`` itself without a process group."""
    if not is_distributed():
        return tensor
    return torch.cat(_GatherWithGrad.apply(tensor), dim=0)


def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0 (no gradient; for features and labels)."""
    if not is_distributed():
        return tensor
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered, dim=0)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place (a no-op in a single process); returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_object(obj: object) -> list[object]:
    """Every process's ``obj``, in rank order (``[obj]`` without a process group)."""
    if not is_distributed():
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
