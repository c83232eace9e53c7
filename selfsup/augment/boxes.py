"""Random crop + horizontal flip + resize of whole batches of images *with their boxes*, on the device.

Parameters for the whole batch are drawn at once on the CPU (crop boxes ``[B, 4]``, flips ``[B]``);
the images are cut and resized by one batched ``torchvision.ops.roi_align`` (each output pixel
averages an adaptive number of bilinear samples, so shrinking is antialiased), then flipped by one
batched ``torch.where``; the boxes are transformed with vectorised tensor ops on the padded
``[B, Nmax, 4]`` form. Nothing loops over samples except the list-of-dicts ↔ padded conversions,
which loop over the list once.

**The rule for boxes that leave the crop**: a box is clipped to the crop, and kept when the clipped
part holds at least ``min_visible`` of its area *and* is at least ``min_size`` pixels wide and high
in the output; otherwise it is dropped (a box wholly outside the crop has visible fraction 0).

**Device syncs**: none in the padded ops. Turning the padded form back into torchvision's list of
dicts needs the number of kept boxes per image on the host: :func:`unpad_targets` reads the ``[B]``
counts once per batch (a sync when the boxes are on an accelerator; none when they are on the CPU,
which :class:`DetectionAugment` allows: it transforms the boxes on whatever device they are on).
torchvision's detectors themselves sync in training (their degenerate-box check), so keeping the
boxes on the device costs one more small sync per batch at most.

(``selfsup/augment/crop_flip.py`` does the classification crop with Kornia, which moves boxes with its
images but neither clips nor drops them; hence this module.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.ops import roi_align

from selfsup.augment.normalize import Normalize, to_unit_float


@dataclass(frozen=True)
class BoxCrops:
    """One batch's parameters: ``crops [B, 4]`` float (x1, y1, x2, y2) in source pixels (continuous
    coordinates: pixel ``i`` spans ``[i, i + 1)``), ``flips [B]`` bool (flip after cropping)."""

    crops: torch.Tensor
    flips: torch.Tensor


def sample_crops(
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.25, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip_prob: float = 0.5,
    generator: torch.Generator | None = None,
    tries: int = 10,
) -> BoxCrops:
    """Random resized crops for a batch, drawn at once on the CPU, as torchvision's
    ``RandomResizedCrop.get_params`` does per image: area ``scale`` of the image, aspect ratio
    log-uniform in ``ratio``; of ``tries`` draws the first that fits is used, else the whole image."""
    area = torch.empty(batch, tries).uniform_(scale[0], scale[1], generator=generator) * (height * width)
    log_ratio = torch.empty(batch, tries).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator
    )
    aspect = log_ratio.exp()
    w = (area * aspect).sqrt()
    h = (area / aspect).sqrt()
    fits = (w <= width) & (h <= height)
    first = fits.float().argmax(dim=1, keepdim=True)  # first fitting try (0 when none fits)
    any_fit = fits.any(dim=1)
    w = torch.where(any_fit, w.gather(1, first)[:, 0], torch.full((batch,), float(width)))
    h = torch.where(any_fit, h.gather(1, first)[:, 0], torch.full((batch,), float(height)))
    x1 = torch.rand(batch, generator=generator) * (width - w)
    y1 = torch.rand(batch, generator=generator) * (height - h)
    crops = torch.stack([x1, y1, x1 + w, y1 + h], dim=1)
    flips = torch.rand(batch, generator=generator) < hflip_prob
    return BoxCrops(crops, flips)


def crop_flip_resize_images(images: torch.Tensor, params: BoxCrops, size: int) -> torch.Tensor:
    """``[B, C, H, W]`` uint8 or float images → ``[B, C, size, size]`` float32 (uint8 become [0, 1]):
    each image's crop resized to ``size`` by one batched ``roi_align``, then flipped where
    ``params.flips``."""
    x = to_unit_float(images)
    crops = params.crops.to(device=x.device, dtype=x.dtype)
    index = torch.arange(x.shape[0], device=x.device, dtype=x.dtype)[:, None]
    # aligned=True: pixel centres at +0.5, so the crop (0, 0, W, H) maps exactly onto the image;
    # sampling_ratio=-1: ceil(crop side / size) samples per output pixel and axis (antialiasing).
    out = roi_align(x, torch.cat([index, crops], dim=1), (size, size), 1.0, -1, True)
    flips = params.flips.to(x.device).view(-1, 1, 1, 1)
    return torch.where(flips, out.flip(-1), out)


def crop_flip_resize_boxes(
    boxes: torch.Tensor,
    valid: torch.Tensor,
    params: BoxCrops,
    size: int,
    min_visible: float = 0.5,
    min_size: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded boxes ``[B, N, 4]`` xyxy in source pixels and ``valid [B, N]`` → the boxes in the
    ``size x size`` output of :func:`crop_flip_resize_images` and the new ``valid`` (dropped boxes
    are zeros and invalid; see the module docstring for the rule)."""
    crops = params.crops.to(device=boxes.device, dtype=boxes.dtype)
    origin = crops[:, None, :2].repeat(1, 1, 2)  # [B, 1, 4]: (x1, y1, x1, y1)
    scale = (size / (crops[:, 2:] - crops[:, :2])).repeat(1, 2)[:, None]  # [B, 1, 4]
    moved = (boxes - origin) * scale
    clipped = moved.clamp(0.0, float(size))
    sides = clipped[..., 2:] - clipped[..., :2]
    full = (moved[..., 2:] - moved[..., :2]).prod(-1)
    visible = sides.prod(-1) / full  # NaN for an empty box: compares False, so dropped
    keep = valid & (visible >= min_visible) & (sides >= min_size).all(-1)
    flips = params.flips.to(boxes.device).view(-1, 1, 1)
    flipped = torch.stack(
        [size - clipped[..., 2], clipped[..., 1], size - clipped[..., 0], clipped[..., 3]], -1
    )
    out = torch.where(flips, flipped, clipped)
    return torch.where(keep[..., None], out, torch.zeros_like(out)), keep


