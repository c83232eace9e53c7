"""The Barlow Twins loss: a naive loop and lightly's BarlowTwinsLoss, in value and gradient; 2 gloo
processes with different inputs against one process holding the concatenated batch.

lightly's single-process loss is the reference's (facebookresearch/barlowtwins ``main.py``). Under a
process group lightly normalises each process's batch on its own, while the reference's
SyncBatchNorm normalises over the global batch, as here; the distributed case is checked against one
process holding the whole batch instead."""

import math

import pytest
import torch
from lightly.loss import BarlowTwinsLoss as LightlyBarlowTwinsLoss

from selfsup.losses import BarlowTwinsLoss
from tests.loss_processes import WORLD, one_process, two_processes

N, D = 6, 4


def inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(N, D, generator=g, dtype=torch.float64) * 2 + 1
    return z1, z1 + torch.randn(N, D, generator=g, dtype=torch.float64)  # correlated views


def naive(z1, z2, lam, eps=1e-5) -> float:
    n, d = len(z1), len(z1[0])

    def standardise(z):
        cols = []
        for k in range(d):
            mean = sum(z[i][k] for i in range(n)) / n
            var = sum((z[i][k] - mean) ** 2 for i in range(n)) / n  # biased, as BatchNorm's
            cols.append([(z[i][k] - mean) / math.sqrt(var + eps) for i in range(n)])
        return cols

    a, b = standardise(z1), standardise(z2)
    total = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[i][s] * b[j][s] for s in range(n)) / n
            total += (1 - c) ** 2 if i == j else lam * c**2
    return total


@pytest.mark.parametrize("lam", [0.0051, 0.5])
def test_equals_a_naive_loop(lam):
    z1, z2 = inputs(0)
    assert BarlowTwinsLoss(lam)(z1, z2).item() == pytest.approx(
        naive(z1.tolist(), z2.tolist(), lam), rel=1e-10
    )


def test_equals_lightly_in_value_and_gradient():
    z1, z2 = (t.requires_grad_() for t in inputs(1))
    loss = BarlowTwinsLoss(5e-3)(z1, z2)
    ours = torch.autograd.grad(loss, [z1, z2])
    theirs_loss = LightlyBarlowTwinsLoss(lambda_param=5e-3)(z1, z2)
    theirs = torch.autograd.grad(theirs_loss, [z1, z2])
    torch.testing.assert_close(loss, theirs_loss)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)
        assert a.abs().sum() > 0


def test_zero_off_diagonal_weight_sees_only_the_diagonal_and_identical_views_have_c_ii_1():
    z1, _ = inputs(2)
    on_diagonal, off_diagonal = BarlowTwinsLoss().terms(z1, z1)
    assert on_diagonal.item() == pytest.approx(0.0, abs=1e-8)  # C_ii = var / (var + eps) ~ 1
    assert off_diagonal.item() > 0
    torch.testing.assert_close(BarlowTwinsLoss(0.0)(z1, z1), on_diagonal)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="lambda_"):
        BarlowTwinsLoss(-1.0)
    z1, z2 = inputs(3)
    with pytest.raises(ValueError, match="same shape"):
        BarlowTwinsLoss()(z1, z2[:, :3])
    with pytest.raises(ValueError, match="at least 2 images"):
        BarlowTwinsLoss()(z1[:1], z2[:1])


def test_two_processes_match_one_process_with_the_concatenated_batch(tmp_path):
    results = two_processes(tmp_path, BarlowTwinsLoss, inputs)
    loss, grads = one_process(BarlowTwinsLoss, inputs)
    # every rank computes the global batch's loss, and its inputs get the gradient of all ranks' losses
    for r, result in enumerate(results):
        torch.testing.assert_close(result["loss"], loss)
        rows = slice(r * N, (r + 1) * N)
        for ours, expected in zip(result["grads"], grads, strict=True):
            torch.testing.assert_close(ours / WORLD, expected[rows])
