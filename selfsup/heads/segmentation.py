"""Semantic segmentation head: a light per-patch decoder upsampled to pixel logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SegmentationHead(nn.Module):
    """``[B, D, h, w]`` per-patch features → ``[B, num_classes, H, W]`` pixel logits.

    BatchNorm, a 3x3 convolution with GELU that mixes neighbouring patches, a 1x1 classifier per
    patch, then bilinear upsampling to the image size (in the spirit of Segmenter's and SETR's
    light decoders).
    """

    def __init__(self, in_dim: int, num_classes: int, hidden_dim: int = 256) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        self.num_classes = num_classes
        self.norm = nn.BatchNorm2d(in_dim)
        self.mix = nn.Sequential(nn.Conv2d(in_dim, hidden_dim, 3, padding=1), nn.GELU())
        self.classify = nn.Conv2d(hidden_dim, num_classes, 1)

    def forward(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        logits = self.classify(self.mix(self.norm(features)))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
