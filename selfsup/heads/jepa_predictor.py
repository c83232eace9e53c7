"""I-JEPA's predictor (Assran et al. 2023, sec. 3): a narrow Vision Transformer that reads the
context encoder's tokens and, for each target block, mask tokens placed at the block's positions,
and predicts the target encoder's features there.

Followed: facebookresearch/ijepa ``src/models/vision_transformer.py`` (``VisionTransformerPredictor``,
``vit_predictor``) and ``src/helper.py`` (``init_model``): a linear map to the predictor's width, a
learned mask token, the fixed 2-D sine-cosine position table added to the context tokens and to the
mask tokens, pre-norm blocks (LayerNorm eps 1e-6, qkv bias, MLP ratio 4, stochastic depth rising
linearly to ``drop_path_rate``), a final norm and a linear map back to the encoder's width. Each
target block is predicted in its own sequence (context + that block's mask tokens), so blocks do not
see each other. Weights: truncated normal (std 0.02) for every linear layer and the mask token, zero
biases: ``init_model`` re-initialises the predictor this way after construction, which undoes the
constructor's per-depth rescaling, so the rescaling is not done here.

Departures: timm's ``Block`` instead of the reference's own (the same layers); the position table is
``selfsup.encoders.sincos_2d`` (the reference's layout: first half columns, second half rows) as a
buffer, and works on non-square grids.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from selfsup.encoders.pos_embed import sincos_2d


class JEPAPredictor(nn.Module):
    """``(context tokens [B, Kc, D], context_ids [B, Kc], target_ids [B, M, Kt])`` → predicted
    target features ``[B, M, Kt, D]``.

    The ids are patch indices in row-major order on the encoder's patch grid. The output reads only
    the given context tokens and the positions in ``context_ids`` and ``target_ids``.

    Args:
        grid_size: the encoder's patch grid ``(H, W)``.
        encoder_dim: width of the encoder's tokens (in and out).
        dim, depth, num_heads, mlp_ratio: the predictor transformer (the reference: width 384,
            depth 12 for ViT-H, the encoder's number of heads).
        drop_path_rate: stochastic depth of the last block (0 in the reference's configs).
        init_std: standard deviation of the truncated normal initialisation.
    """

    def __init__(
        self,
        grid_size: tuple[int, int],
        encoder_dim: int,
        dim: int = 384,
        depth: int = 6,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"predictor width {dim} is not divisible by its {num_heads} heads.")
        if dim % 4:
            raise ValueError(f"predictor width {dim} must be a multiple of 4 for the 2-D sine-cosine table.")
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_2d(*self.grid_size, dim), persistent=False)  # [L, dim]
        norm = partial(nn.LayerNorm, eps=1e-6)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.Sequential(
            *[Block(dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=r, norm_layer=norm) for r in rates]
        )
        self.norm = norm(dim)
        self.project = nn.Linear(dim, encoder_dim)
        trunc_normal_(self.mask_token, std=init_std)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=init_std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(
        self, context: torch.Tensor, context_ids: torch.Tensor, target_ids: torch.Tensor
    ) -> torch.Tensor:
        b, kc = context_ids.shape
        _, m, kt = target_ids.shape
        if context.shape[:2] != (b, kc) or target_ids.shape[0] != b:
            raise ValueError(
                f"context tokens {tuple(context.shape)}, context_ids {tuple(context_ids.shape)} and "
                f"target_ids {tuple(target_ids.shape)} disagree: pass [B, Kc, D], [B, Kc] and [B, M, Kt]."
            )
        pos = self.pos_embed.to(context.dtype)
        x = self.embed(context) + pos[context_ids]  # [B, Kc, dim]
        queries = self.mask_token + pos[target_ids]  # [B, M, Kt, dim]
        # one sequence per (image, target block): the context, then that block's mask tokens
        x = x.unsqueeze(1).expand(-1, m, -1, -1)
        x = torch.cat([x, queries.to(x.dtype)], dim=2).flatten(0, 1)  # [B * M, Kc + Kt, dim]
        x = self.norm(self.blocks(x))[:, kc:]
        return self.project(x).unflatten(0, (b, m))
