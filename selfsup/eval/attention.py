"""The last block's class-token attention, per head, drawn over the image: DINO's figure (Caron et
al., 2021, fig. 1 and 3), for any selfsup ViT (DINO, MoCo v3, SimCLR, MAE).

Followed: facebookresearch/dino ``visualize_attention.py`` (the class token's attention over the
patches of the last block, per head, upsampled to the image with nearest neighbours, and the
threshold that keeps the most-attended patches holding a given share of the attention mass) and
``vision_transformer.py`` (``get_last_selfattention``).

The attention itself is in ``class_attention``, the PNGs in ``attention_figure`` and the training
callback in ``attention_callback`` (all importable from here); the ``selfsup attention`` command is
:mod:`selfsup.commands.attention`.
"""

from __future__ import annotations

from selfsup.eval.attention_callback import AttentionMaps
from selfsup.eval.attention_figure import (
    DPI,
    MIN_PANEL,
    UNREADABLE_FIX,
    attention_figure,
    save_attention_maps,
    write_attention_maps,
)
from selfsup.eval.class_attention import class_token_attention, mass_threshold

__all__ = [
    "DPI",
    "MIN_PANEL",
    "UNREADABLE_FIX",
    "AttentionMaps",
    "attention_figure",
    "class_token_attention",
    "mass_threshold",
    "save_attention_maps",
    "write_attention_maps",
]
