"""Gram anchoring: a naive loop over patch pairs, a transcription of dinov3's ``GramLoss`` (value and
gradient, per image and over the batch, with and without negative similarities)."""

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses.gram import GramLoss

B, N, D = 2, 3, 4


def features(seed: int) -> torch.Tensor:
    return torch.randn(B, N, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def naive(student, teacher, image_level: bool) -> float:
    def unit(v):
        norm = math.sqrt(sum(x * x for x in v))
        return [x / norm for x in v]

    s = [[unit(p) for p in img] for img in student.tolist()]
    t = [[unit(p) for p in img] for img in teacher.tolist()]
    groups = [list(zip(s[b], t[b], strict=True)) for b in range(B)]
    if not image_level:
        groups = [[pair for group in groups for pair in group]]
    total, count = 0.0, 0
    for group in groups:
        for si, ti in group:
            for sj, tj in group:
                gs = sum(a * b for a, b in zip(si, sj, strict=True))
                gt = sum(a * b for a, b in zip(ti, tj, strict=True))
                total += (gs - gt) ** 2
                count += 1
    return total / count


def dinov3_transcription(student, teacher, image_level: bool, remove_neg: bool):
    """dinov3 ``GramLoss.forward`` (apply_norm=True) restated."""
    t = F.normalize(teacher.float(), dim=-1)
    s = F.normalize(student.float(), dim=-1)
    if not image_level:
        t, s = t.flatten(0, 1), s.flatten(0, 1)
    t_sim, s_sim = t @ t.transpose(-1, -2), s @ s.transpose(-1, -2)
    if remove_neg:
        t_sim = torch.where(t_sim < 0, torch.zeros_like(t_sim), t_sim)
        s_sim = torch.where(s_sim < 0, torch.zeros_like(s_sim), s_sim)
    return torch.nn.MSELoss()(s_sim, t_sim)


@pytest.mark.parametrize("image_level", [True, False])
@pytest.mark.parametrize("remove_negative", [False, True])
def test_loss_equals_naive_loop_and_dinov3_in_value_and_gradient(image_level, remove_negative):
    student, teacher = features(0), features(1)
    mine, ref = student.clone().requires_grad_(), student.clone().requires_grad_()
    out = GramLoss(image_level, remove_negative=remove_negative)(mine, teacher)
    expected = dinov3_transcription(ref, teacher, image_level, remove_negative)
    torch.testing.assert_close(out, expected)
    if not remove_negative:
        assert out.item() == pytest.approx(naive(student, teacher, image_level), rel=1e-5)
    out.backward()
    expected.backward()
    torch.testing.assert_close(mine.grad, ref.grad)


def test_zero_for_the_same_similarities_and_no_gradient_to_the_teacher():
    student = features(2)
    teacher = (2 * student).requires_grad_()  # the same directions: the same cosines
    loss = GramLoss()(student.clone().requires_grad_(), teacher)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert teacher.grad is None
    with pytest.raises(ValueError, match="B, N, D"):
        GramLoss()(student, student[0])
