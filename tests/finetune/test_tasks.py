"""The fine-tuning tasks: what they do to a batch and to the targets, checked by hand."""

import pytest
import torch

from selfsup.finetune.tasks import Classification


def smoothed(labels: torch.Tensor, classes: int, smoothing: float) -> torch.Tensor:
    off = smoothing / classes
    return torch.full((len(labels), classes), off).scatter_(1, labels[:, None], 1 - smoothing + off)


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mixed_targets_are_the_mixed_labels_with_the_images_own_proportion(kind):
    """timm's Mixup pairs sample i with sample B-1-i and one ``lam`` per batch: the target must be
    ``lam * smooth(y_i) + (1 - lam) * smooth(y_{B-1-i})``, with ``lam`` the share of sample i in the
    mixed image (its weight for mixup, its area for cutmix)."""
    classes, smoothing = 5, 0.1
    task = Classification(
        classes, 8, 16, (0.5,) * 3, (0.5,) * 3,
        mixup=0.8 if kind == "mixup" else 0.0, cutmix=1.0 if kind == "cutmix" else 0.0, label_smoothing=smoothing,
    )  # fmt: skip
    torch.manual_seed(0)
    x = torch.rand(6, 3, 16, 16) + torch.arange(6).view(6, 1, 1, 1)  # samples told apart by value
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    mixed, targets = task.mixup(x.clone(), labels)
    assert targets.shape == (6, classes) and torch.allclose(targets.sum(1), torch.ones(6))
    a, b = smoothed(labels, classes, smoothing), smoothed(labels.flip(0), classes, smoothing)
    # lam from sample 0's target (labels 0 and 0 would not tell: sample 0 pairs with 5, labels 0 / 0)
    lam = float((targets[1] - b[1])[1] / (a[1] - b[1])[1])
    torch.testing.assert_close(targets, lam * a + (1 - lam) * b)
    if kind == "mixup":
        torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.flip(0))
    else:
        own = (mixed == x).all(dim=1).float().mean(dim=(1, 2))  # share of each image still its own
        torch.testing.assert_close(own, torch.full((6,), lam), atol=1e-6, rtol=0)
    assert 0.0 < lam < 1.0


def test_odd_batch_with_mixup_is_a_clear_error():
    task = Classification(5, 8, 16, (0.5,) * 3, (0.5,) * 3, mixup=0.8)
    with pytest.raises(ValueError, match="even batch size"):
        task.train_batch(torch.zeros(3, 3, 16, 16, dtype=torch.uint8), torch.zeros(3, dtype=torch.long))
