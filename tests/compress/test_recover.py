"""The recovery fine-tune: feature distillation lowers the distance to the original, and pruned weights
stay zero through it."""

from __future__ import annotations

import copy

import pytest
import torch

from selfsup.compress.pruning import make_permanent, prune_encoder, zero_fraction
from selfsup.compress.recover import distill_recover
from selfsup.encoders import create_encoder


def test_distillation_recovers_the_original_features_and_keeps_the_masks():
    torch.manual_seed(0)
    teacher = create_encoder("vit_tiny_patch16_224", img_size=16, patch_size=4, depth=1).eval()
    student = copy.deepcopy(teacher)
    result = prune_encoder(student, 0.6, "unstructured")
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    batches = [(images[:16], torch.zeros(16)), (images[16:], torch.zeros(16))]  # restarted after 2 steps

    def normalize(x):
        return x.float() / 127.5 - 1.0

    def distance(x=images):
        with torch.no_grad():
            x = normalize(x)
            return float((student.forward_features(x) - teacher.forward_features(x)).pow(2).mean())

    before, before_first_batch = distance(), distance(images[:16])
    losses = distill_recover(student, teacher, batches, normalize, steps=6, lr=1e-3)
    assert len(losses) == 6
    assert float(losses[0]) == pytest.approx(before_first_batch, rel=1e-4)  # the MSE before any step
    assert distance() < 0.5 * before
    assert all(not p.requires_grad for p in teacher.parameters())
    make_permanent(student)
    assert zero_fraction(student, result.targets) == pytest.approx(0.6, abs=1e-5)


def test_bad_arguments():
    model = create_encoder("vit_tiny_patch16_224", img_size=16, patch_size=4, depth=1)
    with pytest.raises(ValueError, match="finetune_steps must be >= 1"):
        distill_recover(model, model, [], lambda x: x, steps=0)
    with pytest.raises(ValueError, match="finetune_lr must be > 0"):
        distill_recover(model, model, [], lambda x: x, steps=1, lr=0.0)
