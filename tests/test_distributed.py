"""InfoNCE across processes equals a single process holding the concatenated batch.

Two CPU processes (gloo) hold *different* inputs; a symmetric test would pass a backward that
returns only the local slice of the local gradient.
"""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from selfsup import distributed
from selfsup.losses import InfoNCELoss

WORLD, N, D, T = 2, 3, 5, 0.2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def inputs(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + rank)
    return torch.randn(N, D, generator=g, dtype=torch.float64), torch.randn(
        N, D, generator=g, dtype=torch.float64
    )


def worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        z1, z2 = (t.requires_grad_() for t in inputs(rank))
        loss = InfoNCELoss(T)(z1, z2)
        loss.backward()
        negatives = InfoNCELoss(T).negatives_per_sample(N)
        torch.save(
            {
                "loss": loss.detach(),
                "g1": z1.grad,
                "g2": z2.grad,
                "negatives": negatives,
                "world": distributed.world_size(),
                "rank": distributed.rank(),
            },
            f"{out}/{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    mp.start_processes(worker, args=(free_port(), str(out)), nprocs=WORLD, start_method="fork", join=True)
    return [torch.load(out / f"{r}.pt", weights_only=True) for r in range(WORLD)]


def single_process_reference():
    pairs = [inputs(r) for r in range(WORLD)]
    z1 = torch.cat([p[0] for p in pairs]).requires_grad_()
    z2 = torch.cat([p[1] for p in pairs]).requires_grad_()
    loss = InfoNCELoss(T)(z1, z2)
    loss.backward()
    return loss.detach(), z1.grad, z2.grad


def test_loss_and_gradients_match_single_process(two_process_results):
    loss, g1, g2 = single_process_reference()
    # each rank's loss is the mean over its own anchors; DDP averages over ranks
    mean_loss = sum(r["loss"] for r in two_process_results) / WORLD
    torch.testing.assert_close(mean_loss, loss)
    for r, result in enumerate(two_process_results):
        rows = slice(r * N, (r + 1) * N)
        # every rank's gradient carries the contributions of all ranks' losses; DDP divides by WORLD
        torch.testing.assert_close(result["g1"] / WORLD, g1[rows])
        torch.testing.assert_close(result["g2"] / WORLD, g2[rows])


def test_ranks_losses_differ_and_negatives_are_global(two_process_results):
    assert not torch.allclose(two_process_results[0]["loss"], two_process_results[1]["loss"])
    assert [r["rank"] for r in two_process_results] == [0, 1]
    assert all(r["world"] == WORLD and r["negatives"] == 2 * N * WORLD - 2 for r in two_process_results)


def test_single_process_helpers_are_exact_without_a_process_group():
    x = torch.randn(3, 2, requires_grad=True)
    assert distributed.gather(x) is x
    assert distributed.world_size() == 1 and distributed.rank() == 0
    assert torch.equal(distributed.all_reduce_sum(torch.ones(2)), torch.ones(2))
