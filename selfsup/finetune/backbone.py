"""The two feature views a fine-tune's task head reads from its backbone (pooled, dense). The
backbone itself comes from :func:`selfsup.load.load_encoder` (any source)."""

from __future__ import annotations

import torch
from torch import nn


def pool_output(backbone: nn.Module, out: torch.Tensor, num_prefix: int, pool: str) -> torch.Tensor:
    """Pooled ``[B, D]`` features from the backbone's output: a ViT's tokens ``[B, N, D]`` (``token``:
    the class token; ``avg``: the mean of the tokens after the first ``num_prefix``), or a CNN's
    feature map ``[B, C, h, w]`` (timm's own pooling)."""
    if out.ndim == 4:
        return backbone.forward_head(out, pre_logits=True)
    if pool == "token":
        return out[:, 0]
    return out[:, num_prefix:].mean(dim=1)


def dense_output(out: torch.Tensor, num_prefix: int, grid: tuple[int, int] | None) -> torch.Tensor:
    """``[B, D, h, w]`` per-location features: a CNN's map as is; a ViT's patch tokens on their grid."""
    if out.ndim == 4:
        return out
    patches = out[:, num_prefix:]
    b, length, d = patches.shape
    gh, gw = grid
    if gh * gw != length:
        raise ValueError(f"{length} patch tokens do not fill the {gh}x{gw} patch grid.")
    return patches.transpose(1, 2).reshape(b, d, gh, gw)
