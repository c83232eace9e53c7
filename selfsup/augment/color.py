"""Colour operations on whole batches with per-sample factors: torchvision's ``adjust_brightness``,
``adjust_contrast``, ``adjust_saturation``, ``adjust_hue`` and ``rgb_to_grayscale``, batched.

Brightness, contrast and saturation are each a per-pixel linear map followed by a clamp:
``clamp(f x + (1 - f) base)`` with ``base`` = 0, the image's mean gray, or the pixel's gray. So one
*round* of the jitter, where every sample applies whichever of the three its own order puts there
(or nothing), is one batched 3x3 matrix per sample (``bmm``) plus the contrast term from the
per-channel means, then a clamp: a fixed handful of kernels, whatever the mix of operations.

The hue shift is not linear (HSV). It is applied to the group of samples whose order puts it at a
given place, gathered with ``index_select`` (the groups are known on the host, from the CPU-drawn
order) — so each sample pays for one hue shift, not four. Evaluating all four orders with masks
would cost four hue shifts per sample.

Values may be in any scale ``[0, bound]`` (255 for uint8-valued floats): every operation is
homogeneous, so the clamps are to ``[0, bound]`` and no division by 255 is ever needed.
"""

from __future__ import annotations

import torch

from selfsup.augment.params import CONTRAST, HUE, SATURATION

# ITU-R 601-2 luma, torchvision's rgb_to_grayscale
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


def round_matrices(
    order: torch.Tensor, factors: torch.Tensor, jitter: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample matrices of the three linear jitter rounds: round ``r`` applies each sample's
    ``r``-th operation other than hue (identity where jitter is off).

    Args:
        order: ``[B, 4]`` permutations of (brightness, contrast, saturation, hue).
        factors: ``[B, 4]`` the factors (hue's is not used here).
        jitter: ``[B]`` bool.

    Returns:
        ``(M, G)``, each ``[3, B, 3, 3]``: round ``r`` is ``clamp(M[r] x + G[r] mean(x))`` where
        ``x`` is ``[3]`` per pixel and ``mean(x)`` the image's per-channel mean.
    """
    others = torch.sort((order == HUE).int(), dim=1, stable=True).indices[:, :3]  # places of the other three
    ops = order.gather(1, others).t()  # [3, B]: each round's operation per sample, in the sample's order
    f = factors[:, :3].gather(1, ops.t()).t()  # [3, B] its factor
    f = torch.where(jitter[None], f, torch.ones_like(f))
    eye = torch.eye(3, dtype=f.dtype, device=f.device)
    gray = torch.tensor(GRAY_WEIGHTS, dtype=f.dtype, device=f.device).expand(3, 3)  # rows: 1 w^T
    blend = (1 - f)[..., None, None] * gray  # (1 - f) 1 w^T
    matrix = f[..., None, None] * eye + blend * (ops == SATURATION)[..., None, None]
    means = blend * (ops == CONTRAST)[..., None, None]  # brightness: f I alone
    return matrix, means


def linear_round(
    x: torch.Tensor, matrix: torch.Tensor, means: torch.Tensor, bound: float, out: torch.Tensor | None = None
) -> torch.Tensor:
    """One jitter round on ``[B, 3, H, W]``: ``clamp(matrix x + means · channel_means(x), 0, bound)``
    with ``matrix`` and ``means`` ``[B, 3, 3]``, written to ``out`` (a new tensor when None; never
    ``x`` itself)."""
    b = x.shape[0]
    flat = x.view(b, 3, -1)
    offset = torch.bmm(means, flat.mean(-1, keepdim=True))  # [B, 3, 1]: the contrast term
    # bmm, then the offset in place (baddbmm first copies the broadcast offset into its output)
    y = torch.bmm(matrix, flat, out=None if out is None else out.view(b, 3, -1))
    return y.add_(offset).clamp_(0, bound).view_as(x)


def adjust_hue_(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """torchvision's ``adjust_hue`` per sample, in place: ``[N, 3, H, W]`` non-negative images (any
    scale) are overwritten and returned; ``shift`` ``[N]`` is a fraction of the colour circle. Value
    and saturation are kept; the hue moves.

    With ``h`` the shifted hue in sectors of 60° (in [0, 6)), ``C = max - min`` the chroma and
    ``d_c`` the distance on that circle from ``h`` to channel ``c``'s peak (red 0, green 2, blue 4),
    channel ``c`` is ``min + C * clamp(|3 - |h - 2c|| - 1, 0, 1)``: the HSV -> RGB formula, written
    with few passes (and few new tensors) over the batch, and no ``remainder`` on 3-channel data.
    """
    r, g, b = x.unbind(1)
    top = torch.maximum(torch.maximum(r, g), b)
    bottom = torch.minimum(torch.minimum(r, g), b)
    chroma = top - bottom
    # hue * chroma, with torchvision's tie rule (red first, then green, then blue)
    hue = torch.sub(r, g).add_(chroma, alpha=4)
    scratch = torch.sub(b, r).add_(chroma, alpha=2)
    torch.where(top == g, scratch, hue, out=hue)
    torch.where(top == r, torch.sub(g, b, out=scratch), hue, out=hue)
    # where chroma is 0 the numerator is 0 too; any tiny divisor gives hue 0 there, and where
    # 0 < chroma < tiny the output moves by at most chroma
    hue.div_(chroma.clamp(min=torch.finfo(x.dtype).tiny))
    hue.add_((6 * shift).to(x.dtype)[:, None, None])
    hue.sub_(torch.div(hue, 6, out=scratch).floor_(), alpha=6)  # into [0, 6)
    peaks = torch.arange(0, 6, 2, dtype=x.dtype, device=x.device)[None, :, None, None]  # a kernel, not a copy
    # |3 - |h - 2c|| = 3 - (circular distance to the peak), for h - 2c in (-6, 6)
    far = torch.sub(hue[:, None], peaks, out=x).abs_().sub_(3).abs_().clamp_(1, 2)
    return far.mul_(chroma[:, None]).add_(bottom.sub_(chroma)[:, None])
