"""SimCLR's two-view augmentation: its view parameters, and the two views of a batch made by the
batched op (``selfsup.augment.batched``) on whatever device the batch is on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from selfsup.augment.batched import MultiViewAugment
from selfsup.augment.views import ViewConfig


@dataclass(frozen=True)
class SimCLRViewConfig:
    """Parameters of one SimCLR view. Defaults are the SimCLR paper's ImageNet values (Chen et al.
    2020, appendix A); for 32-px data the paper used ``jitter_strength=0.5`` and no blur.

    Attributes:
        crop_scale: area range of the random resized crop, as a fraction of the image.
        crop_ratio: aspect-ratio range of the crop.
        hflip_prob: probability of a horizontal flip.
        jitter_strength: colour distortion strength ``s``: brightness, contrast and saturation
            jitter ``0.8 s``, hue ``0.2 s``.
        jitter_prob: probability of applying colour jitter (0.8 in the paper).
        grayscale_prob: probability of converting to grayscale (0.2 in the paper).
        blur_prob: probability of Gaussian blur (0.5); the kernel is 10% of the image side, and blur
            is skipped for images under ``blur_min_size`` pixels, where it destroys the content.
        blur_sigma: range of the blur's standard deviation in pixels.
        blur_min_size: smallest image side that gets blur.
        solarize_prob: probability of solarisation at threshold 0.5 (BYOL's; 0 in SimCLR).
    """

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_prob: float = 0.5
    jitter_strength: float = 1.0
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_min_size: int = 64
    solarize_prob: float = 0.0

    def __post_init__(self) -> None:
        for name in ("hflip_prob", "jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability and must lie in [0, 1], got {value}.")
        low, high = self.crop_scale
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}.")
        if not 0.0 <= self.jitter_strength <= 2.5:
            raise ValueError(
                f"jitter_strength must lie in [0, 2.5] (hue jitter 0.2 s is at most half the colour circle), "
                f"got {self.jitter_strength}."
            )

    def to_view(self, size: int) -> ViewConfig:
        """The :class:`ViewConfig` of this view at output side ``size`` (no blur below
        ``blur_min_size``)."""
        s = self.jitter_strength
        return ViewConfig(
            size=size,
            crop_scale=self.crop_scale,
            crop_ratio=self.crop_ratio,
            hflip_prob=self.hflip_prob,
            jitter_prob=self.jitter_prob,
            brightness=0.8 * s,
            contrast=0.8 * s,
            saturation=0.8 * s,
            hue=0.2 * s,
            grayscale_prob=self.grayscale_prob,
            blur_prob=self.blur_prob if size >= self.blur_min_size else 0.0,
            blur_sigma=self.blur_sigma,
            blur_kernel_fraction=0.1,
            solarize_prob=self.solarize_prob,
            solarize_threshold=0.5,
        )


class SimCLRAugment(nn.Module):
    """Two independently augmented, normalised views of a batch.

    ``[B, 3, H, W]`` uint8 (or float in [0, 1]) → two ``[B, 3, size, size]`` float32 tensors,
    normalised with ``mean`` / ``std``. Every sample of every view gets its own random parameters,
    drawn from torch's global CPU generator, so ``lightning.seed_everything`` makes it reproducible.
    """

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        config: SimCLRViewConfig | None = None,
    ) -> None:
        super().__init__()
        self.config = config or SimCLRViewConfig()
        self.size = size
        view = self.config.to_view(size)
        self.augment = MultiViewAugment([view, view], mean, std)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first, second = self.augment(images)
        return first, second
