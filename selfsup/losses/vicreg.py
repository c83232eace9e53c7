"""VICReg's loss (Bardes, Ponce, LeCun, 2022, "VICReg: Variance-Invariance-Covariance
Regularization for Self-Supervised Learning", eq. 1-6): invariance (mean squared error of the two
views' embeddings), variance (a hinge keeping every dimension's standard deviation at 1) and
covariance (the squared off-diagonal covariances, pushed to 0).

Followed: facebookresearch/vicreg ``main_vicreg.py`` (``VICReg.forward``, ``off_diagonal``,
``FullGatherLayer``): the invariance term on this process's batch, the variance and covariance terms
on the embeddings gathered from every process (with gradients to every process), the covariance
divided by ``N - 1`` of the global batch and the squared covariances by the dimension.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import distributed


class VICRegLoss(nn.Module):
    """``invariance_weight * inv + variance_weight * var + covariance_weight * cov`` with

        inv = mean_{i,d} (z1_id - z2_id)^2                      (this process's N images)
        var = (mean_d relu(1 - sqrt(Var(z1)_d + eps)) + the same for z2) / 2
        cov = sum_{d != e} C(z1)_de^2 / D + the same for z2

    where ``Var`` (unbiased) and the covariance ``C`` are over the global batch (every process's
    embeddings, gathered with gradients when ``gather_distributed``).

    Under DDP each process returns its own invariance term plus the same variance and covariance
    terms; DDP's average of the gradients is then the gradient of the global batch's loss (equal
    batches per process), as in the reference.

    Args:
        invariance_weight, variance_weight, covariance_weight: ``lambda``, ``mu``, ``nu`` (25, 25, 1).
        eps: added to the variance under the square root (1e-4).
        gather_distributed: compute the variance and covariance over the global batch.

    Shapes:
        z1, z2: ``[N, D]`` embeddings (the expander's outputs) of views 1 and 2. Returns a scalar.
        The terms are computed in float32 or wider (the covariance of 8192 dimensions in bf16 loses
        the small off-diagonal values).
    """

    def __init__(
        self,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        eps: float = 1e-4,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (
            ("invariance_weight", invariance_weight),
            ("variance_weight", variance_weight),
            ("covariance_weight", covariance_weight),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}.")
        self.weights = (float(invariance_weight), float(variance_weight), float(covariance_weight))
        self.eps = float(eps)
        self.gather_distributed = bool(gather_distributed)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return sum(w * t for w, t in zip(self.weights, self.terms(z1, z2), strict=True))

    def terms(self, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The unweighted invariance, variance and covariance terms (for logging)."""
        if z1.ndim != 2 or z1.shape != z2.shape:
            raise ValueError(
                f"VICRegLoss expects two [N, D] tensors of the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}."
            )
        dtype = torch.promote_types(z1.dtype, torch.float32)
        z1, z2 = z1.to(dtype), z2.to(dtype)
        invariance = F.mse_loss(z1, z2)
        if self.gather_distributed:
            # one collective for both views: rank r's rows are [z1_r, z2_r] side by side
            both = distributed.gather(torch.cat([z1, z2], dim=1))
            z1, z2 = both.chunk(2, dim=1)
        n, dim = z1.shape
        if n < 2:
            raise ValueError(
                "VICRegLoss needs at least 2 images in the (global) batch: the variance of one is undefined. "
                "Increase the batch size."
            )
        variance = (self._variance(z1) + self._variance(z2)) / 2
        covariance = (self._covariance(z1) + self._covariance(z2)) / dim
        return invariance, variance, covariance

    def _variance(self, z: torch.Tensor) -> torch.Tensor:
        return F.relu(1 - torch.sqrt(z.var(dim=0) + self.eps)).mean()

    @staticmethod
    def _covariance(z: torch.Tensor) -> torch.Tensor:
        """The sum of the squared off-diagonal entries of ``z``'s covariance matrix."""
        z = z - z.mean(dim=0)
        cov = z.T @ z / (z.shape[0] - 1)
        return cov.fill_diagonal_(0).pow(2).sum()
