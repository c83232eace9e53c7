"""Fine-tuning augmentation on whole batches (Kornia): random resized crop and flip for
classification; the same, applied jointly to images and masks, for segmentation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import kornia.augmentation as K
import torch
from torch import nn

from selfsup.augment.normalize import Normalize, to_unit_float


@dataclass(frozen=True)
class FineTuneViewConfig:
    """Random resized crop (DeiT / MAE fine-tuning: scale 0.08 to 1) and horizontal flip.
    Mixup and cutmix are the fine-tune module's (timm's implementation, on the batch)."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_prob: float = 0.5

    def __post_init__(self) -> None:
        low, high = self.crop_scale
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}.")
        if not 0.0 <= self.hflip_prob <= 1.0:
            raise ValueError(f"hflip_prob must lie in [0, 1], got {self.hflip_prob}.")


class ClassificationAugment(nn.Module):
    """``[B, 3, H, W]`` uint8 → ``[B, 3, size, size]`` float32, cropped, flipped, normalised."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float],
                 config: FineTuneViewConfig | None = None) -> None:
        super().__init__()
        self.config = config or FineTuneViewConfig()
        self.view = nn.Sequential(
            K.RandomResizedCrop((size, size), scale=self.config.crop_scale, ratio=self.config.crop_ratio),
            K.RandomHorizontalFlip(p=self.config.hflip_prob),
        )
        self.normalize = Normalize(mean, std)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.view(to_unit_float(images)))


class SegmentationAugment(nn.Module):
    """Images ``[B, 3, H, W]`` uint8 and masks ``[B, H, W]`` int64 → the same crop and flip applied to
    both (bilinear for images, nearest for masks); images normalised."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float],
                 config: FineTuneViewConfig | None = None) -> None:
        super().__init__()
        self.config = config or FineTuneViewConfig(crop_scale=(0.5, 1.0))
        self.view = K.AugmentationSequential(
            K.RandomResizedCrop((size, size), scale=self.config.crop_scale, ratio=self.config.crop_ratio),
            K.RandomHorizontalFlip(p=self.config.hflip_prob),
            data_keys=["input", "mask"],
        )
        self.normalize = Normalize(mean, std)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, m = self.view(to_unit_float(images), masks.unsqueeze(1).float())
        return self.normalize(x), m.squeeze(1).round().long()
