"""The last block's class-token attention of a timm ViT, per head, and DINO's mass threshold.

Followed: facebookresearch/dino ``visualize_attention.py`` (the class token's attention over the
patches of the last block, per head, and the threshold that keeps the most-attended patches holding
a given share of the attention mass) and ``vision_transformer.py`` (``get_last_selfattention``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def class_token_attention(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Normalised images ``[B, 3, H, W]`` → the last block's attention of the class token over the
    patch tokens, per head: ``[B, heads, h, w]`` on the patch grid (``h = H // patch``; register
    tokens and the class token itself are left out, so a row sums to at most 1).

    timm's ``Attention`` runs fused SDPA, which never forms the attention matrix, so the class
    token's row ``softmax(q_cls k^T / sqrt(d))`` is recomputed from the last block's ``qkv`` (and its
    q/k norms) on the block's normalised input. That input is taken by a forward hook on
    ``blocks[-1].norm1`` during timm's public ``forward_features``, and the row is computed inside
    the hook, i.e. inside the block's forward: where FSDP has gathered the block's parameters.

    The encoder runs in eval mode (no dropout, no drop path) and is put back as it was. Works with
    ``dynamic_img_size`` (any image size that is a multiple of the patch size) and non-square images.

    Raises:
        ValueError: the encoder is not a timm ViT with a class token and timm's standard attention,
            or the images do not fit it.
    """
    block = _last_block(encoder)
    attn = block.attn
    if images.ndim != 4:
        raise ValueError(f"images must be a [B, C, H, W] batch, got shape {tuple(images.shape)}.")
    grid = _patch_grid(encoder, images.shape[-2:])
    prefix = int(encoder.num_prefix_tokens)
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: tuple, x: torch.Tensor) -> None:
        b, n, _ = x.shape
        qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim)
        q = attn.q_norm(qkv[:, :1, 0].transpose(1, 2))  # [B, heads, 1, d]: the class token's query
        k = attn.k_norm(qkv[:, :, 1].transpose(1, 2))  # [B, heads, N, d]
        scores = (q.float() * attn.scale) @ k.float().transpose(-2, -1)  # [B, heads, 1, N]
        captured.append(scores.softmax(dim=-1)[:, :, 0, prefix:])

    was_training = encoder.training
    encoder.eval()
    handle = block.norm1.register_forward_hook(hook)
    try:
        with torch.no_grad():
            encoder.forward_features(images.to(_param_dtype(encoder)))
    finally:
        handle.remove()
        encoder.train(was_training)
    attention = captured[-1]
    if attention.shape[-1] != grid[0] * grid[1]:
        raise ValueError(
            f"the last block sees {attention.shape[-1]} patch tokens but the patch grid of "
            f"{tuple(images.shape[-2:])}-px images is {grid[0]}x{grid[1]}."
        )
    return attention.reshape(*attention.shape[:2], *grid)


def mass_threshold(attention: torch.Tensor, mass: float = 0.6) -> torch.Tensor:
    """``[..., h, w]`` attention → a bool mask of the same shape keeping, in each map, the
    most-attended patches whose attention adds up to ``mass`` of the map's total (DINO's
    ``--threshold``: sort ascending, keep where the normalised cumulative sum exceeds ``1 - mass``)."""
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must lie in (0, 1] (DINO shows 0.6), got {mass!r}.")
    flat = attention.flatten(-2)
    values, order = flat.sort(dim=-1)
    cumulative = (values / values.sum(dim=-1, keepdim=True)).cumsum(dim=-1)
    keep_sorted = cumulative > 1.0 - mass
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return keep.view_as(attention)


# --- figures -----------------------------------------------------------------------------------------


def _last_block(encoder: nn.Module) -> nn.Module:
    blocks = getattr(encoder, "blocks", None)
    if blocks is None or len(blocks) == 0 or not hasattr(encoder, "patch_embed"):
        raise ValueError(
            f"attention maps need a timm VisionTransformer (with blocks and a patch_embed), got {type(encoder).__name__}."
        )
    if getattr(encoder, "cls_token", None) is None:
        raise ValueError(
            "attention maps show the class token's attention, but this ViT has no class token "
            "(class_token=False): train it with a class token to use them."
        )
    block = blocks[-1]
    attn = getattr(block, "attn", None)
    if not hasattr(block, "norm1") or not all(
        hasattr(attn, a) for a in ("qkv", "num_heads", "head_dim", "scale", "q_norm", "k_norm")
    ):
        raise ValueError(
            f"the last block's attention is a {type(attn).__name__}, not timm's standard Attention "
            "(qkv, q/k norms): attention maps support timm's vit_* / deit_* models."
        )
    return block


def _patch_grid(encoder: nn.Module, size: Sequence[int]) -> tuple[int, int]:
    patch_embed = encoder.patch_embed
    height, width = int(size[0]), int(size[1])
    if getattr(encoder, "dynamic_img_size", False):
        grid = patch_embed.dynamic_feat_size((height, width))
        return int(grid[0]), int(grid[1])
    expected = tuple(int(s) for s in patch_embed.img_size)
    if (height, width) != expected:
        raise ValueError(
            f"images are {height}x{width} px but the encoder takes {expected[0]}x{expected[1]}: resize "
            "them, or build the encoder with dynamic_img_size=True (or call its set_input_size)."
        )
    return int(patch_embed.grid_size[0]), int(patch_embed.grid_size[1])


def _param_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype
