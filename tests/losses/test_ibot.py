"""iBOT patch loss: a naive loop over images and patches, lightly's ``IBOTPatchLoss`` (value and
gradient), each image weighted equally, the centre's EMA over masked patches, and the Sinkhorn
teacher."""

import math

import pytest
import torch
from lightly.loss.ibot_loss import IBOTPatchLoss as LightlyIBOTPatchLoss

from selfsup.losses.ibot import IBOTPatchLoss, patch_weights

N, H, W, K = 4, 2, 3, 5  # 4 images of 2 x 3 patches, 5 prototypes


def fixed_inputs():
    masks = torch.zeros(N, H * W, dtype=torch.bool)
    masks[0, [0, 1, 4]] = True  # 3 masked patches
    masks[1, 5] = True  # 1
    masks[3, [2, 3]] = True  # 2; image 2 is not masked
    m = int(masks.sum())
    g = torch.Generator().manual_seed(0)
    student = torch.randn(m, K, generator=g, dtype=torch.float64) * 2
    teacher = torch.randn(m, K, generator=g, dtype=torch.float64) * 2
    return masks, student, teacher


def naive(masks, student, teacher, center, tau_s, tau_t):
    """-1/N sum_n 1/M_n sum_p sum_k softmax((t - c)/tau_t)_k log softmax(s/tau_s)_k, written out."""
    rows = iter(range(len(student)))
    total = 0.0
    for n in range(len(masks)):
        patches = [next(rows) for p in range(masks.shape[1]) if masks[n, p]]
        for r in patches:
            t = [math.exp((teacher[r][k] - center[k]) / tau_t) for k in range(K)]
            s = [student[r][k] / tau_s for k in range(K)]
            log_norm = math.log(sum(math.exp(x) for x in s))
            total += sum(-(t[k] / sum(t)) * (s[k] - log_norm) for k in range(K)) / len(patches)
    return total / len(masks)


def test_loss_equals_naive_loop_and_lightly_in_value_and_gradient():
    masks, student, teacher = fixed_inputs()
    loss_fn = IBOTPatchLoss(K, student_temperature=0.1).double()
    loss_fn.center.copy_(torch.linspace(-0.5, 0.5, K)[None])
    student_mine = student.clone().requires_grad_()
    probs = loss_fn.teacher_probabilities(teacher, 0.04)
    out = loss_fn(student_mine, probs, masks)
    expected = naive(masks, student.tolist(), teacher.tolist(), loss_fn.center[0].tolist(), 0.1, 0.04)
    assert out.item() == pytest.approx(expected, rel=1e-9)

    lightly = LightlyIBOTPatchLoss(output_dim=K, teacher_temp=0.04, student_temp=0.1).double()
    lightly.center.value.copy_(loss_fn.center)  # lightly's centre has the same layout [1, K]
    student_lightly = student.clone().requires_grad_()
    reference = lightly(teacher, student_lightly, masks.view(N, H, W))
    torch.testing.assert_close(out, reference)
    out.backward()
    reference.backward()
    torch.testing.assert_close(student_mine.grad, student_lightly.grad)
    # precomputed weights (the method computes them on the CPU) give the same loss
    torch.testing.assert_close(loss_fn(student, probs, masks, patch_weights(masks).double()), out.detach())


def test_every_image_weighs_the_same_however_many_patches_it_masks():
    """Image 0 masks 3 patches and image 1 one: each contributes its mean over its own patches."""
    masks, student, teacher = fixed_inputs()
    loss_fn = IBOTPatchLoss(K).double()
    probs = loss_fn.teacher_probabilities(teacher, 0.07)
    per_patch = -(probs * torch.log_softmax(student / 0.1, dim=-1)).sum(-1)
    means = [
        per_patch[:3].mean(),
        per_patch[3:4].mean(),
        torch.zeros((), dtype=torch.float64),
        per_patch[4:].mean(),
    ]
    torch.testing.assert_close(loss_fn(student, probs, masks), sum(means) / N)
    assert not torch.allclose(loss_fn(student, probs, masks), per_patch.mean())  # not a mean over patches


def test_teacher_gets_no_gradient_and_the_centre_is_an_ema_of_masked_patches():
    masks, student, teacher = fixed_inputs()
    loss_fn = IBOTPatchLoss(K, center_momentum=0.9).double()
    teacher = teacher.clone().requires_grad_()
    probs = loss_fn.teacher_probabilities(teacher, 0.07)
    loss_fn(student.clone().requires_grad_(), probs, masks).backward()
    assert teacher.grad is None
    loss_fn.update_center(teacher)
    torch.testing.assert_close(loss_fn.center, 0.1 * teacher.detach().mean(0, keepdim=True))
    before = loss_fn.center.clone()
    loss_fn.update_center(teacher[:0])  # no masked patch anywhere: the centre stays
    torch.testing.assert_close(loss_fn.center, before)


def test_sinkhorn_teacher_rows_are_distributions_and_bad_centering_is_refused():
    _, _, teacher = fixed_inputs()
    loss_fn = IBOTPatchLoss(K)
    probs = loss_fn.teacher_probabilities(teacher.float(), 0.07, centering="sinkhorn")
    torch.testing.assert_close(probs.sum(1), torch.ones(len(teacher)))
    with pytest.raises(ValueError, match="softmax' or 'sinkhorn"):
        loss_fn.teacher_probabilities(teacher, 0.07, centering="center")
    with pytest.raises(ValueError, match="one per masked patch"):
        masks, student, _ = fixed_inputs()
        loss_fn.double()(student, student.softmax(-1), masks, torch.ones(2, dtype=torch.float64))
