"""DINO head: shapes, the fixed last-layer norm, exactly the last layer's parameters (lightly#1586),
and a gradient for every other trainable parameter."""

import copy

import pytest
import torch

from selfsup.heads.dino import DINOHead

IN, OUT, HIDDEN, BOTTLENECK = 12, 40, 24, 8
LAST = {"last_layer.magnitude", "last_layer.direction"}


def head(**kwargs) -> DINOHead:
    torch.manual_seed(0)
    return DINOHead(IN, out_dim=OUT, hidden_dim=HIDDEN, bottleneck_dim=BOTTLENECK, **kwargs)


@pytest.mark.parametrize("num_layers, use_bn", [(3, False), (3, True), (1, False)])
def test_output_shape_and_every_trainable_parameter_gets_a_gradient(num_layers, use_bn):
    model = head(num_layers=num_layers, use_bn=use_bn)
    out = model(torch.randn(6, IN))
    assert out.shape == (6, OUT) and torch.isfinite(out).all()
    out.square().sum().backward()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {name for name, _ in model.named_parameters()} - {"last_layer.magnitude"}  # all but g
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    linears = [m for m in model.mlp if isinstance(m, torch.nn.Linear)]
    assert len(linears) == num_layers and linears[-1].out_features == BOTTLENECK
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.mlp) == (use_bn and num_layers > 1)


def test_last_layer_norm_is_fixed_to_one():
    model = head()
    g = model.last_layer.magnitude
    assert g.shape == (OUT, 1) and not g.requires_grad and torch.equal(g, torch.ones_like(g))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(6, IN)).logsumexp(dim=1).sum().backward()
        optimizer.step()
    torch.testing.assert_close(model.last_layer.weight.norm(dim=1), torch.ones(OUT))
    # the output is a dot product of unit vectors: a cosine
    assert model(torch.randn(6, IN)).abs().max() <= 1 + 1e-5


def test_last_layer_norm_trains_without_norm_last_layer():
    model = head(norm_last_layer=False)
    g = model.last_layer.magnitude
    assert g.requires_grad and torch.equal(g, torch.ones_like(g))
    model(torch.randn(6, IN)).sum().backward()
    assert g.grad is not None and g.grad.abs().sum() > 0


def test_last_layer_parameters_are_exactly_the_last_layer_of_this_head():
    student = head()
    teacher = copy.deepcopy(student).requires_grad_(False)
    returned = student.last_layer_parameters()
    by_id = {id(p): name for name, p in student.named_parameters()}
    assert {by_id[id(p)] for p in returned} == LAST and len(returned) == 2
    # not the teacher's (lightly#1586), not the MLP's
    assert not {id(p) for p in returned} & {id(p) for p in teacher.parameters()}
    assert not {id(p) for p in returned} & {id(p) for p in student.mlp.parameters()}

    # freezing them as DINO does in epoch 0 (gradients cancelled) trains the MLP but not the last layer
    before = {name: p.detach().clone() for name, p in student.named_parameters()}
    optimizer = torch.optim.SGD([p for p in student.parameters() if p.requires_grad], lr=0.5)
    student(torch.randn(6, IN)).logsumexp(dim=1).sum().backward()
    for p in returned:
        p.grad = None
    optimizer.step()
    for name, p in student.named_parameters():
        assert torch.equal(p, before[name]) == (name in LAST), name


def test_mlp_initialisation_follows_the_reference():
    model = DINOHead(384, out_dim=16, hidden_dim=256, bottleneck_dim=64)
    first = model.mlp[0]
    assert torch.equal(first.bias, torch.zeros_like(first.bias))
    assert first.weight.std().item() == pytest.approx(0.02, rel=0.05)


@pytest.mark.parametrize("name", ["in_dim", "out_dim", "hidden_dim", "bottleneck_dim", "num_layers"])
def test_bad_arguments(name):
    kwargs = {
        "in_dim": IN,
        "out_dim": OUT,
        "hidden_dim": HIDDEN,
        "bottleneck_dim": BOTTLENECK,
        "num_layers": 3,
    }
    kwargs[name] = 0
    with pytest.raises(ValueError, match=name):
        DINOHead(**kwargs)
