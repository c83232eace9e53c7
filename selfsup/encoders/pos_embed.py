"""Fixed 2-D sine-cosine position embeddings (Vaswani et al. 2017, extended to 2-D as in MoCo v3 and
MAE). MAE's encoder and decoder both use this fixed table rather than learned embeddings (He et al.
2022; facebookresearch/mae ``util/pos_embed.py``, ``get_2d_sincos_pos_embed``).

Layout, as in the MAE reference: positions in row-major order (row ``i``, column ``j`` at index
``i * W + j``); the first half of the channels encodes the column index and the second half the row
index; each half is ``[sin(p * w_k), cos(p * w_k)]`` with ``w_k = 10000 ** (-k / (D / 4))``,
``k = 0 .. D/4 - 1``. Prefix tokens (class, registers) get zeros.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer


def _sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """``[M]`` positions → ``[M, dim]``: ``[sin(p w), cos(p w)]``."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.double()[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(grid_h: int, grid_w: int, dim: int, num_prefix: int = 0) -> torch.Tensor:
    """``[num_prefix + grid_h * grid_w, dim]`` float32 table (see the module docstring)."""
    if dim % 4:
        raise ValueError(f"a 2-D sine-cosine embedding needs a width divisible by 4, got {dim}.")
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    table = torch.cat([_sincos_1d(dim // 2, cols.reshape(-1)), _sincos_1d(dim // 2, rows.reshape(-1))], dim=1)
    return torch.cat([torch.zeros(num_prefix, dim, dtype=table.dtype), table]).float()


@torch.no_grad()
def fix_sincos_pos_embed(encoder: VisionTransformer) -> None:
    """Replace a timm ViT's learned position embedding by the fixed sine-cosine table, frozen
    (``requires_grad=False``, so no optimiser touches it). The parameter keeps its name and shape,
    so exports still load in plain timm."""
    if encoder.pos_embed is None or getattr(encoder, "dynamic_img_size", False):
        raise ValueError("a fixed sine-cosine embedding needs a ViT with pos_embed and no dynamic_img_size.")
    grid_h, grid_w = encoder.patch_embed.grid_size
    prefix = 0 if encoder.no_embed_class else encoder.num_prefix_tokens
    table = sincos_2d(grid_h, grid_w, encoder.embed_dim, prefix)
    if tuple(encoder.pos_embed.shape[1:]) != tuple(table.shape):
        raise ValueError(
            f"pos_embed has shape {tuple(encoder.pos_embed.shape)}, the table {tuple(table.shape)}: "
            "unsupported ViT layout."
        )
    encoder.pos_embed.copy_(table.unsqueeze(0))
    encoder.pos_embed.requires_grad_(False)
