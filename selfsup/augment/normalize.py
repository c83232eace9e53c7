"""uint8 image batches → normalised float batches, with the encoder's mean and std."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """``[B, C, H, W]`` uint8 (0..255) or float (0..1) images → ``(x / 255 - mean) / std`` as float32.

    ``mean`` and ``std`` are per channel, in the 0..1 scale of timm's ``pretrained_cfg``.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean and std need one value per channel and std > 0, got {mean} and {std}.")
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (to_unit_float(images) - self.mean) / self.std


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 → float32 0..1; float input is returned as float32 unchanged."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise TypeError(f"expected uint8 or float images, got {images.dtype}.")
    return images.float()
