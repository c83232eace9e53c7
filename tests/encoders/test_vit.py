import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from selfsup.encoders import (
    create_encoder,
    data_config,
    default_pool,
    encoder_from_spec,
    encoder_spec,
    pooled_features,
)

CASES = [
    # name, img_size, patch_size, extra kwargs (depth cut to keep the test fast), expected dim
    ("vit_tiny_patch16_224", 32, 4, {"depth": 2}, 192),
    ("vit_tiny_patch16_224", 16, 8, {"depth": 1}, 192),
    ("vit_small_patch16_224", 48, 16, {"depth": 1}, 384),
    ("deit_tiny_patch16_224", 24, 8, {"depth": 1}, 192),
    ("vit_base_patch16_224", 32, 16, {"depth": 1}, 768),
]


@pytest.mark.parametrize(("name", "size", "patch", "kwargs", "dim"), CASES)
def test_shapes_no_nan_and_every_parameter_gets_a_gradient(name, size, patch, kwargs, dim):
    encoder = create_encoder(name, img_size=size, patch_size=patch, **kwargs)
    assert isinstance(encoder, VisionTransformer)
    x = torch.randn(3, 3, size, size)
    tokens = encoder.forward_features(x)
    assert tokens.shape == (3, 1 + (size // patch) ** 2, dim)
    for pool in ("token", "avg"):
        feats = pooled_features(encoder, x, pool)
        assert feats.shape == (3, dim)
        assert torch.isfinite(feats).all()
    encoder(x).square().mean().backward()  # num_classes=0: forward returns pooled features
    missing = [
        n
        for n, p in encoder.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert missing == []


def test_preprocessing_facts_come_from_timm_pretrained_cfg():
    encoder = create_encoder("vit_tiny_patch16_224", img_size=32, patch_size=4, depth=1)
    facts = data_config(encoder)
    assert facts["mean"] == tuple(encoder.pretrained_cfg["mean"])
    assert facts["std"] == tuple(encoder.pretrained_cfg["std"])
    assert facts["input_size"] == (3, 32, 32)
    assert tuple(encoder.pretrained_cfg["input_size"]) == (3, 32, 32)  # kept truthful for timm's own tools
    imagenet = create_encoder("vit_small_patch16_224", depth=1)
    assert data_config(imagenet)["input_size"] == (3, 224, 224)


@pytest.mark.parametrize(("size", "patch"), [(30, 4), (32, 5), (224, 14 + 1)])
def test_image_size_not_divisible_by_patch_size_is_a_value_error(size, patch):
    with pytest.raises(
        ValueError, match=rf"{size}x{size} is not divisible by the patch size {patch}x{patch}"
    ):
        create_encoder("vit_tiny_patch16_224", img_size=size, patch_size=patch, depth=1)


def test_unknown_name_and_non_vit_are_clear_errors():
    with pytest.raises(
        ValueError, match="Unknown timm model name 'vit_tiny_patch16_2244'.*vit_tiny_patch16_224"
    ):
        create_encoder("vit_tiny_patch16_2244")
    with pytest.raises(ValueError, match="needs a timm VisionTransformer"):
        create_encoder("resnet18")
    with pytest.raises(ValueError, match="without classifier"):
        create_encoder("vit_tiny_patch16_224", num_classes=10)


def test_spec_rebuilds_the_same_architecture():
    encoder = create_encoder("vit_tiny_patch16_224", img_size=32, patch_size=4, depth=3, drop_path_rate=0.1)
    spec = encoder_spec(encoder)
    assert spec["name"] == "vit_tiny_patch16_224" and spec["img_size"] == 32 and spec["patch_size"] == 4
    assert spec["model_args"]["depth"] == 3
    rebuilt = encoder_from_spec(spec)
    assert [(n, p.shape) for n, p in rebuilt.named_parameters()] == [
        (n, p.shape) for n, p in encoder.named_parameters()
    ]


def test_default_pool():
    encoder = create_encoder("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1)
    assert default_pool(encoder) == "token"
    assert default_pool(encoder, "mae") == "avg"
    gap = create_encoder(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, class_token=False, global_pool="avg"
    )
    assert default_pool(gap) == "avg"
    with pytest.raises(ValueError, match="needs a class token"):
        pooled_features(gap, torch.randn(1, 3, 32, 32), "token")
