"""Encoders: :func:`create_encoder` around timm, pooling, and (for MAE) masking as pure functions."""

from selfsup.encoders.masking import Masked, num_kept, patchify, random_masking, unpatchify
from selfsup.encoders.vit import (
    NotAVisionTransformer,
    check_patch_grid,
    create_encoder,
    data_config,
    default_pool,
    embed_tokens,
    encode_visible,
    encoder_from_spec,
    encoder_spec,
    pooled_features,
    run_blocks,
)

__all__ = [
    "Masked",
    "NotAVisionTransformer",
    "embed_tokens",
    "run_blocks",
    "encode_visible",
    "num_kept",
    "patchify",
    "random_masking",
    "unpatchify",
    "check_patch_grid",
    "create_encoder",
    "data_config",
    "default_pool",
    "encoder_from_spec",
    "encoder_spec",
    "pooled_features",
]
