"""MoCo v3's MLPs: the reference's layer pattern, shapes, and a gradient for every trainable parameter."""

import pytest
import torch
from torch import nn

from selfsup.heads.moco import build_mlp, moco_predictor, moco_projector


def kinds(mlp: nn.Sequential) -> list[str]:
    return [
        type(m).__name__ + ("" if not isinstance(m, nn.BatchNorm1d) or m.affine else "-noaffine") for m in mlp
    ]


def test_layer_pattern_follows_the_reference():
    mlp = build_mlp(3, 10, 16, 6)
    assert kinds(mlp) == [
        "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d-noaffine"
    ]  # fmt: skip
    assert all(m.bias is None for m in mlp if isinstance(m, nn.Linear))
    assert [(m.in_features, m.out_features) for m in mlp if isinstance(m, nn.Linear)] == [
        (10, 16),
        (16, 16),
        (16, 6),
    ]
    assert kinds(build_mlp(2, 10, 16, 6, last_bn=False)) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert kinds(build_mlp(1, 10, 16, 6)) == ["Linear", "BatchNorm1d-noaffine"]


def test_default_heads_chain_and_their_outputs_are_standardised_over_the_batch():
    """With their defaults, the projector's output feeds the predictor, and both end in a BatchNorm
    without a learned scale or shift: in training, every output feature has mean 0 and variance 1
    over the batch, whatever the weights. The predictor with ``last_bn=False`` keeps its scale."""
    torch.manual_seed(0)
    projector, predictor = moco_projector(192), moco_predictor()
    x = torch.randn(16, 192) * 3 + 1
    with torch.no_grad():
        for p in [*projector.parameters(), *predictor.parameters()]:  # trained weights, not the init
            p.mul_(1.5).add_(0.1)
        z = projector(x)
        q = predictor(z)
        unnormalised = moco_predictor(last_bn=False)(z)
    for out in (z, q):
        assert out.shape == (16, 256)
        torch.testing.assert_close(out.mean(0), torch.zeros(256), atol=1e-4, rtol=0)
        torch.testing.assert_close(out.var(0, unbiased=False), torch.ones(256), atol=1e-2, rtol=0)
    assert unnormalised.shape == (16, 256)
    assert (unnormalised.var(0, unbiased=False) - 1).abs().max() > 0.1


@pytest.mark.parametrize("last_bn", [True, False])
def test_shape_and_every_trainable_parameter_gets_a_gradient(last_bn):
    torch.manual_seed(0)
    projector = moco_projector(12, hidden_dim=20, out_dim=8)
    predictor = moco_predictor(8, hidden_dim=20, out_dim=8, last_bn=last_bn)
    out = predictor(projector(torch.randn(5, 12)))
    assert out.shape == (5, 8) and torch.isfinite(out).all()
    out.square().sum().backward()
    for name, p in [*projector.named_parameters(), *predictor.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("name", ["num_layers", "in_dim", "hidden_dim", "out_dim"])
def test_bad_arguments(name):
    kwargs = {"num_layers": 2, "in_dim": 4, "hidden_dim": 4, "out_dim": 4, name: 0}
    with pytest.raises(ValueError, match=name):
        build_mlp(**kwargs)
