"""Two gloo processes against one: the check of every loss that gathers or all-reduces across
processes (VICReg, Barlow Twins, SwAV's Sinkhorn...): each of ``WORLD`` processes computes the
loss on its own inputs and backward; one process holding every rank's inputs must agree."""

from __future__ import annotations

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str, make_loss, make_inputs) -> None:
    torch.set_num_threads(1)  # a forked child must not enter the parent's OpenMP pool (it hangs)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        tensors = [t.requires_grad_() for t in make_inputs(100 + rank)]
        loss = make_loss()(*tensors)
        loss.backward()
        torch.save({"loss": loss.detach(), "grads": [t.grad for t in tensors]}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def two_processes(tmp_path, make_loss, make_inputs) -> list[dict]:
    """Each of 2 gloo processes computes ``make_loss()(*make_inputs(100 + rank))`` and backward."""
    mp.start_processes(_worker, args=(free_port(), str(tmp_path), make_loss, make_inputs), nprocs=WORLD,
                       start_method="fork", join=True)  # fmt: skip
    return [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(WORLD)]


def one_process(make_loss, make_inputs) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The loss and gradients of one process holding every rank's inputs, concatenated in rank order."""
    parts = [make_inputs(100 + r) for r in range(WORLD)]
    tensors = [torch.cat([p[i] for p in parts]).requires_grad_() for i in range(len(parts[0]))]
    loss = make_loss()(*tensors)
    loss.backward()
    return loss.detach(), [t.grad for t in tensors]
