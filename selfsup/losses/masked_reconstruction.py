"""MAE's reconstruction loss (He et al. 2022, sec. 3 "Reconstruction target")."""

from __future__ import annotations

import torch
from torch import nn


class MaskedReconstructionLoss(nn.Module):
    """Mean squared error between predicted and target patches, averaged over masked patches only.

    With ``norm_pix_loss`` (the paper's default for its best results) each target patch is first
    normalised by the mean and variance of its own pixels: ``(t - mean(t)) / sqrt(var(t) + eps)``,
    with the unbiased variance, as in the reference implementation.

    Shapes:
        pred, target: ``[B, L, p * p * C]``.
        mask: ``[B, L]``, 1 = masked (counted), 0 = visible (ignored). Where nothing is masked
            (mask ratio 0), the mean is over all patches: the paper's "loss on all pixels" variant.
        Returns a scalar.
    """

    def __init__(self, norm_pix_loss: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}.")
        self.norm_pix_loss = norm_pix_loss
        self.eps = eps

    def normalize_target(self, target: torch.Tensor) -> torch.Tensor:
        if not self.norm_pix_loss:
            return target
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        return (target - mean) / (var + self.eps).sqrt()

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape or mask.shape != pred.shape[:2]:
            raise ValueError(
                f"expected pred and target [B, L, P] and mask [B, L], got {tuple(pred.shape)}, "
                f"{tuple(target.shape)}, {tuple(mask.shape)}."
            )
        per_patch = (pred.float() - self.normalize_target(target.float())).pow(2).mean(dim=-1)  # [B, L]
        mask = mask.float()
        # nothing masked → every patch counts (without a host sync inside the training step)
        weights = torch.where(mask.sum() > 0, mask, torch.ones_like(mask))
        return (per_patch * weights).sum() / weights.sum()
