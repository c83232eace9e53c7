"""Encoders: :func:`create_encoder` around timm, pooling, and (for MAE) masking as pure functions."""

from selfsup.encoders.masking import Masked, num_kept, patchify, random_masking, unpatchify
from selfsup.encoders.vit import (
    check_patch_grid,
    create_encoder,
    data_config,
    default_pool,
    encode_visible,
    encoder_from_spec,
    encoder_spec,
    pooled_features,
)

__all__ = [
    "Masked",
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
