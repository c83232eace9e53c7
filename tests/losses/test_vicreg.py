"""VICReg's loss: a naive loop and lightly's VICRegLoss, in value and gradient; 2 gloo processes with
different inputs against one process holding the concatenated batch.

lightly's single-process loss is the reference's (facebookresearch/vicreg ``main_vicreg.py``); with
a process group lightly gathers without the gradients of the other processes' terms, so the
distributed case is checked against one process instead."""

import math

import pytest
import torch
from lightly.loss import VICRegLoss as LightlyVICRegLoss

from selfsup.losses import VICRegLoss
from tests.loss_processes import WORLD, one_process, two_processes

N, D = 6, 5


def inputs(seed: int, n: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.3, 0.8, 1.5, 2.0, 0.5], dtype=torch.float64)  # some dimensions under std 1
    return (torch.randn(n, D, generator=g, dtype=torch.float64) * scale,
            torch.randn(n, D, generator=g, dtype=torch.float64) * scale)  # fmt: skip


def naive(z1, z2, lam=25.0, mu=25.0, nu=1.0, eps=1e-4) -> float:
    """The three terms with plain Python loops over samples and dimensions."""
    n, d = len(z1), len(z1[0])
    inv = sum((z1[i][k] - z2[i][k]) ** 2 for i in range(n) for k in range(d)) / (n * d)

    def stats(z):
        mean = [sum(z[i][k] for i in range(n)) / n for k in range(d)]
        cov = [[sum((z[i][a] - mean[a]) * (z[i][b] - mean[b]) for i in range(n)) / (n - 1) for b in range(d)]
               for a in range(d)]  # fmt: skip
        var = sum(max(0.0, 1 - math.sqrt(cov[k][k] + eps)) for k in range(d)) / d
        off = sum(cov[a][b] ** 2 for a in range(d) for b in range(d) if a != b) / d
        return var, off

    (v1, c1), (v2, c2) = stats(z1), stats(z2)
    return lam * inv + mu * (v1 + v2) / 2 + nu * (c1 + c2)


@pytest.mark.parametrize("weights", [(25.0, 25.0, 1.0), (1.0, 2.0, 3.0)])
def test_equals_a_naive_loop(weights):
    z1, z2 = inputs(0)
    loss = VICRegLoss(*weights)(z1, z2)
    assert loss.item() == pytest.approx(naive(z1.tolist(), z2.tolist(), *weights), rel=1e-10)


def test_equals_lightly_in_value_and_gradient():
    z1, z2 = (t.requires_grad_() for t in inputs(1))
    loss = VICRegLoss()(z1, z2)
    ours = torch.autograd.grad(loss, [z1, z2])
    theirs_loss = LightlyVICRegLoss()(z1, z2)
    theirs = torch.autograd.grad(theirs_loss, [z1, z2])
    torch.testing.assert_close(loss, theirs_loss)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)
    assert all(g.abs().sum() > 0 for g in ours)


def test_terms_vanish_for_identical_decorrelated_spread_views_and_collapse_costs_the_variance():
    # the corners of a square: mean 0, no covariance, std 2 * sqrt(4 / 3) > 1 in both dimensions
    z = 2 * torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    assert [t.item() for t in VICRegLoss().terms(z, z)] == [0.0, 0.0, 0.0]
    collapsed = torch.ones(6, 4, dtype=torch.float64)
    invariance, variance, covariance = VICRegLoss().terms(collapsed, collapsed)
    assert variance.item() == pytest.approx(1 - math.sqrt(1e-4)) and covariance.item() == 0.0


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="variance_weight"):
        VICRegLoss(variance_weight=-1.0)
    z1, z2 = inputs(2)
    with pytest.raises(ValueError, match="same shape"):
        VICRegLoss()(z1, z2[:, :3])
    with pytest.raises(ValueError, match="at least 2 images"):
        VICRegLoss()(z1[:1], z2[:1])


# --- two processes ---------------------------------------------------------------------------------


def test_two_processes_match_one_process_with_the_concatenated_batch(tmp_path):
    results = two_processes(tmp_path, VICRegLoss, inputs)
    loss, grads = one_process(VICRegLoss, inputs)
    # each rank: its own invariance term plus the global variance and covariance terms; DDP averages
    assert not torch.allclose(results[0]["loss"], results[1]["loss"])
    torch.testing.assert_close(sum(r["loss"] for r in results) / WORLD, loss)
    for r, result in enumerate(results):
        rows = slice(r * N, (r + 1) * N)
        for ours, expected in zip(result["grads"], grads, strict=True):
            torch.testing.assert_close(ours / WORLD, expected[rows])
