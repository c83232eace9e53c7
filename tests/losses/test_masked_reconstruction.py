import pytest
import torch

from selfsup.losses import MaskedReconstructionLoss


def naive(pred, target, mask, norm_pix, eps=1e-6):
    """Straight from the paper: per masked patch, MSE against the (per-patch normalised) target."""
    total, count = 0.0, 0
    for n in range(pred.shape[0]):
        for i in range(pred.shape[1]):
            if mask[n, i] != 1:
                continue
            t = target[n, i]
            if norm_pix:
                mean = sum(t) / len(t)
                var = sum((v - mean) ** 2 for v in t) / (len(t) - 1)
                t = (t - mean) / (var + eps) ** 0.5
            total += ((pred[n, i] - t) ** 2).mean()
            count += 1
    return total / count


@pytest.mark.parametrize("norm_pix", [True, False])
def test_equals_naive_formula(norm_pix):
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 10, 12, generator=g, dtype=torch.float64)
    target = torch.randn(3, 10, 12, generator=g, dtype=torch.float64) * 3 + 1
    mask = (torch.rand(3, 10, generator=g) < 0.7).double()
    loss = MaskedReconstructionLoss(norm_pix)(pred, target, mask)
    torch.testing.assert_close(loss.double(), naive(pred, target, mask, norm_pix), rtol=1e-5, atol=1e-6)


def test_visible_patches_do_not_count_and_nothing_masked_means_all_patches():
    target = torch.randn(2, 6, 4)
    pred = target.clone()
    mask = torch.zeros(2, 6)
    mask[:, :3] = 1
    pred[:, 3:] += 100  # huge errors on visible patches only
    loss = MaskedReconstructionLoss(norm_pix_loss=False)
    assert loss(pred, target, mask).item() == 0.0
    everything = loss(pred, target, torch.zeros(2, 6))
    torch.testing.assert_close(everything, (pred - target).pow(2).mean())


def test_norm_pix_target_is_scale_and_shift_invariant():
    g = torch.Generator().manual_seed(1)
    target = torch.randn(1, 4, 16, generator=g)
    pred = torch.randn(1, 4, 16, generator=g)
    mask = torch.ones(1, 4)
    loss = MaskedReconstructionLoss()
    torch.testing.assert_close(
        loss(pred, target, mask), loss(pred, 5 * target + 2, mask), atol=1e-4, rtol=1e-4
    )


def test_shape_errors():
    with pytest.raises(ValueError, match="expected pred and target"):
        MaskedReconstructionLoss()(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4), torch.zeros(1, 2))
    with pytest.raises(ValueError):
        MaskedReconstructionLoss(eps=0)
