"""Encoders: :func:`create_encoder` around timm, pooling, and (for MAE) masking as pure functions."""

from selfsup.encoders.masking import Masked, num_kept, patchify, random_masking, unpatchify
from selfsup.encoders.pos_embed import fix_sincos_pos_embed, sincos_2d
from selfsup.encoders.vit import (
    NotAVisionTransformer,
    Pool,
    check_patch_grid,
    create_encoder,
    data_config,
    default_pool,
    embed_tokens,
    encode_kept,
    encode_visible,
    is_vit,
    is_vit_name,
    pool_kwargs,
    pooled_features,
    run_blocks,
)

__all__ = [
    "fix_sincos_pos_embed",
    "sincos_2d",
    "Masked",
    "NotAVisionTransformer",
    "Pool",
    "embed_tokens",
    "encode_kept",
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
    "pooled_features",
    "is_vit",
    "is_vit_name",
    "pool_kwargs",
]
