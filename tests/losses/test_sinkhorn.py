"""Sinkhorn-Knopp against a naive loop and lightly's ``sinkhorn``; across two gloo processes with
different inputs it equals one process holding the whole batch."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightly.loss.swav_loss import sinkhorn as lightly_sinkhorn

from selfsup.losses.sinkhorn import sinkhorn_knopp

WORLD, B, K, EPS = 2, 5, 7, 0.3


def scores(rank: int) -> torch.Tensor:
    """Rank 0 holds 5 rows, rank 1 holds 3 (iBOT's masked patches differ in number per process)."""
    return torch.randn(
        B - 2 * rank, K, generator=torch.Generator().manual_seed(10 + rank), dtype=torch.float64
    )


def naive(s: torch.Tensor, eps: float, iterations: int) -> torch.Tensor:
    """The algorithm written out entry by entry: Q[k][b] = exp(s[b][k] / eps), normalised."""
    n, k = s.shape
    q = [[float(torch.exp(s[b, j] / eps)) for b in range(n)] for j in range(k)]
    total = sum(map(sum, q))
    q = [[v / total for v in row] for row in q]
    for _ in range(iterations):
        q = [[v / sum(row) / k for v in row] for row in q]
        cols = [sum(q[j][b] for j in range(k)) for b in range(n)]
        q = [[q[j][b] / cols[b] / n for b in range(n)] for j in range(k)]
    return torch.tensor([[q[j][b] * n for j in range(k)] for b in range(n)], dtype=torch.float64)


def test_matches_naive_loop_and_lightly():
    s = scores(0)
    out = sinkhorn_knopp(s, EPS, iterations=3)
    torch.testing.assert_close(out, naive(s, EPS, 3))
    torch.testing.assert_close(out, lightly_sinkhorn(s, iterations=3, epsilon=EPS))
    torch.testing.assert_close(sinkhorn_knopp(s, EPS, iterations=1), naive(s, EPS, 1))


def test_rows_are_assignments_and_prototypes_share_the_mass_evenly():
    s = torch.randn(64, 8, generator=torch.Generator().manual_seed(1)) * 3
    out = sinkhorn_knopp(s, 0.5, iterations=50)
    torch.testing.assert_close(out.sum(dim=1), torch.ones(64))
    # after enough iterations every prototype also carries B / K of the batch
    torch.testing.assert_close(out.sum(dim=0), torch.full((8,), 64 / 8), rtol=1e-4, atol=1e-4)
    # and the assignment is more balanced than a plain softmax of the same scores
    softmax_spread = torch.softmax(s / 0.5, dim=1).sum(dim=0).std()
    assert out.sum(dim=0).std() < softmax_spread / 100


def test_large_logits_stay_finite_and_half_inputs_run_in_float32():
    s = torch.randn(4, 6, generator=torch.Generator().manual_seed(2)) + 10
    out = sinkhorn_knopp(s, 0.1)  # exp(100) overflows float32 without the shift
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.sum(dim=1), torch.ones(4))
    assert sinkhorn_knopp(s.bfloat16(), 0.1).dtype == torch.float32


@pytest.mark.parametrize(
    "call",
    [
        lambda: sinkhorn_knopp(torch.zeros(3), 0.1),
        lambda: sinkhorn_knopp(torch.zeros(2, 3), 0.0),
        lambda: sinkhorn_knopp(torch.zeros(2, 3), 0.1, iterations=0),
    ],
)
def test_bad_arguments_raise(call):
    with pytest.raises(ValueError):
        call()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        torch.save(sinkhorn_knopp(scores(rank), EPS, iterations=3), f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one_process_holding_the_whole_batch(tmp_path):
    mp.start_processes(
        worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, start_method="fork", join=True
    )
    per_rank = torch.cat([torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(WORLD)])
    whole = sinkhorn_knopp(torch.cat([scores(r) for r in range(WORLD)]), EPS, iterations=3)
    torch.testing.assert_close(per_rank, whole)
    # a rank that normalised only over its own samples would differ from the whole-batch result
    local_only = torch.cat([sinkhorn_knopp(scores(r), EPS, iterations=3) for r in range(WORLD)])
    assert not torch.allclose(local_only, whole, atol=1e-4)
