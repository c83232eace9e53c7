"""Crop + resize + flip of a whole batch with per-sample boxes, in one batched resampling.

Two implementations, chosen per view from static facts (never from the data):

- ``grid_sample`` where no crop can be larger than the output (the input is no larger than the
  view, as for views at the data's own size): bilinear, source coordinates clamped to the crop box.
  That is exactly torchvision's ``resized_crop(..., antialias=True)`` there, since antialiasing only
  acts when shrinking. One kernel reads the input once.
- separable resampling matrices where a crop can be shrunk (DINO's 96-px local crops of a 224-px
  image, or data larger than the view) or for bicubic: ``out = Wy @ crop @ Wx^T`` per sample, with
  ``Wy``/``Wx`` holding torchvision's (PIL's) antialiased filter weights, so shrinking does not
  alias. Two batched matmuls; on a GPU they run on tensor cores. (Kornia's ``RandomResizedCrop``
  crops in a Python loop over the samples; ``roi_align`` averages a box of samples per output
  pixel, which antialiases but matches no reference filter.)

The flip is folded into the x-coordinates (or the rows of ``Wx``): no extra pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.augment.views import Interpolation


def needs_matrices(in_hw: tuple[int, int], size: int, interpolation: Interpolation) -> bool:
    """Whether a view of side ``size`` from ``in_hw`` images uses the resampling matrices (a crop
    may be shrunk, or bicubic) rather than ``grid_sample``."""
    return interpolation != "bilinear" or max(in_hw) > size


def sample_coordinates(
    boxes: torch.Tensor, flip: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x [B, size], y [B, size])`` source coordinates (pixel units, pixel centres at integers)
    of the output pixel centres: ``x0 + (j + 0.5) * w / size - 0.5``, clamped into the crop as
    ``F.interpolate(align_corners=False)`` does at the crop's border; x reversed where flipped."""
    steps = torch.arange(size, device=boxes.device, dtype=torch.float64) + 0.5
    b = boxes.double()
    x = b[:, :1] + steps * ((b[:, 2:3] - b[:, :1]) / size) - 0.5
    y = b[:, 1:2] + steps * ((b[:, 3:4] - b[:, 1:2]) / size) - 0.5
    x = torch.minimum(torch.maximum(x, b[:, :1]), b[:, 2:3] - 1)
    y = torch.minimum(torch.maximum(y, b[:, 1:2]), b[:, 3:4] - 1)
    x = torch.where(flip[:, None], x.flip(1), x)
    return x, y


def grid_resample(images: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` float images sampled bilinearly at the separable coordinates ``x [B, S]`` and
    ``y [B, S]`` (pixel units, already clamped inside the image) → ``[B, C, S, S]``."""
    height, width = images.shape[-2:]
    # normalised coordinates for align_corners=False: pixel i covers [-1 + 2i/W, -1 + 2(i+1)/W].
    # The grid has the images' dtype: keep them float32 (in float16 a coordinate near the right
    # edge of a 224-px image is off by up to 0.05 px).
    gx = ((2 * x + 1) / width - 1).to(images.dtype)
    gy = ((2 * y + 1) / height - 1).to(images.dtype)
    size = x.shape[1]
    grid = torch.stack([gx[:, None, :].expand(-1, size, -1), gy[:, :, None].expand(-1, -1, size)], dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _filter(kind: Interpolation, d: torch.Tensor) -> torch.Tensor:
    """PIL's filters (torchvision's antialiased resize): triangle, and cubic with a = -0.5."""
    d = d.abs()
    if kind == "bilinear":
        return (1 - d).clamp_(min=0)
    a = -0.5
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return torch.where(d < 1, near, torch.where(d < 2, far, torch.zeros_like(d)))


def resample_matrix(
    start: torch.Tensor,
    stop: torch.Tensor,
    size: int,
    in_size: int,
    kind: Interpolation,
    flip: torch.Tensor | None,
) -> torch.Tensor:
    """``[B, size, in_size]`` float32 rows of antialiased filter weights that resize ``[start, stop)``
    of a line of ``in_size`` pixels to ``size`` pixels, as torchvision's ``resize(antialias=True)``
    of the cropped line (PIL's convention: the filter's support grows with the shrink factor, and
    the weights are renormalised inside the crop). Rows reversed where ``flip``."""
    start, stop = start.float()[:, None, None], stop.float()[:, None, None]
    scale = (stop - start) / size  # input pixels per output pixel
    support = torch.clamp(scale, min=1.0)  # the filter is stretched when shrinking
    centre = (
        start + (torch.arange(size, device=start.device, dtype=torch.float32)[None, :, None] + 0.5) * scale
    )
    pixel = torch.arange(in_size, device=start.device, dtype=torch.float32)[None, None, :] + 0.5
    weights = _filter(kind, (pixel - centre) / support)
    weights = weights * ((pixel > start) & (pixel < stop))  # only the crop's pixels
    weights = weights / weights.sum(-1, keepdim=True)
    if flip is not None:
        weights = torch.where(flip[:, None, None], weights.flip(1), weights)
    return weights


def separable(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``rows @ x @ cols^T`` per sample and channel: ``[N, C, H, W]`` with ``rows [N, P, H]`` and
    ``cols [N, Q, W]`` → ``[N, C, P, Q]``, as two batched matmuls."""
    n, c, height, width = x.shape
    p, q = rows.shape[1], cols.shape[1]
    t = torch.bmm(x.reshape(n, c * height, width), cols.transpose(1, 2).to(x.dtype))  # [N, C*H, Q]
    t = t.view(n, c, height, q).permute(0, 2, 1, 3).reshape(n, height, c * q)
    out = torch.bmm(rows.to(x.dtype), t)  # [N, P, C*Q]
    return out.view(n, p, c, q).permute(0, 2, 1, 3).contiguous()


def matrix_resample(
    images: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int, kind: Interpolation
) -> torch.Tensor:
    """``[B, C, H, W]`` float images → ``[B, C, size, size]`` crops (antialiased ``kind`` filter,
    flipped where ``flip``), as two batched matmuls. Bicubic overshoot is left for the caller to
    clamp."""
    height, width = images.shape[-2:]
    wx = resample_matrix(boxes[:, 0], boxes[:, 2], size, width, kind, flip)  # [B, S, W]
    wy = resample_matrix(boxes[:, 1], boxes[:, 3], size, height, kind, None)  # [B, S, H]
    return separable(images, wy, wx)


def nearest_indices(start: torch.Tensor, stop: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, size]`` int64 source index of each output pixel, nearest to its centre
    (torchvision's ``NEAREST_EXACT``: ``start + floor((j + 0.5) * (stop - start) / size)``)."""
    length = (stop - start).double()[:, None]
    steps = torch.arange(size, device=start.device, dtype=torch.float64)[None, :] + 0.5
    offset = torch.minimum(torch.floor(steps * length / size), length - 1)
    return (start.double()[:, None] + offset).long()


def nearest_resample(masks: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, H, W]`` label masks → ``[B, size, size]`` crops with nearest sampling (labels are never
    blended), flipped where ``flip``: one gather. ``boxes`` and ``flip`` on the masks' device."""
    ix = nearest_indices(boxes[:, 0], boxes[:, 2], size)
    ix = torch.where(flip[:, None], ix.flip(1), ix)
    iy = nearest_indices(boxes[:, 1], boxes[:, 3], size)
    batch = torch.arange(masks.shape[0], device=masks.device)[:, None, None]
    return masks[batch, iy[:, :, None], ix[:, None, :]]
