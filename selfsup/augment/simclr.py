"""SimCLR's two-view augmentation on whole batches, on whatever device the batch is on (Kornia)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import kornia.augmentation as K
import torch
from torch import nn

from selfsup.augment.normalize import Normalize, to_unit_float


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
        if self.jitter_strength < 0:
            raise ValueError(f"jitter_strength must be >= 0, got {self.jitter_strength}.")


def simclr_view(size: int, config: SimCLRViewConfig) -> nn.Sequential:
    """One view's pipeline on ``[B, 3, H, W]`` floats in [0, 1]; parameters are sampled per sample."""
    s = config.jitter_strength
    ops: list[nn.Module] = [
        K.RandomResizedCrop((size, size), scale=config.crop_scale, ratio=config.crop_ratio),
        K.RandomHorizontalFlip(p=config.hflip_prob),
    ]
    if config.jitter_prob > 0 and s > 0:
        ops.append(K.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s, p=config.jitter_prob))
    if config.grayscale_prob > 0:
        ops.append(K.RandomGrayscale(p=config.grayscale_prob))
    if config.blur_prob > 0 and size >= config.blur_min_size:
        kernel = int(0.1 * size) // 2 * 2 + 1  # 10% of the side, odd
        ops.append(K.RandomGaussianBlur(kernel, config.blur_sigma, p=config.blur_prob))
    if config.solarize_prob > 0:
        ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=config.solarize_prob))
    return nn.Sequential(*ops)


class SimCLRAugment(nn.Module):
    """Two independently augmented, normalised views of a batch.

    ``[B, 3, H, W]`` uint8 (or float in [0, 1]) → two ``[B, 3, size, size]`` float32 tensors,
    normalised with ``mean`` / ``std``. Each view has its own pipeline instance (Kornia keeps the
    last sampled parameters on the instance, so one instance shared by two views would overwrite
    them), and every sample in the batch gets its own random parameters. Randomness comes from
    torch's global generators, so ``lightning.seed_everything`` makes it reproducible.
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
        self.view1 = simclr_view(size, self.config)
        self.view2 = simclr_view(size, self.config)
        self.normalize = Normalize(mean, std)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_unit_float(images)
        return self.normalize(self.view1(x)), self.normalize(self.view2(x))
