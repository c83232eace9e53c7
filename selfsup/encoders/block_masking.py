"""Block-wise masks of a patch grid for masked image modelling (BEiT, Bao et al. 2022, sec. 2.5 and
Algorithm 1; iBOT and DINOv2 use it for their masked patches), drawn for a whole batch at once.

Followed: facebookresearch/dinov2 ``dinov2/data/masking.py`` (``MaskingGenerator``: rectangles of a
random area in ``[min_patches, max_patches]`` and a log-uniform aspect ratio, up to 10 attempts per
rectangle, placed until the image's target is reached or no attempt adds a patch) and
``dinov2/data/collate.py`` (``collate_data_and_cast``: a share ``mask_probability`` of the images is
masked, at ratios stratified over ``[ratio_min, ratio_max]``, the images shuffled).

The reference draws one rectangle at a time per image in Python. Here every image of the batch
draws its 10 attempts at once, and each image takes its first valid attempt (an attempt that fails
leaves the mask as it was, so trying the 10 on the same mask and keeping the first valid one is the
reference's sequence of attempts, in distribution). The loop runs over placement rounds, not over
images: about a dozen rounds of ``[images, 10, h, w]`` boolean operations on the CPU
(BENCHMARKS.md: "DINOv2 step time" measures it).
"""

from __future__ import annotations

import math

import torch


def block_masks(
    num_masked: torch.Tensor,
    grid: tuple[int, int],
    min_patches: int = 4,
    max_patches: float | None = None,
    min_aspect: float = 0.3,
    max_aspect: float | None = None,
    attempts: int = 10,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``[N]`` target counts of masked patches → ``[N, h, w]`` bool masks (True: masked), on the CPU.

    Each image's mask is a union of rectangles, each of area drawn uniformly in ``[min_patches,
    min(remaining, max_patches)]`` and aspect ratio log-uniform in ``[min_aspect, max_aspect]``
    (default ``1 / min_aspect``), that must fit strictly inside the grid and add between 1 and
    ``remaining`` new patches. An image never exceeds its target; it stops below it when none of
    ``attempts`` rectangles fits (as the reference). ``max_patches`` None: no cap but the target.
    """
    height, width = int(grid[0]), int(grid[1])
    target = torch.as_tensor(num_masked, dtype=torch.long).cpu().reshape(-1)
    if (target < 0).any() or (target > height * width).any():
        raise ValueError(
            f"num_masked must lie in [0, {height * width}] (the grid's patches), got {target.tolist()}."
        )
    if not 0 < min_aspect <= (max_aspect or 1 / min_aspect):
        raise ValueError(f"min_aspect must be > 0 and <= max_aspect, got {min_aspect}, {max_aspect}.")
    log_low, log_high = math.log(min_aspect), math.log(max_aspect or 1 / min_aspect)
    rows, cols = torch.arange(height), torch.arange(width)
    masks = torch.zeros(len(target), height, width, dtype=torch.bool)
    count = torch.zeros_like(target)
    active = target > 0
    while bool(active.any()):  # CPU tensors: no device read
        index = active.nonzero().squeeze(1)
        left_to_mask = (target[index] - count[index]).double()
        remaining = left_to_mask if max_patches is None else left_to_mask.clamp(max=max_patches)  # [n]
        u = torch.rand(len(index), attempts, 4, generator=generator, dtype=torch.float64)
        area = (
            min_patches + (remaining[:, None] - min_patches) * u[..., 0]
        )  # uniform(min, max), as random.uniform
        aspect = torch.exp(log_low + (log_high - log_low) * u[..., 1])
        h = torch.round(torch.sqrt(area * aspect)).long()  # round half to even, as Python's round
        w = torch.round(torch.sqrt(area / aspect)).long()
        fits = (h < height) & (w < width)
        top = torch.floor(u[..., 2] * (height - h + 1).clamp(min=1)).long()  # randint(0, height - h)
        left = torch.floor(u[..., 3] * (width - w + 1).clamp(min=1)).long()
        in_rows = (rows >= top[..., None]) & (rows < (top + h)[..., None])  # [n, attempts, height]
        in_cols = (cols >= left[..., None]) & (cols < (left + w)[..., None])  # [n, attempts, width]
        rect = in_rows[..., :, None] & in_cols[..., None, :]  # [n, attempts, height, width]
        new = (rect & ~masks[index, None]).sum(dim=(-2, -1))  # patches each attempt would add
        valid = fits & (new > 0) & (new <= remaining[:, None])
        placed = valid.any(dim=1)
        first = valid.long().argmax(dim=1)  # the first valid attempt
        pick = torch.arange(len(index))
        masks[index] |= rect[pick, first] & placed[:, None, None]
        count[index] += new[pick, first] * placed
        active[index] = placed & (count[index] < target[index])
    return masks


def ibot_masks(
    num_images: int,
    grid: tuple[int, int],
    mask_probability: float = 0.5,
    ratio: tuple[float, float] = (0.1, 0.5),
    min_patches: int = 4,
    min_aspect: float = 0.3,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DINOv2's masks for ``num_images`` global crops: ``[num_images, h * w]`` bool, on the CPU.

    ``int(num_images * mask_probability)`` images are masked; the ``i``-th of them aims at
    ``int(L * r_i)`` patches with ``r_i`` uniform in the ``i``-th of as many equal slices of
    ``ratio`` (a stratified draw), the others are not masked, and the images are shuffled. Each
    rectangle holds at most half the grid (the reference's ``max_num_patches = 0.5 * L``).
    """
    if not 0.0 <= mask_probability <= 1.0:
        raise ValueError(f"mask_probability must lie in [0, 1] (0.5 in DINOv2), got {mask_probability}.")
    if not 0.0 <= ratio[0] <= ratio[1] <= 1.0:
        raise ValueError(
            f"ratio must be (min, max) with 0 <= min <= max <= 1 ((0.1, 0.5) in DINOv2), got {ratio}."
        )
    length = int(grid[0]) * int(grid[1])
    masked = int(num_images * mask_probability)
    bounds = torch.linspace(float(ratio[0]), float(ratio[1]), masked + 1)
    ratios = bounds[:-1] + (bounds[1:] - bounds[:-1]) * torch.rand(masked, generator=generator)
    targets = torch.zeros(num_images, dtype=torch.long)
    targets[:masked] = (length * ratios).long()  # int(): truncation, as the reference
    targets = targets[torch.randperm(num_images, generator=generator)]
    masks = block_masks(targets, grid, min_patches, 0.5 * length, min_aspect, generator=generator)
    return masks.flatten(1)
