"""DINO loss: a naive loop over crop pairs and samples, closed forms, gradients to the student only,
the centre's EMA, and the centre all-reduced across 2 gloo processes holding different inputs."""

import math
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from selfsup.losses.dino import DINOLoss, teacher_temperature

B, K = 3, 7


def crops(n_crops: int, seed: int = 0, batch: int = B) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(n_crops * batch, K, generator=g, dtype=torch.float64) * 3
    teacher = torch.randn(2 * batch, K, generator=g, dtype=torch.float64) * 3
    return student, teacher


def naive_loss(student, teacher, center, tau_s, tau_t, batch=B):
    """Every (teacher global crop i, student crop v != i), every sample, every prototype, by hand."""
    n_crops = len(student) // batch
    total, pairs = 0.0, 0
    for i in range(2):
        for v in range(n_crops):
            if v == i:
                continue
            pair = 0.0
            for b in range(batch):
                t = [(teacher[i * batch + b][k] - center[0][k]) / tau_t for k in range(K)]
                s = [student[v * batch + b][k] / tau_s for k in range(K)]
                t_norm = sum(math.exp(x) for x in t)
                s_log_norm = math.log(sum(math.exp(x) for x in s))
                pair += sum(-(math.exp(t[k]) / t_norm) * (s[k] - s_log_norm) for k in range(K))
            total += pair / batch
            pairs += 1
    return total / pairs


@pytest.mark.parametrize("n_local", [0, 1, 4])
@pytest.mark.parametrize("as_list", [False, True])
def test_loss_equals_naive_loop_over_crop_pairs(n_local, as_list):
    student, teacher = crops(2 + n_local, seed=n_local)
    loss_fn = DINOLoss(K, student_temperature=0.1).double()
    loss_fn.center.copy_(torch.linspace(-1, 1, K)[None])  # a non-zero centre is subtracted
    out = loss_fn(list(student.split(B)) if as_list else student, teacher, 0.05)
    expected = naive_loss(student.tolist(), teacher.tolist(), loss_fn.center.tolist(), 0.1, 0.05)
    assert out.ndim == 0
    assert out.item() == pytest.approx(expected, rel=1e-6)


def test_tensor_temperature_equals_float():
    student, teacher = crops(6)
    loss_fn = DINOLoss(K)
    torch.testing.assert_close(loss_fn(student, teacher, torch.tensor(0.04)), loss_fn(student, teacher, 0.04))


def test_uniform_student_gives_log_k():
    # -sum_k p_k log(1/K) = log K for any teacher distribution p
    _, teacher = crops(4)
    student = torch.zeros(4 * B, K)
    assert DINOLoss(K)(student, teacher.float(), 0.04).item() == pytest.approx(math.log(K), rel=1e-6)


def test_gradient_reaches_the_student_only_and_forward_leaves_the_centre():
    student, teacher = crops(6)
    student.requires_grad_()
    teacher.requires_grad_()
    loss_fn = DINOLoss(K).double()
    loss_fn(student, teacher, 0.04).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum(dim=1).gt(0).all()  # every row
    assert torch.equal(loss_fn.center, torch.zeros(1, K, dtype=torch.float64))


def test_update_center_is_an_ema_of_the_batch_mean():
    loss_fn = DINOLoss(K, center_momentum=0.9)
    _, t1 = crops(2, seed=1)
    _, t2 = crops(2, seed=2)
    loss_fn.update_center(t1.float())
    loss_fn.update_center(t2.float())
    expected = 0.9 * (0.1 * t1.mean(0)) + 0.1 * t2.mean(0)
    torch.testing.assert_close(loss_fn.center[0], expected.float())


