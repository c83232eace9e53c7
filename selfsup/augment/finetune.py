"""Segmentation augmentation on whole batches: the same random resized crop and flip applied to
images and their masks. (Classification fine-tuning uses ``CropFlipAugment``.)"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from selfsup.augment.batched import _apply, _norm, as_float
from selfsup.augment.crop_flip import CropFlipConfig
from selfsup.augment.params import sample_view_params
from selfsup.augment.resample import nearest_resample


class SegmentationAugment(nn.Module):
    """Images ``[B, 3, H, W]`` uint8 and masks ``[B, H, W]`` int64 → the same crop and flip applied to
    both (bilinear for images, nearest for masks, so labels are never blended); images normalised."""

    def __init__(
        self, size: int, mean: Sequence[float], std: Sequence[float], config: CropFlipConfig | None = None
    ) -> None:
        super().__init__()
        self.config = config or CropFlipConfig(crop_scale=(0.5, 1.0))
        self.size = size
        self.view = self.config.to_view(size)
        self.norm = _norm(mean, std)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if masks.shape != (images.shape[0], *images.shape[-2:]):
            raise ValueError(
                f"masks must be [B, H, W] matching images {tuple(images.shape)}, got {tuple(masks.shape)}."
            )
        x, bound = as_float(images)
        params = sample_view_params(x.shape[0], tuple(x.shape[-2:]), self.view)
        out = _apply(x, bound, params, self.view, self.norm, torch.float32, torch.float32)
        moved = params.to(masks.device)  # pinned, non-blocking
        return out, nearest_resample(masks, moved.boxes, moved.flip, self.size)
