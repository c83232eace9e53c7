"""MAE's patch and masking operations, as pure functions over tensors (He et al. 2022, sec. 3).

Conventions:
    patches: ``[B, L, p * p * C]``, patches in row-major order, pixels within a patch as (row, col, channel).
    mask:    ``[B, L]`` float, **1 = masked (removed, to reconstruct), 0 = kept (visible)**.
    ids_restore: ``[B, L]``; gathering the shuffled sequence ``[kept, removed]`` with it restores
             the original patch order.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``[B, C, H, W]`` → ``[B, (H/p)(W/p), p * p * C]``."""
    b, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not divisible by the patch size {p}.")
    x = images.reshape(b, c, h // p, p, w // p, p)
    x = torch.einsum("bchpwq->bhwpqc", x)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(
    patches: torch.Tensor,
    patch_size: int,
    channels: int = 3,
    height: int | None = None,
    width: int | None = None,
) -> torch.Tensor:
    """``[B, L, p * p * C]`` → ``[B, C, H, W]``, the inverse of :func:`patchify`. Without ``height``
    and ``width`` the patch grid is square."""
    b, length, dim = patches.shape
    p = patch_size
    if dim != p * p * channels:
        raise ValueError(f"patch dimension {dim} is not patch_size^2 * channels = {p * p * channels}.")
    if height is None or width is None:
        side = round(length**0.5)
        if side * side != length:
            raise ValueError(f"{length} patches do not form a square grid: pass height and width.")
        gh = gw = side
    else:
        gh, gw = height // p, width // p
        if gh * gw != length:
            raise ValueError(f"{length} patches do not tile a {height}x{width} image with {p}-px patches.")
    x = patches.reshape(b, gh, gw, p, p, channels)
    x = torch.einsum("bhwpqc->bchpwq", x)
    return x.reshape(b, channels, gh * p, gw * p)


def num_kept(length: int, mask_ratio: float) -> int:
    """Patches kept per sample: ``round(length * (1 - mask_ratio))``, at least one."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must lie in [0, 1), got {mask_ratio}.")
    return max(1, round(length * (1 - mask_ratio)))


class Masked(NamedTuple):
    kept: torch.Tensor  # [B, K, D] the visible tokens, in shuffled order
    mask: torch.Tensor  # [B, L] 1 = masked, 0 = kept, in the original order
    ids_restore: torch.Tensor  # [B, L]
    ids_keep: torch.Tensor  # [B, K] original positions of the kept tokens


def random_masking(
    tokens: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None
) -> Masked:
    """Keep a uniformly random subset of ``round(L * (1 - mask_ratio))`` tokens per sample.

    Each sample draws its own noise, so samples get different masks. With ``generator`` (on the
    tokens' device) the masks are reproducible.
    """
    b, length, dim = tokens.shape
    keep = num_kept(length, mask_ratio)
    noise = torch.rand(b, length, device=tokens.device, generator=generator)
    ids_shuffle = noise.argsort(dim=1)  # ascending: the first `keep` are kept
    ids_restore = ids_shuffle.argsort(dim=1)
    ids_keep = ids_shuffle[:, :keep]
    kept = tokens.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
    mask = torch.ones(b, length, device=tokens.device, dtype=torch.float32)
    mask[:, :keep] = 0
    mask = mask.gather(1, ids_restore)
    return Masked(kept, mask, ids_restore, ids_keep)