def pad_targets(
    targets: Sequence[dict[str, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """torchvision's ``[{"boxes": [N_i, 4], "labels": [N_i]}]`` → ``boxes [B, Nmax, 4]`` float32,
    ``labels [B, Nmax]`` int64 and ``valid [B, Nmax]`` bool, on the boxes' device (no sync: the
    ``N_i`` are shapes, known on the host)."""
    if not targets:
        raise ValueError("targets is empty: expected one {'boxes', 'labels'} dict per image.")
    device = targets[0]["boxes"].device
    longest = max(int(t["boxes"].shape[0]) for t in targets)
    boxes = torch.zeros(len(targets), longest, 4, device=device)
    labels = torch.zeros(len(targets), longest, dtype=torch.int64, device=device)
    valid = torch.zeros(len(targets), longest, dtype=torch.bool, device=device)
    for i, target in enumerate(targets):
        n = target["boxes"].shape[0]
        if target["boxes"].shape != (n, 4) or target["labels"].shape != (n,):
            raise ValueError(
                f"target {i}: boxes must be [N, 4] and labels [N], got {tuple(target['boxes'].shape)} and "
                f"{tuple(target['labels'].shape)}."
            )
        boxes[i, :n] = target["boxes"]
        labels[i, :n] = target["labels"]
        valid[i, :n] = True
    return boxes, labels, valid


def unpad_targets(
    boxes: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor
) -> list[dict[str, torch.Tensor]]:
    """The inverse of :func:`pad_targets`: the valid boxes of each image, in their order. Reads the
    ``[B]`` counts on the host once (the only sync, and none for CPU tensors)."""
    order = torch.argsort((~valid).to(torch.uint8), dim=1, stable=True)  # valid first, order kept
    boxes = boxes.gather(1, order[..., None].expand(-1, -1, 4))
    labels = labels.gather(1, order)
    counts = valid.sum(1).tolist()
    return [{"boxes": boxes[i, :n], "labels": labels[i, :n]} for i, n in enumerate(counts)]


class DetectionAugment(nn.Module):
    """``(uint8 images [B, 3, H, W], targets)`` → ``(float images [B, 3, size, size], targets)``:
    random resized crop, horizontal flip and resize, the same on the images and their boxes.

    ``targets`` is torchvision's list of ``{"boxes": float [N, 4] xyxy pixels, "labels": int64 [N]}``
    (``N`` may be 0); the result has the same form, without the dropped boxes. The boxes are
    transformed on their own device: leave them on the CPU for no device sync at all.

    Args:
        size: output side in pixels.
        mean, std: None (default) gives [0, 1] floats, what ``selfsup.heads.detection.build_detector``'s
            detectors take (they normalise inside); given, the output is ``(x - mean) / std``.
        crop_scale: area of the crop as a fraction of the image. Detection keeps most of the image
            by default (0.25 to 1) so most objects survive.
        crop_ratio: aspect-ratio range of the crop (log-uniform).
        hflip_prob: probability of a horizontal flip.
        min_visible: a box is kept when at least this fraction of its area lies inside the crop.
        min_size: ... and it is at least this many output pixels wide and high.
    """

    def __init__(
        self,
        size: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        crop_scale: tuple[float, float] = (0.25, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip_prob: float = 0.5,
        min_visible: float = 0.5,
        min_size: float = 1.0,
    ) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}.")
        if not 0.0 < crop_scale[0] <= crop_scale[1] <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}.")
        if not 0.0 < crop_ratio[0] <= crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < low <= high, got {crop_ratio}.")
        if not 0.0 <= hflip_prob <= 1.0:
            raise ValueError(f"hflip_prob must lie in [0, 1], got {hflip_prob}.")
        if not 0.0 < min_visible <= 1.0:
            raise ValueError(f"min_visible must lie in (0, 1], got {min_visible}.")
        if min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {min_size}.")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std (normalised output) or neither ([0, 1] output).")
        self.size = size
        self.crop_scale = tuple(crop_scale)
        self.crop_ratio = tuple(crop_ratio)
        self.hflip_prob = hflip_prob
        self.min_visible = min_visible
        self.min_size = min_size
        self.normalize = Normalize(mean, std) if mean is not None else None

    def sample(
        self, batch: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> BoxCrops:
        return sample_crops(
            batch, height, width, self.crop_scale, self.crop_ratio, self.hflip_prob, generator
        )

    @torch.no_grad()
    def forward(
        self,
        images: torch.Tensor,
        targets: Sequence[dict[str, torch.Tensor]],
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        if images.ndim != 4 or len(targets) != images.shape[0]:
            raise ValueError(
                f"expected images [B, C, H, W] and B targets, got {tuple(images.shape)} and {len(targets)} targets."
            )
        params = self.sample(images.shape[0], images.shape[-2], images.shape[-1], generator)
        out = crop_flip_resize_images(images, params, self.size)
        if self.normalize is not None:
            out = self.normalize(out)
        boxes, labels, valid = pad_targets(targets)
        boxes, valid = crop_flip_resize_boxes(
            boxes, valid, params, self.size, self.min_visible, self.min_size
        )
        return out, unpad_targets(boxes, labels, valid)
