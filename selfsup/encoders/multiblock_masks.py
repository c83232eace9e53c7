"""I-JEPA's multi-block masks (Assran et al. 2023, sec. 3): per image, a few rectangular **target**
blocks of patches and one large **context** block with the targets cut out, as index sets on the
patch grid, drawn for a whole batch at once.

Followed: facebookresearch/ijepa ``src/masks/multiblock.py`` (``MaskCollator``) and its settings in
``configs/in1k_vith14_ep300.yaml`` (4 targets of scale 0.15-0.2 and aspect 0.75-1.5, a context of
scale 0.85-1, ``min_keep`` 10, no overlap). Its rules, all kept here:

- one block size per batch and kind: a single uniform ``u`` gives both the scale and the aspect
  ratio (``s = s0 + u (s1 - s0)``, ``a = a0 + u (a1 - a0)``), ``n = int(H W s)``,
  ``h = round(sqrt(n a))``, ``w = round(sqrt(n / a))``, each cut to at most ``H - 1`` / ``W - 1``;
  the context block is square (aspect 1);
- a block's top-left corner is uniform on ``[0, H - h) x [0, W - w)`` (the last row and column
  of corners are never drawn, as in the reference);
- targets are drawn freely; the context block is redrawn until more than ``min_keep`` of its
  patches lie outside every target. After 20 failed draws the last target stops constraining it,
  after 20 more the one before, and so on;
- indices are in row-major order, and every context set is cut to the batch's smallest (the
  targets all have ``h * w`` patches), so the sets stack into ``[B, K]`` tensors.

Departures: the reference draws in its DataLoader collator with a Python loop per image and per
retry; here the whole batch is drawn in a fixed number of tensor operations: every candidate context
position (20 per constraint level) is drawn at once and the first valid one is taken, which is the
same distribution as the reference's loop. The block sizes come from the given generator (or torch's
global one) rather than from a generator seeded with a batch counter. Only one context block
(``nenc = 1``, as every reference config); a setting that could never give a valid block (the
reference would loop forever) is a ``ValueError`` at construction.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

TRIES_PER_LEVEL = 20  # the reference's retries before a target stops constraining the context


class MultiBlockMasks(NamedTuple):
    context: torch.Tensor  # [B, Kc] int64 patch indices the context encoder sees, ascending
    targets: torch.Tensor  # [B, M, Kt] int64 patch indices of each of the M target blocks, row-major


def block_size(
    u: float, grid: tuple[int, int], scale: tuple[float, float], aspect: tuple[float, float]
) -> tuple[int, int]:
    """``(h, w)`` in patches of a block drawn with uniform ``u`` (the reference's
    ``_sample_block_size``: one ``u`` for both the scale and the aspect ratio)."""
    height, width = grid
    area = int(height * width * (scale[0] + u * (scale[1] - scale[0])))
    ratio = aspect[0] + u * (aspect[1] - aspect[0])
    h = int(round(math.sqrt(area * ratio)))
    w = int(round(math.sqrt(area / ratio)))
    return min(h, height - 1), min(w, width - 1)


class MultiBlockMaskSampler:
    """Draws :class:`MultiBlockMasks` for a batch (see the module docstring for the rules).

    Args:
        grid_size: the patch grid ``(H, W)`` (the encoder's ``patch_embed.grid_size``).
        num_targets: target blocks per image (4).
        target_scale: range of a target block's area as a fraction of the grid (0.15-0.2).
        target_aspect: range of a target block's height / width (0.75-1.5).
        context_scale: range of the context block's area before the targets are removed (0.85-1).
        min_keep: a context (and a target) must keep more than this many patches (10).
        allow_overlap: let the context include target patches (off in the paper).
    """

    def __init__(
        self,
        grid_size: tuple[int, int],
        num_targets: int = 4,
        target_scale: tuple[float, float] = (0.15, 0.2),
        target_aspect: tuple[float, float] = (0.75, 1.5),
        context_scale: tuple[float, float] = (0.85, 1.0),
        min_keep: int = 10,
        allow_overlap: bool = False,
    ) -> None:
        self.grid = (int(grid_size[0]), int(grid_size[1]))
        self.num_targets = int(num_targets)
        self.target_scale = tuple(float(v) for v in target_scale)
        self.target_aspect = tuple(float(v) for v in target_aspect)
        self.context_scale = tuple(float(v) for v in context_scale)
        self.min_keep = int(min_keep)
        self.allow_overlap = bool(allow_overlap)
        if self.num_targets < 1 or min(self.grid) < 2:
            raise ValueError(
                f"multi-block masks need num_targets >= 1 and a patch grid of at least 2x2, got "
                f"{self.num_targets} targets on {self.grid}: use smaller patches."
            )
        for name, (low, high) in (("target_scale", self.target_scale), ("context_scale", self.context_scale)):
            if not 0.0 < low <= high <= 1.0:
                raise ValueError(f"{name} must satisfy 0 < low <= high <= 1, got {(low, high)}.")
        if not 0.0 < self.target_aspect[0] <= self.target_aspect[1]:
            raise ValueError(f"target_aspect must satisfy 0 < low <= high, got {self.target_aspect}.")
        self._check_sizes()

    def _check_sizes(self) -> None:
        """The reference loops forever when a block can never hold more than ``min_keep`` patches;
        check every size the draw can give (sizes change in steps, so a fine sweep of ``u`` finds
        them all)."""
        for kind, scale, aspect in (
            ("target", self.target_scale, self.target_aspect),
            ("context", self.context_scale, (1.0, 1.0)),
        ):
            for step in range(1001):
                h, w = block_size(step / 1000, self.grid, scale, aspect)
                if h * w <= self.min_keep:
                    raise ValueError(
                        f"{kind} blocks of {h}x{w} patches on the {self.grid[0]}x{self.grid[1]} grid never "
                        f"keep more than min_keep={self.min_keep} patches: lower min_keep or use smaller patches."
                    )

    def __call__(self, batch_size: int, generator: torch.Generator | None = None) -> MultiBlockMasks:
        """Masks for ``batch_size`` images, on the CPU (draw them before the step and copy them to the
        device; ``generator`` makes them reproducible)."""
        height, width = self.grid
        u = torch.rand(2, generator=generator, dtype=torch.float64).tolist()  # CPU: no device sync
        th, tw = block_size(u[0], self.grid, self.target_scale, self.target_aspect)
        ch, cw = block_size(u[1], self.grid, self.context_scale, (1.0, 1.0))
        shape = (batch_size, self.num_targets)
        t_top = torch.randint(0, height - th, shape, generator=generator)
        t_left = torch.randint(0, width - tw, shape, generator=generator)
        rows, cols = torch.arange(th), torch.arange(tw)
        targets = (t_top[..., None, None] + rows[:, None]) * width + t_left[..., None, None] + cols
        targets = targets.reshape(batch_size, self.num_targets, th * tw)  # row-major within each block
        context = self._context(batch_size, (ch, cw), t_top, t_left, (th, tw), generator)
        return MultiBlockMasks(context, targets)

    def _context(
        self,
        batch_size: int,
        size: tuple[int, int],
        t_top: torch.Tensor,
        t_left: torch.Tensor,
        t_size: tuple[int, int],
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        height, width = self.grid
        (ch, cw), m = size, self.num_targets
        levels = 1 if self.allow_overlap else m + 1
        candidates = levels * TRIES_PER_LEVEL
        top = torch.randint(0, height - ch, (batch_size, candidates), generator=generator)
        left = torch.randint(0, width - cw, (batch_size, candidates), generator=generator)
        rows = torch.arange(batch_size)
        if self.allow_overlap:
            chosen = torch.zeros(batch_size, dtype=torch.long)  # every draw keeps ch * cw > min_keep patches
            block = _boxes(top[rows, chosen], left[rows, chosen], size, self.grid)
            keep = ch * cw
        else:
            targets = _boxes(t_top, t_left, t_size, self.grid)  # [B, M, H, W]
            # covered[:, n] = union of the first n targets (n = 0: nothing)
            covered = torch.cat([torch.zeros_like(targets[:, :1]), targets.cummax(dim=1).values], dim=1)
            in_force = (m - torch.arange(candidates) // TRIES_PER_LEVEL).expand(batch_size, -1)
            # patches of each candidate block outside the targets in force, from 2-D prefix sums of
            # `covered` (four look-ups per candidate instead of a [B, C, H, W] mask)
            sums = covered.to(torch.int32).cumsum(-1, dtype=torch.int32).cumsum(-2, dtype=torch.int32)
            sums = F.pad(sums, (1, 0, 1, 0)).flatten(1)  # [B, (M+1)(H+1)(W+1)]

            def corner(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
                return sums.gather(1, (in_force * (height + 1) + y) * (width + 1) + x)

            hidden = (
                corner(top + ch, left + cw)
                - corner(top, left + cw)
                - corner(top + ch, left)
                + corner(top, left)
            )
            counts = ch * cw - hidden  # [B, C]
            chosen = (
                (counts > self.min_keep).int().argmax(dim=1)
            )  # the first valid draw (the last level always is)
            block = _boxes(top[rows, chosen], left[rows, chosen], size, self.grid)
            block = block & ~covered[rows, in_force[rows, chosen]]
            keep = int(counts[rows, chosen].min())  # CPU tensor: no device sync
        mask = block.flatten(1)  # [B, L]
        # indices of the kept patches in ascending order, cut to the batch's smallest count
        order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)
        return order[:, :keep]


def _boxes(
    top: torch.Tensor, left: torch.Tensor, size: tuple[int, int], grid: tuple[int, int]
) -> torch.Tensor:
    """``[...]`` corners → ``[..., H, W]`` boolean boxes of ``size`` patches."""
    rows = torch.arange(grid[0])
    cols = torch.arange(grid[1])
    inside_rows = (rows >= top[..., None]) & (rows < top[..., None] + size[0])
    inside_cols = (cols >= left[..., None]) & (cols < left[..., None] + size[1])
    return inside_rows[..., :, None] & inside_cols[..., None, :]
