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


def test_projector_and_predictor_defaults():
    with torch.device("meta"):  # the real widths, without allocating them
        projector, predictor = moco_projector(192), moco_predictor()
    assert [m.out_features for m in projector if isinstance(m, nn.Linear)] == [4096, 4096, 256]
    assert [m.out_features for m in predictor if isinstance(m, nn.Linear)] == [4096, 256]
    assert isinstance(projector[-1], nn.BatchNorm1d) and not projector[-1].affine
    # MoCo_ViT's predictor keeps the reference's default last_bn=True
    assert isinstance(predictor[-1], nn.BatchNorm1d)
    with torch.device("meta"):
        assert isinstance(moco_predictor(last_bn=False)[-1], nn.Linear)


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
