"""Magnitude pruning: stated sparsity, heads and channels really removed (against timm modules built
smaller), masks kept through a gradient step, and the physically smaller MLP model."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from timm.layers import Attention

from selfsup.compress.pruning import (
    channel_scores,
    head_scores,
    linear_targets,
    make_permanent,
    mlp_ratio_for,
    prune_encoder,
    shrink_mlp,
    zero_fraction,
)
from selfsup.encoders import create_encoder


def tiny(depth: int = 2, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return create_encoder("vit_tiny_patch16_224", img_size=16, patch_size=4, depth=depth, **kwargs).eval()


@pytest.mark.parametrize("amount", [0.3, 0.9])
def test_unstructured_has_the_stated_global_sparsity(amount):
    model = tiny(depth=1)
    with torch.no_grad():  # one layer of large weights: a global threshold leaves it untouched
        model.blocks[0].attn.proj.weight.mul_(100.0)
    result = prune_encoder(model, amount, "unstructured")
    make_permanent(model)
    weights = [m.weight for _, m in linear_targets(model)]
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == round(amount * total)  # L1Unstructured prunes round(amount * n) weights
    assert result.sparsity == pytest.approx(amount, abs=1 / total)
    assert zero_fraction(model, result.targets) == pytest.approx(amount, abs=1 / total)
    # global, not per layer: the large layer loses far fewer than `amount` of its weights
    assert float((model.blocks[0].attn.proj.weight == 0).float().mean()) < amount / 10
    # every pruned weight was smaller in magnitude than every kept one
    original = tiny(depth=1)
    with torch.no_grad():
        original.blocks[0].attn.proj.weight.mul_(100.0)
    before = torch.cat([m.weight.detach().flatten() for _, m in linear_targets(original)]).abs()
    after = torch.cat([w.detach().flatten() for w in weights])
    assert before[after == 0].max() <= before[after != 0].min()
    assert not any(name.endswith("_orig") for name, _ in model.named_parameters())


def test_masks_survive_a_gradient_step():
    model = tiny(depth=1)
    result = prune_encoder(model, 0.5, "unstructured")
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model.train()
    model.forward_features(torch.randn(4, 3, 16, 16)).pow(2).mean().backward()
    optimizer.step()
    make_permanent(model)
    assert zero_fraction(model, result.targets) == pytest.approx(0.5, abs=1e-5)


def test_heads_pruning_equals_attention_without_those_heads():
    """The reference is timm's own Attention built with only the kept heads (attn_head_dim keeps
    their width), with the kept heads' slices copied in."""
    model = tiny(depth=1)
    attn = model.blocks[0].attn
    with torch.no_grad():  # make head 1 the weakest: it must be the one removed
        attn.qkv.weight.view(3, 3, 64, -1)[:, 1] *= 0.01
        attn.proj.weight.view(-1, 3, 64)[:, :, 1] *= 0.01
    assert int(head_scores(attn).argmin()) == 1
    x = torch.randn(2, 17, 192)
    result = prune_encoder(model, 0.34, "heads")
    assert result.per_block == [[1]] and result.removed == 1 and result.sparsity == pytest.approx(1 / 3)
    make_permanent(model)
    keep = [0, 2]
    reference = Attention(192, num_heads=2, attn_head_dim=64, qkv_bias=True).eval()
    with torch.no_grad():
        rows = torch.cat(
            [torch.arange(s * 192 + h * 64, s * 192 + (h + 1) * 64) for s in range(3) for h in keep]
        )
        cols = torch.cat([torch.arange(h * 64, (h + 1) * 64) for h in keep])
        reference.qkv.weight.copy_(attn.qkv.weight[rows])
        reference.qkv.bias.copy_(attn.qkv.bias[rows])
        reference.proj.weight.copy_(attn.proj.weight[:, cols])
        reference.proj.bias.copy_(attn.proj.bias)
        torch.testing.assert_close(attn(x), reference(x), atol=1e-5, rtol=1e-5)
    assert zero_fraction(model, result.targets) == pytest.approx(1 / 3, abs=1e-6)


def test_mlp_pruning_shrinks_to_a_plain_timm_model_with_the_same_function():
    model = tiny()
    reference = copy.deepcopy(model)
    result = prune_encoder(model, 0.25, "mlp")
    assert result.removed == 2 * 192 and result.sparsity == pytest.approx(0.25)
    # the removed channels are each block's lowest-scoring ones
    for block, removed in zip(reference.blocks, result.per_block, strict=True):
        assert set(removed) == set(channel_scores(block.mlp).argsort()[:192].tolist())
    make_permanent(model)

    def build(ratio):
        return create_encoder("vit_tiny_patch16_224", img_size=16, patch_size=4, depth=2, mlp_ratio=ratio)

    small, ratio = shrink_mlp(model, result.per_block, build)
    assert small.blocks[0].mlp.fc1.out_features == 576 and ratio == pytest.approx(3.0)
    n_small = sum(p.numel() for p in small.parameters())
    assert n_small == sum(p.numel() for p in reference.parameters()) - 2 * 192 * (192 + 1 + 192)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), atol=1e-5, rtol=1e-5)
        # and pruning changed the function (the test is not vacuous)
        assert (small(x) - reference(x)).abs().max() > 1e-3
    assert isinstance(small, timm.models.vision_transformer.VisionTransformer)


@pytest.mark.parametrize("hidden", [1, 7, 97, 100, 383, 575, 767])
def test_mlp_ratio_rebuilds_the_exact_width(hidden):
    for dim in (192, 384, 100, 3):
        assert int(dim * mlp_ratio_for(hidden, dim)) == hidden


@pytest.mark.parametrize(
    "amount, mode, match",
    [
        (0.0, "unstructured", r"in \(0, 1\)"),
        (1.0, "heads", r"in \(0, 1\)"),
        (0.2, "heads", "removes none"),
        (0.001, "mlp", "removes none"),
        (0.5, "channels", "prune_mode must be one of"),
    ],
)
def test_bad_amounts_and_modes(amount, mode, match):
    with pytest.raises(ValueError, match=match):
        prune_encoder(tiny(depth=1), amount, mode)
