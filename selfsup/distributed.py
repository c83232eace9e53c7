"""The one module of selfsup that touches ``torch.distributed``.

Everything here is exact and free of collectives when no process group is initialised, so the
same code runs in a single CPU process (tests, notebooks) and under DDP on many nodes.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    """True when a process group with more than one process is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


class _GatherWithGrad(torch.autograd.Function):
    """``all_gather`` into one tensor, whose backward hands every rank the gradient of its own slice
    summed over all ranks, with one ``reduce_scatter``.

    Every rank uses the gathered tensor in its own loss, so the gradient reaching rank ``r``'s
    inputs must include the contributions of the losses computed on all other ranks. Returning only
    the local slice of the local gradient (what ``torch.distributed.nn.all_gather`` did before
    PyTorch 2.2, and what several SSL libraries still do) silently drops them. A reduce-scatter
    moves half the bytes of the all-reduce of the whole ``[world * n, ...]`` gradient followed by a
    slice, and it is one collective for everything gathered in one call.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.contiguous()
        out = tensor.new_empty((dist.get_world_size() * tensor.shape[0], *tensor.shape[1:]))
        dist.all_gather_into_tensor(out, tensor)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        out = grad.new_empty((grad.shape[0] // dist.get_world_size(), *grad.shape[1:]))
        dist.reduce_scatter_tensor(out, grad, op=dist.ReduceOp.SUM)
        return out


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` ([N, ...], the same N on every rank) from all ranks along dim 0, in
    rank order, with gradients flowing back to every rank. Returns ``tensor`` itself without a
    process group. Gather several tensors in one call by concatenating them first."""
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)


def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0 (no gradient; for features and labels)."""
    if not is_distributed():
        return tensor
    tensor = tensor.contiguous()
    out = tensor.new_empty((dist.get_world_size() * tensor.shape[0], *tensor.shape[1:]))
    dist.all_gather_into_tensor(out, tensor)
    return out


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place (a no-op in a single process); returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def mean_rows(rows: torch.Tensor) -> torch.Tensor:
    """The mean of ``rows`` ``[N, D]`` over the rows of every process, ``[D]``: the sum and the row
    count travel in one all-reduce, so it is exact also where the processes hold different numbers
    of rows (a last, shorter batch). No host sync."""
    total = all_reduce_sum(torch.cat([rows.sum(dim=0), rows.new_full((1,), rows.shape[0])]))
    return total[:-1] / total[-1]


def gathering_forward(wrapped: nn.Module) -> nn.Module | None:
    """``wrapped`` (a training strategy's model) when it is an FSDP wrapper, whose forward gathers the
    sharded parameters on every process; None otherwise (the module's own forward will do)."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    return wrapped if isinstance(wrapped, FullyShardedDataParallel) else None


def gather_object(obj: object) -> list[object]:
    """Every process's ``obj``, in rank order (``[obj]`` without a process group)."""
    if not is_distributed():
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
