"""Feature distillation loss: a naive loop over feature vectors, with and without the centre; the
centre's EMA in closed form; what centring buys (a direction shared by every teacher feature no
longer counts); and the centre all-reduced across 2 gloo processes holding different (and
differently sized) batches, against one process with the whole batch."""

import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from selfsup.losses import FeatureDistillationLoss

D = 5


def features(n: int, seed: int, offset: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g, dtype=torch.float64) + offset


def naive_loss(kind: str, student, teacher, center) -> float:
    """Vector by vector (and element by element for MSE), by hand."""
    total = 0.0
    for s, t in zip(student.tolist(), teacher.tolist(), strict=True):
        s = [a - c for a, c in zip(s, center, strict=True)]
        t = [a - c for a, c in zip(t, center, strict=True)]
        if kind == "cosine":
            dot = sum(a * b for a, b in zip(s, t, strict=True))
            total += 1 - dot / (math.sqrt(sum(a * a for a in s)) * math.sqrt(sum(b * b for b in t)))
        else:
            total += sum((a - b) ** 2 for a, b in zip(s, t, strict=True)) / D
    return total / len(student)


@pytest.mark.parametrize("kind", ["cosine", "mse"])
@pytest.mark.parametrize("momentum", [None, 0.9])
def test_loss_equals_a_naive_loop_and_the_centre_is_an_ema_of_batch_means(kind, momentum):
    loss_fn = FeatureDistillationLoss(kind, D, momentum).double()
    center = [0.0] * D
    for step in range(3):
        student, teacher = features(6, seed=step), features(6, seed=100 + step, offset=2.0)
        loss_fn.update_center(teacher)
        if momentum is not None:  # closed form: the first batch's mean, then the EMA
            mean = teacher.mean(0).tolist()
            center = (
                mean
                if step == 0
                else [momentum * c + (1 - momentum) * m for c, m in zip(center, mean, strict=True)]
            )
            torch.testing.assert_close(loss_fn.center, torch.tensor(center, dtype=torch.float64))
        loss = loss_fn(student, teacher)
        assert loss.item() == pytest.approx(naive_loss(kind, student, teacher, center), rel=1e-12)


def test_centring_ignores_a_direction_that_every_teacher_feature_shares():
    """The same student and teacher, both shifted by one large common vector (what a contrastive
    teacher's pooled features look like): the uncentred cosine barely sees their differences any
    more, the centred one is unchanged."""
    student, teacher = features(8, seed=1), features(8, seed=2)
    shift = torch.full((D,), 10.0, dtype=torch.float64)
    plain = FeatureDistillationLoss("cosine")
    centred, centred_shifted = (FeatureDistillationLoss("cosine", D, 0.9).double() for _ in range(2))
    centred.update_center(teacher)
    centred_shifted.update_center(teacher + shift)
    assert plain(student + shift, teacher + shift) < 0.1 * plain(student, teacher)
    torch.testing.assert_close(centred_shifted(student + shift, teacher + shift), centred(student, teacher))
    # a student equal to its teacher is still at the minimum
    assert centred(teacher, teacher).abs() < 1e-12


def test_gradient_reaches_the_student_only_and_the_centre_is_saved():
    loss_fn = FeatureDistillationLoss("cosine", D, 0.5).double()
    student, teacher = features(4, seed=0).requires_grad_(), features(4, seed=1).requires_grad_()
    loss_fn.update_center(teacher)
    loss_fn(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0 and teacher.grad is None
    state = loss_fn.state_dict()
    assert set(state) == {"center", "center_ready"} and bool(state["center_ready"])
    fresh = FeatureDistillationLoss("cosine", D, 0.5).double()
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.center, loss_fn.center)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"kind": "l1"}, "kind must be"),
        ({"center_momentum": 0.9}, "needs the feature width"),
        ({"dim": D, "center_momentum": 1.0}, r"\[0, 1\)"),
        ({"dim": D, "center_momentum": True}, r"\[0, 1\)"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FeatureDistillationLoss(**kwargs)


WORLD = 2
ROWS = {0: 3, 1: 5}  # asymmetric: the ranks hold batches of different sizes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_teacher(rank: int, step: int) -> torch.Tensor:
    return features(ROWS[rank], seed=10 * step + rank, offset=float(rank))


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        loss_fn = FeatureDistillationLoss("cosine", D, 0.8).double()
        for step in range(2):
            loss_fn.update_center(_rank_teacher(rank, step))
        torch.save({"center": loss_fn.center}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_centre_across_processes_matches_one_process_with_every_row(tmp_path):
    """Two processes holding batches of 3 and 5 rows: both end with the centre that one process
    gets from the 8 rows together."""
    mp.start_processes(
        _worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, start_method="fork", join=True
    )
    results = [torch.load(tmp_path / f"{r}.pt", weights_only=True)["center"] for r in range(WORLD)]
    one = FeatureDistillationLoss("cosine", D, 0.8).double()
    for step in range(2):
        one.update_center(torch.cat([_rank_teacher(r, step) for r in range(WORLD)]))
    assert not torch.allclose(_rank_teacher(0, 0).mean(0), _rank_teacher(1, 0).mean(0))
    for rank in range(WORLD):
        torch.testing.assert_close(results[rank], one.center)
