"""Segmentation augmentation on whole batches (Kornia): the same random resized crop and flip applied
to images and their masks. (Classification fine-tuning uses ``CropFlipAugment``.)"""

from __future__ import annotations

from collections.abc import Sequence

import kornia.augmentation as K
import torch
from torch import nn

from selfsup.augment.crop_flip import CropFlipConfig
from selfsup.augment.normalize import Normalize, to_unit_float


class SegmentationAugment(nn.Module):
    """Images ``[B, 3, H, W]`` uint8 and masks ``[B, H, W]`` int64 → the same crop and flip applied to
    both (bilinear for images, nearest for masks); images normalised."""

    def __init__(
        self, size: int, mean: Sequence[float], std: Sequence[float], config: CropFlipConfig | None = None
    ) -> None:
        super().__init__()
        self.config = config or CropFlipConfig(crop_scale=(0.5, 1.0))
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
