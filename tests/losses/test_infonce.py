import math

import pytest
import torch

from selfsup.losses import InfoNCELoss


def naive_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR eq. (1), one anchor at a time, straight from the paper."""
    views = torch.cat([z1, z2])
    n2 = len(views)
    half = n2 // 2
    total = 0.0
    for i in range(n2):
        j = (i + half) % n2

        def sim(a, b):
            return torch.dot(views[a], views[b]) / (views[a].norm() * views[b].norm())

        numerator = torch.exp(sim(i, j) / temperature)
        denominator = sum(torch.exp(sim(i, k) / temperature) for k in range(n2) if k != i)
        total = total - torch.log(numerator / denominator)
    return total / n2


@pytest.mark.parametrize(("n", "d", "temperature"), [(2, 3, 0.1), (5, 8, 0.5), (8, 16, 1.0)])
def test_equals_naive_loop_value_and_gradient(n, d, temperature):
    g = torch.Generator().manual_seed(n)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    loss = InfoNCELoss(temperature)(z1, z2)
    reference = naive_nt_xent(z1, z2, temperature)
    torch.testing.assert_close(loss, reference)
    g1, g2 = torch.autograd.grad(loss, (z1, z2))
    r1, r2 = torch.autograd.grad(reference, (z1, z2))
    torch.testing.assert_close(g1, r1)
    torch.testing.assert_close(g2, r2)


def test_symmetric_in_its_two_arguments():
    z1, z2 = torch.randn(6, 4), torch.randn(6, 4)
    loss = InfoNCELoss(0.2)
    torch.testing.assert_close(loss(z1, z2), loss(z2, z1))


@pytest.mark.parametrize("n", [2, 4, 16])
def test_collapsed_embeddings_give_log_2n_minus_1(n):
    z = torch.ones(n, 5)
    torch.testing.assert_close(InfoNCELoss(0.3)(z, z.clone()), torch.tensor(math.log(2 * n - 1)))


def test_perfect_alignment_approaches_zero():
    # positives identical, negatives orthogonal: loss = log(1 + (2N-2) exp(-1/t)), tiny at small t
    z = torch.eye(4)
    t = 0.05
    expected = math.log(1 + 6 * math.exp(-1 / t)) * 1.0
    torch.testing.assert_close(InfoNCELoss(t)(z, z.clone()), torch.tensor(expected, dtype=torch.float32))


@pytest.mark.parametrize("temperature", [0.0, -0.1, float("nan"), float("inf")])
def test_invalid_temperature_raises(temperature):
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(temperature)


def test_invalid_inputs_raise():
    loss = InfoNCELoss()
    with pytest.raises(ValueError, match="same shape"):
        loss(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="same shape"):
        loss(torch.randn(4, 3, 1), torch.randn(4, 3, 1))
    with pytest.raises(ValueError, match="batch of 1 there are no negatives"):
        loss(torch.randn(1, 3), torch.randn(1, 3))


def test_negatives_per_sample_single_process():
    assert InfoNCELoss().negatives_per_sample(128) == 254
