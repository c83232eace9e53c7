"""CLIPLoss against open_clip's ClipLoss and a naive loop, in one process and in 2 gloo processes with
different inputs per rank against one process holding the whole batch."""

import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from open_clip import ClipLoss

from selfsup.losses.clip import CLIPLoss

WORLD, N, D = 2, 3, 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pairs(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(10 + rank)
    return torch.randn(N, D, generator=g, dtype=torch.float64), torch.randn(
        N, D, generator=g, dtype=torch.float64
    )


def naive(image: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    image, text = F.normalize(image, dim=1), F.normalize(text, dim=1)
    total = 0.0
    n = len(image)
    for i in range(n):
        sims_i = [scale * (image[i] @ text[j]) for j in range(n)]
        sims_t = [scale * (text[i] @ image[j]) for j in range(n)]
        total = total - (sims_i[i] - torch.logsumexp(torch.stack(sims_i), 0))
        total = total - (sims_t[i] - torch.logsumexp(torch.stack(sims_t), 0))
    return total / (2 * n)


def test_equals_open_clip_and_a_naive_loop_in_value_and_gradient():
    image, text = (t.requires_grad_() for t in pairs(0))
    loss_fn = CLIPLoss().double()
    assert loss_fn.scale().item() == pytest.approx(1 / 0.07)
    ours = loss_fn(image, text)
    ours_grads = torch.autograd.grad(ours, [image, text, loss_fn.logit_scale])
    scale = loss_fn.logit_scale.detach().clone().requires_grad_()
    for reference in (
        ClipLoss()(F.normalize(image, dim=1), F.normalize(text, dim=1), scale.exp()),
        naive(image, text, scale.exp()),
    ):
        torch.testing.assert_close(ours, reference)
        for a, b in zip(ours_grads, torch.autograd.grad(reference, [image, text, scale]), strict=True):
            torch.testing.assert_close(a, b)


def test_scale_is_clamped_and_bad_arguments_are_refused():
    loss_fn = CLIPLoss(logit_scale_init=50.0, max_logit_scale=100.0)
    with torch.no_grad():
        loss_fn.logit_scale.fill_(math.log(1000.0))
    assert loss_fn.scale().item() == pytest.approx(100.0)
    image, text = (t.float() for t in pairs(0))
    torch.testing.assert_close(loss_fn(image, text), ClipLoss()(F.normalize(image), F.normalize(text), 100.0))
    with pytest.raises(ValueError, match="exceeds max_logit_scale"):
        CLIPLoss(logit_scale_init=200.0)
    with pytest.raises(ValueError, match="same shape"):
        CLIPLoss()(torch.randn(3, 4), torch.randn(2, 4))


def worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)  # an OpenMP pool inherited through fork (pytest -n 0 runs 2 threads) hangs
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        image, text = (t.requires_grad_() for t in pairs(rank))
        loss_fn = CLIPLoss().double()
        loss = loss_fn(image, text)
        grads = torch.autograd.grad(loss, [image, text, loss_fn.logit_scale])
        oracle = ClipLoss(local_loss=True, gather_with_grad=True, rank=rank, world_size=WORLD)
        scale = loss_fn.logit_scale.detach().exp()
        reference = oracle(F.normalize(image, dim=1), F.normalize(text, dim=1), scale)
        ref_grads = torch.autograd.grad(reference, [image, text])
        torch.save(
            {"loss": loss.detach(), "grads": grads, "oracle": reference.detach(), "oracle_grads": ref_grads},
            f"{out}/{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("clip_dist")
    mp.start_processes(worker, args=(free_port(), str(out)), nprocs=WORLD, start_method="fork", join=True)
    return [torch.load(out / f"{r}.pt", weights_only=True) for r in range(WORLD)]


def test_two_processes_equal_one_process_holding_the_whole_batch(two_processes):
    image = torch.cat([pairs(r)[0] for r in range(WORLD)]).requires_grad_()
    text = torch.cat([pairs(r)[1] for r in range(WORLD)]).requires_grad_()
    loss_fn = CLIPLoss().double()
    loss = loss_fn(image, text)
    g_image, g_text, g_scale = torch.autograd.grad(loss, [image, text, loss_fn.logit_scale])
    assert not torch.allclose(two_processes[0]["loss"], two_processes[1]["loss"])
    torch.testing.assert_close(sum(r["loss"] for r in two_processes) / WORLD, loss)
    # DDP averages the parameters' gradients over the processes
    torch.testing.assert_close(sum(r["grads"][2] for r in two_processes) / WORLD, g_scale)
    for r, result in enumerate(two_processes):
        rows = slice(r * N, (r + 1) * N)
        torch.testing.assert_close(result["grads"][0] / WORLD, g_image[rows])
        torch.testing.assert_close(result["grads"][1] / WORLD, g_text[rows])
        # and open_clip's distributed ClipLoss agrees on every rank
        torch.testing.assert_close(result["loss"], result["oracle"])
        for a, b in zip(result["grads"][:2], result["oracle_grads"], strict=True):
            torch.testing.assert_close(a, b)
