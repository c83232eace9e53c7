"""MAE's augmentation: random resized crop and horizontal flip, on whole batches (Kornia)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import kornia.augmentation as K
import torch
from torch import nn

from selfsup.augment.normalize import Normalize, to_unit_float


@dataclass(frozen=True)
class MAEViewConfig:
    """MAE pretraining augmentation (He et al. 2022: crop scale 0.2 to 1, flip, nothing else)."""

    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_prob: float = 0.5

    def __post_init__(self) -> None:
        low, high = self.crop_scale
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}.")
        if not 0.0 <= self.hflip_prob <= 1.0:
            raise ValueError(f"hflip_prob must lie in [0, 1], got {self.hflip_prob}.")


class MAEAugment(nn.Module):
    """``[B, 3, H, W]`` uint8 → one ``[B, 3, size, size]`` float32 view, normalised."""

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        config: MAEViewConfig | None = None,
    ) -> None:
        super().__init__()
        self.config = config or MAEViewConfig()
        self.view = nn.Sequential(
            K.RandomResizedCrop((size, size), scale=self.config.crop_scale, ratio=self.config.crop_ratio,
                                resample="BICUBIC"),
            K.RandomHorizontalFlip(p=self.config.hflip_prob),
        )
        self.normalize = Normalize(mean, std)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.view(to_unit_float(images)))
