"""I-JEPA's multi-block masks against the rules of the reference collator (facebookresearch/ijepa
``src/masks/multiblock.py``), with lightly's copy of that collator (test-only) as the oracle."""

import math

import pytest
import torch
from lightly.data import IJEPAMaskCollator

from selfsup.encoders.multiblock_masks import MultiBlockMaskSampler, block_size

PAPER = dict(num_targets=4, target_scale=(0.15, 0.2), target_aspect=(0.75, 1.5), context_scale=(0.85, 1.0))


def oracle(grid: int, min_keep: int = 10, target_scale=PAPER["target_scale"]) -> IJEPAMaskCollator:
    return IJEPAMaskCollator(
        input_size=(grid, grid), patch_size=1, enc_mask_scale=PAPER["context_scale"],
        pred_mask_scale=target_scale, aspect_ratio=PAPER["target_aspect"], nenc=1, npred=4,
        min_keep=min_keep,
    )  # fmt: skip


@pytest.mark.parametrize("grid", [8, 14, 16])
def test_block_sizes_equal_the_reference_for_every_draw(grid):
    """The size rule (one uniform for scale and aspect, int / round, cut to the grid minus one) gives
    the reference's sizes for the same uniform: the collator draws it from a seeded generator."""
    collator = oracle(grid)
    for seed in range(200):
        u = torch.rand(1, generator=torch.Generator().manual_seed(seed)).item()
        for scale, aspect in (
            (PAPER["target_scale"], PAPER["target_aspect"]),
            (PAPER["context_scale"], (1.0, 1.0)),
        ):
            expected = collator._sample_block_size(torch.Generator().manual_seed(seed), scale, aspect)
            assert block_size(u, (grid, grid), scale, aspect) == expected, (seed, scale)


def grid_of(ids: torch.Tensor, size: int) -> torch.Tensor:
    out = torch.zeros(size * size, dtype=torch.bool)
    out[ids] = True
    return out.reshape(size, size)


def sizes(grid: int, scale, aspect) -> set[tuple[int, int]]:
    """Every block size the rule can give (sizes change in steps of ``u``)."""
    return {block_size(k / 10000, (grid, grid), scale, aspect) for k in range(10001)}


def test_targets_are_blocks_and_the_context_avoids_them():
    """Per image: 4 full h x w rectangles of one size for the batch (row-major indices), a size the
    reference's rule gives (its scale and aspect ranges); a context of ascending, distinct indices
    that holds none of the target patches, lies within a square block of a size the rule gives for
    the context's scale, and has the same number of patches in every image."""
    size = 14
    target_sizes = sizes(size, PAPER["target_scale"], PAPER["target_aspect"])
    context_sizes = sizes(size, PAPER["context_scale"], (1.0, 1.0))
    sampler = MultiBlockMaskSampler((size, size), **PAPER, min_keep=10)
    for seed in range(5):
        masks = sampler(32, torch.Generator().manual_seed(seed))
        b, m, kt = masks.targets.shape
        assert (b, m) == (32, 4) and masks.context.shape[0] == 32 and masks.context.dtype == torch.int64
        assert masks.context.shape[1] > 10 and kt > 10
        for i in range(b):
            covered = torch.zeros(size, size, dtype=torch.bool)
            for t in range(m):
                block = grid_of(masks.targets[i, t], size)
                h, w = int(block.any(1).sum()), int(block.any(0).sum())
                assert h * w == kt == block.sum() and (h, w) in target_sizes  # a full rectangle
                assert torch.equal(masks.targets[i, t], block.flatten().nonzero().flatten())  # row-major
                covered |= block
            context = masks.context[i]
            assert torch.equal(context, context.sort().values) and len(context.unique()) == len(context)
            assert not covered.flatten()[context].any()  # the context holds no target patch
            ctx = grid_of(context, size)
            rows, cols = ctx.any(1).nonzero().flatten(), ctx.any(0).nonzero().flatten()
            span = max(int(rows[-1] - rows[0]), int(cols[-1] - cols[0])) + 1
            assert span <= max(h for h, _ in context_sizes)


