"""KoLeo: a naive nearest-neighbour loop and lightly's ``KoLeoLoss``, in value and gradient."""

import math

import pytest
import torch
from lightly.loss.koleo_loss import KoLeoLoss as LightlyKoLeoLoss

from selfsup.losses.koleo import KoLeoLoss


def naive(x: list[list[float]], eps: float = 1e-8) -> float:
    z = [[v / max(math.sqrt(sum(u * u for u in row)), eps) for v in row] for row in x]
    total = 0.0
    for i, zi in enumerate(z):
        j = max(
            (j for j in range(len(z)) if j != i),
            key=lambda j: sum(a * b for a, b in zip(zi, z[j], strict=True)),
        )
        distance = math.sqrt(sum((a - b + eps) ** 2 for a, b in zip(zi, z[j], strict=True)))
        total -= math.log(distance + eps)
    return total / len(z)


def test_loss_equals_naive_loop_and_lightly_in_value_and_gradient():
    x = torch.randn(9, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    mine, ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, expected = KoLeoLoss()(mine), LightlyKoLeoLoss()(ref)
    assert out.item() == pytest.approx(naive(x.tolist()), rel=1e-9)
    torch.testing.assert_close(out, expected)
    out.backward()
    expected.backward()
    torch.testing.assert_close(mine.grad, ref.grad)


def test_spread_features_score_lower_than_clustered_ones_and_half_inputs_run_in_float32():
    g = torch.Generator().manual_seed(1)
    spread = torch.eye(8)  # orthogonal: every neighbour at distance sqrt(2)
    clustered = torch.ones(8, 8) + 0.01 * torch.randn(8, 8, generator=g)
    assert KoLeoLoss()(spread) == pytest.approx(-math.log(math.sqrt(2)), rel=1e-5)
    assert KoLeoLoss()(clustered) > KoLeoLoss()(spread) + 2
    assert KoLeoLoss()(spread.bfloat16()).dtype == torch.float32


def test_antipodal_pair_is_not_its_own_neighbour():
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert KoLeoLoss()(x) == pytest.approx(-math.log(2.0), rel=1e-5)


def test_one_row_is_refused():
    with pytest.raises(ValueError, match="B >= 2"):
        KoLeoLoss()(torch.randn(1, 4))
