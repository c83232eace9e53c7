"""SigLIPLoss against open_clip's SigLipLoss and a naive loop, in one process and in 2 gloo processes
with different inputs per rank against one process holding the whole batch."""

import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from open_clip.loss import SigLipLoss

from selfsup.losses.siglip import SigLIPLoss

WORLD, N, D = 2, 3, 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pairs(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(20 + rank)
    return torch.randn(N, D, generator=g, dtype=torch.float64), torch.randn(
        N, D, generator=g, dtype=torch.float64
    )


def naive(image, text, scale, bias):
    image, text = F.normalize(image, dim=1), F.normalize(text, dim=1)
    total = 0.0
    for i in range(len(image)):
        for j in range(len(text)):
            label = 1.0 if i == j else -1.0
            total = total - F.logsigmoid(label * (scale * image[i] @ text[j] + bias))
    return total / len(image)


def test_equals_open_clip_and_a_naive_loop_in_value_and_gradient():
    image, text = (t.requires_grad_() for t in pairs(0))
    loss_fn = SigLIPLoss(logit_scale_init=7.0, logit_bias_init=-3.0).double()
    ours = loss_fn(image, text)
    params = [loss_fn.logit_scale, loss_fn.logit_bias]
    ours_grads = torch.autograd.grad(ours, [image, text, *params])
    scale, bias = (p.detach().clone().requires_grad_() for p in params)
    for reference in (
        SigLipLoss()(F.normalize(image, dim=1), F.normalize(text, dim=1), scale.exp(), bias),
        naive(image, text, scale.exp(), bias),
    ):
        torch.testing.assert_close(ours, reference)
        for a, b in zip(ours_grads, torch.autograd.grad(reference, [image, text, scale, bias]), strict=True):
            torch.testing.assert_close(a, b)


def test_paper_initialisation_and_clear_errors():
    loss_fn = SigLIPLoss()
    assert loss_fn.logit_scale.item() == pytest.approx(math.log(10)) and loss_fn.logit_bias.item() == -10
    with pytest.raises(ValueError, match="logit_scale_init"):
        SigLIPLoss(logit_scale_init=0.0)
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(torch.randn(3, 4), torch.randn(3, 5))


def worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)  # an OpenMP pool inherited through fork (pytest -n 0 runs 2 threads) hangs
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        image, text = (t.requires_grad_() for t in pairs(rank))
        loss_fn = SigLIPLoss(logit_scale_init=7.0, logit_bias_init=-3.0).double()
        params = [loss_fn.logit_scale, loss_fn.logit_bias]
        loss = loss_fn(image, text)
        grads = torch.autograd.grad(loss, [image, text, *params])
        oracle = SigLipLoss(rank=rank, world_size=WORLD, dist_impl="bidir")
        scale, bias = (p.detach() for p in params)
        reference = oracle(F.normalize(image, dim=1), F.normalize(text, dim=1), scale.exp(), bias)
        ref_grads = torch.autograd.grad(reference, [image, text])
        torch.save(
            {"loss": loss.detach(), "grads": grads, "oracle": reference.detach(), "oracle_grads": ref_grads},
            f"{out}/{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("siglip_dist")
    mp.start_processes(worker, args=(free_port(), str(out)), nprocs=WORLD, start_method="fork", join=True)
    return [torch.load(out / f"{r}.pt", weights_only=True) for r in range(WORLD)]


def test_two_processes_equal_one_process_holding_the_whole_batch(two_processes):
    image = torch.cat([pairs(r)[0] for r in range(WORLD)]).requires_grad_()
    text = torch.cat([pairs(r)[1] for r in range(WORLD)]).requires_grad_()
    loss_fn = SigLIPLoss(logit_scale_init=7.0, logit_bias_init=-3.0).double()
    params = [loss_fn.logit_scale, loss_fn.logit_bias]
    loss = loss_fn(image, text)
    g_image, g_text, g_scale, g_bias = torch.autograd.grad(loss, [image, text, *params])
    assert not torch.allclose(two_processes[0]["loss"], two_processes[1]["loss"])
    torch.testing.assert_close(sum(r["loss"] for r in two_processes) / WORLD, loss)
    torch.testing.assert_close(sum(r["grads"][2] for r in two_processes) / WORLD, g_scale)
    torch.testing.assert_close(sum(r["grads"][3] for r in two_processes) / WORLD, g_bias)
    for r, result in enumerate(two_processes):
        rows = slice(r * N, (r + 1) * N)
        torch.testing.assert_close(result["grads"][0] / WORLD, g_image[rows])
        torch.testing.assert_close(result["grads"][1] / WORLD, g_text[rows])
        torch.testing.assert_close(result["loss"], result["oracle"])
        for a, b in zip(result["grads"][:2], result["oracle_grads"], strict=True):
            torch.testing.assert_close(a, b)
