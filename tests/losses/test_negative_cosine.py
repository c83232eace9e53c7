"""BYOL's regression loss: a naive loop and lightly's NegativeCosineSimilarity, in value and gradient.

lightly's loss is ``-mean cos(x0, x1)`` for one direction; the reference's (deepmind-research
``byol/utils/helpers.py``, ``regression_loss``) is ``2 - 2 cos`` summed over both directions. They
agree up to that affine map: ours = 4 + 2 (lightly(p1, z2) + lightly(p2, z1)), gradient 2x lightly's."""

import math

import pytest
import torch
from lightly.loss import NegativeCosineSimilarity

from selfsup.losses import NegativeCosineLoss

N, D = 5, 7


def inputs(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(N, D, generator=g, dtype=torch.float64) for _ in range(4)]  # p1, p2, z1, z2


def naive(p, z) -> float:
    """mean_i || p_i / |p_i| - z_i / |z_i| ||^2, in plain Python."""
    total = 0.0
    for pi, zi in zip(p, z, strict=True):
        np_, nz = math.sqrt(sum(x * x for x in pi)), math.sqrt(sum(x * x for x in zi))
        total += sum((a / np_ - b / nz) ** 2 for a, b in zip(pi, zi, strict=True))
    return total / len(p)


def test_equals_a_naive_loop():
    p1, p2, z1, z2 = inputs(0)
    loss = NegativeCosineLoss()(p1, p2, z1, z2)
    expected = naive(p1.tolist(), z2.tolist()) + naive(p2.tolist(), z1.tolist())
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_equals_lightly_up_to_the_references_affine_map_in_value_and_gradient():
    p1, p2, z1, z2 = (t.requires_grad_() for t in inputs(1))
    loss = NegativeCosineLoss()(p1, p2, z1, z2)
    loss.backward()
    ours = [p1.grad.clone(), p2.grad.clone()]
    assert z1.grad is None and z2.grad is None  # targets are detached
    p1.grad = p2.grad = None
    theirs = NegativeCosineSimilarity()(p1, z2.detach()) + NegativeCosineSimilarity()(p2, z1.detach())
    theirs.backward()
    torch.testing.assert_close(loss.detach(), 4 + 2 * theirs.detach())
    torch.testing.assert_close(ours[0], 2 * p1.grad)
    torch.testing.assert_close(ours[1], 2 * p2.grad)


def test_zero_when_each_prediction_points_along_the_other_views_target_and_bounded_by_8():
    _, _, z1, z2 = inputs(2)
    loss = NegativeCosineLoss()
    assert loss(3 * z2, 0.5 * z1, z1, z2).item() == pytest.approx(0.0, abs=1e-12)
    assert loss(-z2, -z1, z1, z2).item() == pytest.approx(8.0, rel=1e-12)


def test_half_precision_inputs_are_computed_in_float32():
    p1, p2, z1, z2 = (t.to(torch.bfloat16) for t in inputs(3))
    assert NegativeCosineLoss()(p1, p2, z1, z2).dtype == torch.float32


def test_bad_inputs():
    p1, p2, z1, z2 = inputs(4)
    with pytest.raises(ValueError, match="same shape"):
        NegativeCosineLoss()(p1, p2, z1, z2[:, :3])
    with pytest.raises(ValueError, match="eps"):
        NegativeCosineLoss(eps=0.0)
