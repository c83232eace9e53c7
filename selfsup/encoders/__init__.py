"""Encoders: :func:`create_encoder` around timm, pooling, and (for MAE) masking as pure functions."""

from selfsup.encoders.vit import (
    check_patch_grid,
    create_encoder,
    data_config,
    default_pool,
    encoder_from_spec,
    encoder_spec,
    pooled_features,
)

__all__ = [
    "check_patch_grid",
    "create_encoder",
    "data_config",
    "default_pool",
    "encoder_from_spec",
    "encoder_spec",
    "pooled_features",
]
