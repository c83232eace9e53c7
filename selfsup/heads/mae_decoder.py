"""MAE's lightweight decoder (He et al. 2022, sec. 3): visible tokens + mask tokens, a fixed 2-D
sine-cosine position embedding, a few transformer blocks, and a linear pixel predictor."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn

from selfsup.encoders.pos_embed import sincos_2d

# Default decoder (depth, width) by encoder width. The paper's 8 x 512 decoder on all L tokens costs
# about 4 * 8 * 512^2 / (depth_enc * width_enc^2) times the encoder on L/4 tokens (per-token weight
# FLOPs): 1.2x for ViT-B (12 x 768), but 19x for ViT-Ti (12 x 192) and 4.7x for ViT-S (12 x 384).
# The defaults below keep the decoder at about 0.6x of the encoder for Tiny and Small and follow
# the paper from Base up; BENCHMARKS.md has the measured step-time ratios.
DECODER_DEFAULTS: dict[int, tuple[int, int]] = {192: (4, 128), 384: (4, 256)}
PAPER_DECODER = (8, 512)


def default_decoder(encoder_dim: int) -> tuple[int, int]:
    """``(depth, width)`` for an encoder of width ``encoder_dim``: the smallest table entry that is
    at least as wide, else the paper's 8 x 512."""
    for width in sorted(DECODER_DEFAULTS):
        if encoder_dim <= width:
            return DECODER_DEFAULTS[width]
    return PAPER_DECODER


class MAEDecoder(nn.Module):
    """``(encoder tokens [B, P + K, D_enc], ids_restore [B, L])`` → pixel predictions ``[B, L, patch_dim]``.

    ``P`` prefix tokens (class / register) come first and are dropped from the output; ``K`` visible
    tokens follow in shuffled order; the ``L - K`` missing positions get a shared learned mask token.

    Args:
        grid_size: patch grid ``(H / p, W / p)``.
        encoder_dim: width of the encoder's tokens.
        patch_dim: values per patch to predict (``p * p * channels``).
        dim, depth, num_heads, mlp_ratio: the decoder transformer.
        num_prefix_tokens: prefix tokens at the start of the encoder's output.
    """

    def __init__(
        self,
        grid_size: tuple[int, int],
        encoder_dim: int,
        patch_dim: int,
        dim: int = 512,
        depth: int = 8,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_prefix_tokens: int = 1,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"decoder width {dim} is not divisible by its {num_heads} heads.")
        if dim % 4:
            raise ValueError(
                f"decoder width {dim} must be a multiple of 4 for the 2-D sine-cosine embedding."
            )
        self.grid_size = tuple(grid_size)
        self.num_prefix_tokens = num_prefix_tokens
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        pos = sincos_2d(*self.grid_size, dim, num_prefix_tokens).unsqueeze(
            0
        )  # fixed, zeros for prefix tokens
        self.register_buffer("pos_embed", pos, persistent=False)
        self.blocks = nn.Sequential(
            *[Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)
        self.predict = nn.Linear(dim, patch_dim)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(_init_weights)

    def forward(self, tokens: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        prefix, visible = x[:, : self.num_prefix_tokens], x[:, self.num_prefix_tokens :]
        b, length = ids_restore.shape
        missing = self.mask_token.expand(b, length - visible.shape[1], -1)
        full = torch.cat([visible, missing], dim=1)
        full = full.gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, full.shape[-1]))  # original order
        x = torch.cat([prefix, full], dim=1) + self.pos_embed.to(x.dtype)
        x = self.norm(self.blocks(x))
        return self.predict(x[:, self.num_prefix_tokens :])


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
