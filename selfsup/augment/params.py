"""Every random draw of one view for a whole batch, at once, on the CPU: ``sample_view_params``.

Drawing on the CPU from torch's generator (the global one by default, so
``lightning.seed_everything`` makes it reproducible and a checkpoint's RNG state resumes it) keeps
the device free of random-number kernels and, more importantly, lets the batched op plan its work
(which samples get hue, which get blur) from host values: no device-to-host read, ever.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from selfsup.augment.views import ViewConfig

# colour operations, as numbered in ``ViewParams.order``
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3
CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop.get_params

_TENSORS = ("boxes", "flip", "jitter", "factors", "order", "grayscale", "blur", "sigma", "solarize")


@dataclass(frozen=True)
class ViewParams:
    """The parameters of one view for a batch of ``B`` images (all tensors, on one device).

    Attributes:
        boxes: ``[B, 4]`` float32 crop boxes ``(x0, y0, x1, y1)`` in input pixels, ``x1``/``y1``
            exclusive (integers, as torchvision's crops).
        flip: ``[B]`` bool, horizontal flip after the crop.
        jitter: ``[B]`` bool, colour jitter applied.
        factors: ``[B, 4]`` float32 brightness, contrast and saturation factors, and the hue shift
            (a fraction of the colour circle).
        order: ``[B, 4]`` int64, each row a permutation of the colour operations (0 brightness,
            1 contrast, 2 saturation, 3 hue) in the order they are applied to that sample.
        grayscale, blur, solarize: ``[B]`` bool draws.
        sigma: ``[B]`` float32 blur standard deviation in output pixels.
        in_hw: the input's ``(height, width)`` the boxes refer to.
        hue_counts: samples whose hue shift comes 1st, 2nd, 3rd, 4th (jittered samples only):
            host integers derived at construction, so the batched op can slice its hue groups
            without reading device memory.
        blur_count: samples that get blur (host integer, likewise).
    """

    boxes: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    factors: torch.Tensor
    order: torch.Tensor
    grayscale: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor
    solarize: torch.Tensor
    in_hw: tuple[int, int]
    hue_counts: tuple[int, int, int, int] | None = None
    blur_count: int | None = None
    # the CPU copy these were moved from (``to``), so planning never reads device memory
    host: ViewParams | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        b = self.boxes.shape[0]
        shapes = {
            "boxes": (b, 4),
            "flip": (b,),
            "jitter": (b,),
            "factors": (b, 4),
            "order": (b, 4),
            "grayscale": (b,),
            "blur": (b,),
            "sigma": (b,),
            "solarize": (b,),
        }
        for name, shape in shapes.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(
                    f"ViewParams.{name} must have shape {shape}, got {tuple(getattr(self, name).shape)}."
                )
        if self.hue_counts is None or self.blur_count is None:
            if self.boxes.device.type != "cpu":
                raise ValueError(
                    "ViewParams on a device need hue_counts and blur_count: build them on the CPU "
                    "(sample_view_params does) and move them with .to(device)."
                )
            position = (self.order == HUE).int().argmax(1)  # where each sample's hue shift comes
            counts = torch.bincount(position[self.jitter], minlength=4)
            object.__setattr__(self, "hue_counts", tuple(int(c) for c in counts.tolist()))
            object.__setattr__(self, "blur_count", int(self.blur.sum()))

    @property
    def batch_size(self) -> int:
        return self.boxes.shape[0]

    @property
    def device(self) -> torch.device:
        return self.boxes.device

    def to(self, device: torch.device | str) -> ViewParams:
        """The same parameters on ``device`` (pinned, non-blocking copies to a GPU); the host copy
        stays attached for planning."""
        device = torch.device(device)
        if device == self.device:
            return self
        pin = device.type == "cuda" and self.device.type == "cpu"
        moved = {
            name: (t.pin_memory() if pin else t).to(device, non_blocking=True)
            for name in _TENSORS
            for t in (getattr(self, name),)
        }
        host = self.host if self.host is not None else (self if self.device.type == "cpu" else None)
        return dataclasses.replace(self, **moved, host=host)


def sample_view_params(
    batch: int,
    in_hw: tuple[int, int],
    config: ViewConfig,
    generator: torch.Generator | None = None,
) -> ViewParams:
    """Draw every random parameter of one view for ``batch`` images of size ``in_hw``, at once.

    All draws come from one ``torch.rand`` call on the CPU (``generator``, or torch's global CPU
    generator), so the stream consumed per call is fixed and the same seed gives the same views.

    The crop follows torchvision's ``RandomResizedCrop.get_params``, vectorised: 10 attempts per
    sample, each an area fraction uniform in ``crop_scale`` and a log-uniform aspect ratio in
    ``crop_ratio``, rounded to whole pixels; the first attempt that fits the image is kept, and a
    sample whose 10 attempts all fail gets torchvision's fallback (the largest central crop whose
    aspect ratio is clamped into ``crop_ratio``). The offset is uniform over the positions that fit.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}.")
    height, width = (int(v) for v in in_hw)
    if height < 1 or width < 1:
        raise ValueError(f"in_hw must be a positive (height, width), got {in_hw}.")
    columns = 2 * CROP_ATTEMPTS + 2 + 14
    u = torch.rand(batch, columns, generator=generator, dtype=torch.float64)
    attempts, offsets, rest = (
        u[:, : 2 * CROP_ATTEMPTS],
        u[:, 2 * CROP_ATTEMPTS : 2 * CROP_ATTEMPTS + 2],
        u[:, -14:],
    )

    # --- random resized crop -----------------------------------------------------------------
    area = height * width
    s_low, s_high = config.crop_scale
    r_low, r_high = math.log(config.crop_ratio[0]), math.log(config.crop_ratio[1])
    target = area * (s_low + (s_high - s_low) * attempts[:, :CROP_ATTEMPTS])
    ratio = torch.exp(r_low + (r_high - r_low) * attempts[:, CROP_ATTEMPTS:])
    w = torch.round(torch.sqrt(target * ratio))
    h = torch.round(torch.sqrt(target / ratio))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # the first attempt that fits
    found = fits.any(1)
    w = w.gather(1, first)[:, 0]
    h = h.gather(1, first)[:, 0]
    fb_w, fb_h = _fallback_crop(height, width, config.crop_ratio)
    w = torch.where(found, w, float(fb_w))
    h = torch.where(found, h, float(fb_h))
    # uniform integer offsets in [0, side - crop]; the min guards rounding at u -> 1
    y0 = torch.minimum(torch.floor(offsets[:, 0] * (height - h + 1)), height - h)
    x0 = torch.minimum(torch.floor(offsets[:, 1] * (width - w + 1)), width - w)
    y0 = torch.where(found, y0, float((height - fb_h) // 2))
    x0 = torch.where(found, x0, float((width - fb_w) // 2))
    boxes = torch.stack([x0, y0, x0 + w, y0 + h], 1).float()

    # --- the other draws ---------------------------------------------------------------------
    def jitter_range(strength: float) -> tuple[float, float]:
        return max(0.0, 1.0 - strength), 1.0 + strength

    lows = torch.tensor(
        [*(jitter_range(v)[0] for v in (config.brightness, config.contrast, config.saturation)), -config.hue]
    )
    highs = torch.tensor(
        [*(jitter_range(v)[1] for v in (config.brightness, config.contrast, config.saturation)), config.hue]
    )
    factors = (lows + (highs - lows) * rest[:, 2:6]).float()
    sigma_low, sigma_high = config.blur_sigma
    return ViewParams(
        boxes=boxes,
        flip=rest[:, 0] < config.hflip_prob,
        jitter=rest[:, 1] < config.jitter_prob,
        factors=factors,
        order=rest[:, 6:10].argsort(1),  # a uniformly random permutation per sample
        grayscale=rest[:, 10] < config.grayscale_prob,
        blur=rest[:, 11] < config.blur_prob,
        sigma=(sigma_low + (sigma_high - sigma_low) * rest[:, 12]).float(),
        solarize=rest[:, 13] < config.solarize_prob,
        in_hw=(height, width),
    )


def _fallback_crop(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """torchvision's central-crop fallback: ``(width, height)`` of the whole image with its aspect
    ratio clamped into ``ratio``."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return width, int(round(width / min(ratio)))
    if in_ratio > max(ratio):
        return int(round(height * max(ratio))), height
    return width, height
