"""MoCo v3 loss: a naive loop, the 2 tau factor in closed form, symmetry, no gradient to the keys, and
2 gloo processes with different inputs against one process holding the concatenated batch."""

import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from selfsup.losses.moco import MoCoV3Loss

N, D, T = 4, 6, 0.2


def inputs(seed: int, n: int = N) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, D, generator=g, dtype=torch.float64) for _ in range(4)]  # q1, q2, k1, k2


def naive_ctr(q, k, tau):
    """2 tau * mean_i -log(exp(<q_i, k_i> / tau) / sum_j exp(<q_i, k_j> / tau)), unit vectors."""
    unit = [[x / math.sqrt(sum(y * y for y in row)) for x in row] for row in q]
    keys = [[x / math.sqrt(sum(y * y for y in row)) for x in row] for row in k]
    total = 0.0
    for i, qi in enumerate(unit):
        logits = [sum(a * b for a, b in zip(qi, kj, strict=True)) / tau for kj in keys]
        total += -(logits[i] - math.log(sum(math.exp(x) for x in logits)))
    return 2 * tau * total / len(unit)


@pytest.mark.parametrize("tau", [0.2, 1.0])
def test_loss_equals_naive_loop(tau):
    q1, q2, k1, k2 = inputs(0)
    loss = MoCoV3Loss(tau)(q1, q2, k1, k2)
    expected = naive_ctr(q1.tolist(), k2.tolist(), tau) + naive_ctr(q2.tolist(), k1.tolist(), tau)
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_collapsed_embeddings_give_2tau_log_n_per_direction():
    # every logit equal: each cross-entropy is log N, times 2 tau, for both directions
    same = torch.ones(N, D)
    for tau in (0.1, 0.2, 1.0):
        assert MoCoV3Loss(tau)(same, same, same, same).item() == pytest.approx(
            2 * 2 * tau * math.log(N), rel=1e-6
        )


def test_symmetric_in_the_two_views_and_invariant_to_scale():
    q1, q2, k1, k2 = inputs(1)
    loss = MoCoV3Loss(T)
    torch.testing.assert_close(loss(q1, q2, k1, k2), loss(q2, q1, k2, k1))
    torch.testing.assert_close(loss(q1, q2, k1, k2), loss(3 * q1, q2, k1, 0.5 * k2))


def test_gradient_reaches_the_queries_only():
    q1, q2, k1, k2 = (t.requires_grad_() for t in inputs(2))
    MoCoV3Loss(T)(q1, q2, k1, k2).backward()
    assert k1.grad is None and k2.grad is None
    assert q1.grad.abs().sum(dim=1).gt(0).all() and q2.grad.abs().sum(dim=1).gt(0).all()


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="temperature"):
        MoCoV3Loss(0.0)
    q1, q2, k1, k2 = inputs(3)
    with pytest.raises(ValueError, match="same shape"):
        MoCoV3Loss(T)(q1, q2, k1, k2[:, :3])
    with pytest.raises(ValueError, match="at least 2 images"):
        MoCoV3Loss(T)(q1[:1], q2[:1], k1[:1], k2[:1])


WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        q1, q2, k1, k2 = inputs(100 + rank)
        q1.requires_grad_(), q2.requires_grad_()
        loss_fn = MoCoV3Loss(T)
        loss = loss_fn(q1, q2, k1, k2)
        loss.backward()
        result = {
            "loss": loss.detach(),
            "g1": q1.grad,
            "g2": q2.grad,
            "negatives": loss_fn.negatives_per_sample(N),
        }
        torch.save(result, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one_process_with_the_concatenated_batch(tmp_path):
    mp.start_processes(
        _worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, start_method="fork", join=True
    )
    results = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(WORLD)]
    parts = [inputs(100 + r) for r in range(WORLD)]
    q1, q2, k1, k2 = (torch.cat([p[i] for p in parts]) for i in range(4))
    q1.requires_grad_(), q2.requires_grad_()
    loss = MoCoV3Loss(T)(q1, q2, k1, k2)
    loss.backward()
    assert not torch.allclose(results[0]["loss"], results[1]["loss"])
    # each rank's loss is the mean over its queries against the global keys; DDP averages the ranks
    torch.testing.assert_close(sum(r["loss"] for r in results) / WORLD, loss.detach())
    for r, result in enumerate(results):
        rows = slice(r * N, (r + 1) * N)
        torch.testing.assert_close(result["g1"] / WORLD, q1.grad[rows])
        torch.testing.assert_close(result["g2"] / WORLD, q2.grad[rows])
        assert result["negatives"] == WORLD * N - 1
