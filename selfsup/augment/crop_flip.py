"""Random resized crop and horizontal flip on whole batches: MAE's pretraining augmentation, and
classification fine-tuning's (mixup and cutmix are the fine-tune module's)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from selfsup.augment.batched import MultiViewAugment
from selfsup.augment.views import ViewConfig

RESAMPLE = {"BILINEAR": "bilinear", "BICUBIC": "bicubic"}


@dataclass(frozen=True)
class CropFlipConfig:
    """Random resized crop (area ``crop_scale`` of the image, aspect ``crop_ratio``) and flip.

    Defaults are DeiT / MAE fine-tuning's (scale 0.08 to 1); MAE pretraining uses 0.2 to 1 (He et al.
    2022), its default in ``selfsup.MAE``.
    """

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_prob: float = 0.5

    def __post_init__(self) -> None:
        low, high = self.crop_scale
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}.")
        if not 0.0 <= self.hflip_prob <= 1.0:
            raise ValueError(f"hflip_prob must lie in [0, 1], got {self.hflip_prob}.")

    def to_view(self, size: int, interpolation: str = "bilinear") -> ViewConfig:
        """The :class:`ViewConfig` of this crop and flip at output side ``size``: no colour, blur
        or solarize."""
        return ViewConfig(
            size=size,
            crop_scale=self.crop_scale,
            crop_ratio=self.crop_ratio,
            hflip_prob=self.hflip_prob,
            jitter_prob=0.0,
            grayscale_prob=0.0,
            blur_prob=0.0,
            solarize_prob=0.0,
            interpolation=interpolation,
        )


class CropFlipAugment(nn.Module):
    """``[B, 3, H, W]`` uint8 → one ``[B, 3, size, size]`` float32 view: cropped, flipped, normalised,
    with per-sample parameters. ``resample`` is ``BILINEAR`` or ``BICUBIC`` (antialiased)."""

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        config: CropFlipConfig | None = None,
        resample: str = "BILINEAR",
    ) -> None:
        super().__init__()
        if resample.upper() not in RESAMPLE:
            raise ValueError(f"resample must be one of {sorted(RESAMPLE)}, got {resample!r}.")
        self.config = config or CropFlipConfig()
        self.size = size
        self.augment = MultiViewAugment([self.config.to_view(size, RESAMPLE[resample.upper()])], mean, std)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.augment(images)[0]