def test_corners_follow_the_reference_range():
    """Top-left corners are uniform on [0, H - h) (the reference's randint): the corner row H - h,
    where a block would still fit, is never used; every row below it is."""
    size = 8
    sampler = MultiBlockMaskSampler((size, size), **PAPER, min_keep=4)
    seen: dict[int, set[int]] = {}
    for seed in range(20):
        masks = sampler(64, torch.Generator().manual_seed(seed))
        first, last = masks.targets[:, :, 0], masks.targets[:, :, -1]
        h = int(last[0, 0] // size - first[0, 0] // size) + 1
        seen.setdefault(h, set()).update((first // size).flatten().tolist())
    for h, tops in seen.items():
        assert tops == set(range(size - h)), (h, tops)


def reference_draws(
    grid: int, batches: int, batch_size: int, min_keep: int, target_scale
) -> tuple[list, list]:
    collator = oracle(grid, min_keep, target_scale)
    contexts, targets = [], []
    for _ in range(batches):
        _, enc, pred = collator([(torch.zeros(1), 0)] * batch_size)
        contexts.append(enc[0].shape[1])
        targets.append(pred[0].shape[1])
    return contexts, targets


# the paper's 14 x 14 grid; the digits' 8 x 8; larger targets, where the context often falls back
CASES = [(14, 10, (0.15, 0.2)), (8, 4, (0.15, 0.2)), (14, 40, (0.25, 0.3))]


@pytest.mark.parametrize(("grid", "min_keep", "target_scale"), CASES)
def test_batch_counts_match_the_reference_collator_in_distribution(grid, min_keep, target_scale):
    """The numbers of context and target patches per batch (after the reference's trimming to the
    batch's smallest) have the distribution of the reference collator's, run on the same settings:
    equal means within sampling error."""
    torch.manual_seed(0)
    batches, batch_size = 40, 8
    ref_context, ref_targets = reference_draws(grid, batches, batch_size, min_keep, target_scale)
    sampler = MultiBlockMaskSampler(
        (grid, grid), **{**PAPER, "target_scale": target_scale}, min_keep=min_keep
    )
    ours = [sampler(batch_size) for _ in range(batches)]
    for name, ref, mine in (
        ("context", ref_context, [m.context.shape[1] for m in ours]),
        ("target", ref_targets, [m.targets.shape[2] for m in ours]),
    ):
        ref_t, mine_t = torch.tensor(ref, dtype=torch.float64), torch.tensor(mine, dtype=torch.float64)
        error = math.sqrt((ref_t.var() + mine_t.var()) / batches)
        assert abs(ref_t.mean() - mine_t.mean()) < 4 * error + 0.2, (name, ref_t.mean(), mine_t.mean())
        assert min(mine) > min_keep


def test_context_falls_back_as_the_reference_when_targets_leave_too_little():
    """With min_keep near the context's size, the first levels fail and the targets stop constraining
    the context from the last one backwards (the reference's ``tries``): the context keeps more than
    min_keep patches, overlaps the last target more often than the first, and overlaps some."""
    size = 14
    sampler = MultiBlockMaskSampler((size, size), **{**PAPER, "target_scale": (0.25, 0.3)}, min_keep=40)
    masks = sampler(64, torch.Generator().manual_seed(0))
    assert masks.context.shape[1] > 40
    overlaps = torch.zeros(4)
    for i in range(64):
        context = grid_of(masks.context[i], size).flatten()
        overlaps += torch.tensor([float(context[masks.targets[i, t]].any()) for t in range(4)])
    assert overlaps[0] < overlaps[3] and overlaps.sum() > 0, overlaps


def test_allow_overlap_ignores_the_targets():
    sampler = MultiBlockMaskSampler((14, 14), **PAPER, allow_overlap=True)
    masks = sampler(16, torch.Generator().manual_seed(0))
    side = int(masks.context.shape[1] ** 0.5)
    assert side * side == masks.context.shape[1]  # the whole square block
    hits = sum(bool(grid_of(masks.context[i], 14).flatten()[masks.targets[i]].any()) for i in range(16))
    assert hits > 0


def test_settings_that_could_never_give_a_block_are_rejected():
    """The reference loops forever when a block can never keep more than min_keep patches."""
    with pytest.raises(ValueError, match="never keep more than min_keep=10 patches: lower min_keep"):
        MultiBlockMaskSampler((8, 8), **PAPER, min_keep=10)
    with pytest.raises(ValueError, match="target_scale must satisfy"):
        MultiBlockMaskSampler((14, 14), target_scale=(0.3, 0.2))