def test_center_is_saved_in_the_state_dict():
    loss_fn = DINOLoss(K)
    loss_fn.update_center(crops(2)[1].float())
    restored = DINOLoss(K)
    restored.load_state_dict(loss_fn.state_dict())
    assert "center" in loss_fn.state_dict()
    assert torch.equal(restored.center, loss_fn.center)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"out_dim": 0}, "out_dim"),
        ({"out_dim": K, "student_temperature": 0.0}, "student_temperature"),
        ({"out_dim": K, "center_momentum": 1.0}, "center_momentum"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DINOLoss(**kwargs)


def test_bad_inputs():
    loss_fn = DINOLoss(K)
    student, teacher = crops(4)
    with pytest.raises(ValueError, match="2 global crops"):
        loss_fn(student, teacher[:-1], 0.04)
    with pytest.raises(ValueError, match="out_dim=7"):
        loss_fn(student[:, :5], teacher[:, :5], 0.04)
    with pytest.raises(ValueError, match="at least the 2 global crops"):
        loss_fn(student[:B], teacher, 0.04)
    with pytest.raises(ValueError, match="n_crops"):
        loss_fn(student[:-1], teacher, 0.04)
    with pytest.raises(ValueError, match="teacher_temperature"):
        loss_fn(student, teacher, 0.0)


@pytest.mark.parametrize("warmup", [30, 10, 1, 0])
def test_teacher_temperature_equals_the_reference_array(warmup):
    epochs = 100
    reference = np.concatenate((np.linspace(0.04, 0.07, warmup), np.ones(epochs - warmup) * 0.07))
    for epoch in (0, 1, 5, 9, 15, 29, 30, 31, 99):
        value = teacher_temperature(epoch, warmup_epochs=warmup)
        assert value == pytest.approx(reference[epoch], abs=1e-12)
    assert teacher_temperature(500, warmup_epochs=warmup) == 0.07  # past the run: the final value


def test_teacher_temperature_closed_form_points():
    assert teacher_temperature(0) == 0.04
    assert teacher_temperature(29) == pytest.approx(0.07)
    assert teacher_temperature(10, warmup_epochs=21) == pytest.approx(0.055)
    with pytest.raises(ValueError, match="epoch"):
        teacher_temperature(-1)


# --- two processes ---------------------------------------------------------------------------------

WORLD, N_CROPS = 2, 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_inputs(rank: int, step: int):
    return crops(N_CROPS, seed=10 * step + rank)


def _steps(loss_fn, inputs):
    """Two training steps: loss, then the centre update; the second loss uses the updated centre."""
    losses, grads = [], []
    for student, teacher in inputs:
        student = student.clone().requires_grad_()
        loss = loss_fn(student, teacher, 0.04)
        loss.backward()
        loss_fn.update_center(teacher)
        losses.append(loss.detach())
        grads.append(student.grad)
    return losses, grads


def _initial_loss():
    loss_fn = DINOLoss(K).double()
    loss_fn.center.fill_(0.5)
    return loss_fn


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        loss_fn = _initial_loss()
        losses, grads = _steps(loss_fn, [_rank_inputs(rank, step) for step in range(2)])
        torch.save({"losses": losses, "grads": grads, "center": loss_fn.center}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def _concat_crops(parts):
    """Per-rank [n * B, K] crop-major tensors → one [n * WORLD * B, K], crop-major over the global batch."""
    return torch.cat([torch.cat([p[c * B : (c + 1) * B] for p in parts]) for c in range(len(parts[0]) // B)])


def test_centre_across_processes_matches_one_process_with_the_whole_batch(tmp_path):
    mp.start_processes(
        _worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, start_method="fork", join=True
    )
    results = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(WORLD)]

    loss_fn = _initial_loss()
    steps = []
    for step in range(2):
        pairs = [_rank_inputs(r, step) for r in range(WORLD)]
        steps.append((_concat_crops([p[0] for p in pairs]), _concat_crops([p[1] for p in pairs])))
    losses, grads = _steps(loss_fn, steps)

    for r in range(WORLD):
        torch.testing.assert_close(results[r]["center"], loss_fn.center)
    assert not torch.allclose(results[0]["losses"][1], results[1]["losses"][1])  # different inputs per rank
    for step in range(2):
        # equal local batches: the global loss is the mean of the ranks' losses (what DDP optimises)
        torch.testing.assert_close(sum(r["losses"][step] for r in results) / WORLD, losses[step])
        for r in range(WORLD):
            rows = torch.cat(
                [torch.arange(c * WORLD * B + r * B, c * WORLD * B + (r + 1) * B) for c in range(N_CROPS)]
            )
            torch.testing.assert_close(results[r]["grads"][step] / WORLD, grads[step][rows])
