import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from selfsup.encoders import (
    create_encoder,
    data_config,
    default_pool,
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


def test_default_pool():
    encoder = create_encoder("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1)
    assert default_pool(encoder) == "token"
    assert default_pool(encoder, "avg") == "avg"  # a method's declared pooling
    gap = create_encoder(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, class_token=False, global_pool="avg"
    )
    assert default_pool(gap) == "avg"
    with pytest.raises(ValueError, match="needs a class token"):
        pooled_features(gap, torch.randn(1, 3, 32, 32), "token")


def test_last_blocks_concatenates_the_class_tokens_of_the_last_blocks_through_the_final_norm():
    """DINO's linear evaluation features: a naive pass block by block, each output through the final
    norm, equals ``pooled_features(..., last_blocks=n)``."""
    encoder = create_encoder("vit_tiny_patch16_224", img_size=16, patch_size=4, depth=3).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        tokens = encoder._pos_embed(encoder.patch_embed(x))
        tokens = encoder.norm_pre(tokens)
        outputs = []
        for block in encoder.blocks:
            tokens = block(tokens)
            outputs.append(encoder.norm(tokens))
        expected_token = torch.cat([o[:, 0] for o in outputs[-2:]], dim=-1)
        expected_avg = torch.cat([o[:, 1:].mean(1) for o in outputs[-2:]], dim=-1)
        torch.testing.assert_close(pooled_features(encoder, x, "token", last_blocks=2), expected_token)
        torch.testing.assert_close(pooled_features(encoder, x, "avg", last_blocks=2), expected_avg)
        assert torch.equal(pooled_features(encoder, x, "token", last_blocks=1), outputs[-1][:, 0])
    with pytest.raises(ValueError, match="last_blocks must lie in"):
        pooled_features(encoder, x, "token", last_blocks=4)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"reg_tokens": 4},
        {"no_embed_class": True, "reg_tokens": 2},
        {"class_token": False, "global_pool": "avg"},
        {"dynamic_img_size": True},
    ],
)
def test_embedded_tokens_through_the_blocks_equal_timms_forward(kwargs):
    """``embed_tokens`` + ``run_blocks`` (what MAE, I-JEPA and prompt tuning run on a subset of the
    tokens) is timm's own ``forward_features`` when every token is kept: class and register tokens,
    position embeddings with and without an entry for the prefix, and resampled for another size."""
    from selfsup.encoders import embed_tokens, run_blocks

    torch.manual_seed(0)
    encoder = create_encoder("vit_tiny_patch16_224", img_size=16, patch_size=4, depth=2, **kwargs).eval()
    size = 24 if kwargs.get("dynamic_img_size") else 16
    images = torch.randn(2, 3, size, size)
    prefix, patches = embed_tokens(encoder, images)
    assert patches.shape[1] == (size // 4) ** 2 and (prefix is None) == (encoder.num_prefix_tokens == 0)
    tokens = patches if prefix is None else torch.cat([prefix, patches], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(
            run_blocks(encoder, tokens), encoder.forward_features(images), rtol=0, atol=1e-6
        )
