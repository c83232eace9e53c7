"""Block masks: the batched generator against a per-image transcription of dinov2's
``MaskingGenerator`` (statistics over many images), the target never exceeded, block shape, and
DINOv2's share and ratios of masked images."""

import math
import random

import pytest
import torch

from selfsup.encoders.block_masking import block_masks, ibot_masks

GRID = (14, 14)
L = GRID[0] * GRID[1]


def reference_mask(rng: random.Random, target: int, max_patches: float, min_patches=4, min_aspect=0.3):
    """dinov2 ``MaskingGenerator.__call__`` written out for one image."""
    h_grid, w_grid = GRID
    mask = [[False] * w_grid for _ in range(h_grid)]
    count = 0
    lo, hi = math.log(min_aspect), math.log(1 / min_aspect)
    while count < target:
        limit = min(target - count, max_patches)
        added = 0
        for _ in range(10):
            area = rng.uniform(min_patches, limit)
            aspect = math.exp(rng.uniform(lo, hi))
            h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if w < w_grid and h < h_grid:
                top, left = rng.randint(0, h_grid - h), rng.randint(0, w_grid - w)
                cells = [(i, j) for i in range(top, top + h) for j in range(left, left + w)]
                new = sum(not mask[i][j] for i, j in cells)
                if 0 < new <= limit:
                    for i, j in cells:
                        mask[i][j] = True
                    added = new
            if added:
                break
        if not added:
            break
        count += added
    return torch.tensor(mask)


def neighbours(masks: torch.Tensor) -> torch.Tensor:
    """Mean number of masked 4-neighbours of a masked patch, per image ``[N, h, w]``."""
    m = masks.float()
    around = torch.zeros_like(m)
    around[:, 1:] += m[:, :-1]
    around[:, :-1] += m[:, 1:]
    around[:, :, 1:] += m[:, :, :-1]
    around[:, :, :-1] += m[:, :, 1:]
    return (around * m).sum(dim=(1, 2)) / m.sum(dim=(1, 2)).clamp(min=1)


def test_batched_masks_match_the_reference_generator_in_distribution():
    targets = torch.tensor([10, 40, 80] * 100)
    mine = block_masks(targets, GRID, max_patches=0.5 * L, generator=torch.Generator().manual_seed(0))
    rng = random.Random(0)
    ref = torch.stack([reference_mask(rng, int(t), 0.5 * L) for t in targets])
    for t in (10, 40, 80):
        rows = targets == t
        a, b = mine[rows].sum(dim=(1, 2)).float(), ref[rows].sum(dim=(1, 2)).float()
        assert abs(a.mean() - b.mean()) < 0.03 * t, (t, a.mean(), b.mean())
        na, nb = neighbours(mine[rows]).mean(), neighbours(ref[rows]).mean()
        assert abs(na - nb) < 0.1, (t, na, nb)  # the same block shapes (about 2.5-3 of 4 neighbours)


def test_target_is_never_exceeded_and_nearly_always_reached():
    g = torch.Generator().manual_seed(1)
    targets = torch.randint(0, L // 2 + 1, (150,), generator=g)
    masks = block_masks(targets, GRID, max_patches=0.5 * L, generator=g)
    counts = masks.sum(dim=(1, 2))
    assert (counts <= targets).all()
    assert (counts[targets == 0] == 0).all()
    assert counts.sum() >= 0.97 * targets.sum()


def test_masks_are_blocks_not_scattered_patches():
    g = torch.Generator().manual_seed(2)
    targets = torch.full((100,), 40)
    masks = block_masks(targets, GRID, max_patches=0.5 * L, generator=g)
    scattered = (torch.rand(100, L, generator=g).argsort(1) < 40).view(100, *GRID)
    assert neighbours(masks).mean() > 2.3 > 1.0 > neighbours(scattered).mean()
    # area 9 at an aspect near 1 is one 3 x 3 rectangle, wherever it lands
    one = block_masks(torch.tensor([9] * 50), GRID, min_patches=9, max_patches=9, min_aspect=0.9, generator=g)
    for m in one:
        r, c = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
        assert (
            m.sum() == 9 and len(r) == len(c) == 3 and m[r.min() : r.max() + 1, c.min() : c.max() + 1].all()
        )


def test_ibot_masks_mask_half_the_images_at_stratified_ratios():
    g = torch.Generator().manual_seed(3)
    masks = ibot_masks(64, GRID, mask_probability=0.5, ratio=(0.1, 0.5), generator=g)
    assert masks.shape == (64, L) and masks.dtype == torch.bool
    fraction = masks.sum(1).float() / L
    masked = fraction[fraction > 0]
    assert 30 <= len(masked) <= 32  # int(64 * 0.5) images aim at a mask
    assert masked.max() <= 0.5 and masked.min() >= 0.05
    # the stratified ratios cover the range: 16 of the 32 slices lie in each half of [0.1, 0.5]
    assert (masked < 0.3).sum() >= 12 and (masked >= 0.25).sum() >= 12
    assert not masks[:32].any(1).all()  # shuffled: the masked images are not the first 32
    assert not ibot_masks(8, GRID, mask_probability=0.0, generator=g).any()


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="num_masked"):
        block_masks(torch.tensor([L + 1]), GRID)
    with pytest.raises(ValueError, match="mask_probability"):
        ibot_masks(4, GRID, mask_probability=1.5)
    with pytest.raises(ValueError, match="ratio"):
        ibot_masks(4, GRID, ratio=(0.5, 0.1))
