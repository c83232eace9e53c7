"""The Barlow Twins loss (Zbontar, Jing, Misra, LeCun, Deny, 2021, "Barlow Twins: Self-Supervised
Learning via Redundancy Reduction", eq. 1-2): the cross-correlation matrix of the two views'
batch-normalised embeddings is pushed to the identity, its diagonal to 1 (invariance) and its
off-diagonal entries to 0 (redundancy reduction), the latter weighted by ``lambda``.

Followed: facebookresearch/barlowtwins ``main.py`` (``BarlowTwins.forward``, ``off_diagonal``, the
argument ``--lambd`` 0.0051): the embeddings are normalised by a BatchNorm without affine
parameters that the reference turns into a SyncBatchNorm (statistics of the global batch), and the
matrix ``bn(z1)^T bn(z2) / N`` is summed over processes.

Departure: here the embeddings are gathered from every process with gradients
(:func:`selfsup.distributed.gather`), so every process computes the loss of the global batch and
DDP's average of the gradients is that loss's gradient. The reference all-reduces ``c`` outside
autograd, so its gradient under DDP is that one divided by the number of processes (LARS's
trust ratio hides most of the difference). The values of the loss are the same.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import distributed


class BarlowTwinsLoss(nn.Module):
    """``sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2`` with
    ``C = bn(z1)^T bn(z2) / N``, where ``bn`` standardises every dimension over the global batch of
    ``N`` images (batch mean, biased variance plus ``eps``: a training-mode BatchNorm without affine
    parameters).

    Args:
        lambda_: the weight of the off-diagonal term (0.0051 in the reference's ``main.py``; the
            paper writes 5e-3).
        eps: the BatchNorm's epsilon (1e-5, PyTorch's default).
        gather_distributed: normalise and correlate over the global batch (the reference's).

    Shapes:
        z1, z2: ``[N, D]`` projector outputs of views 1 and 2. Returns a scalar, the same on every
        process. Computed in float32 or wider.
    """

    def __init__(self, lambda_: float = 0.0051, eps: float = 1e-5, gather_distributed: bool = True) -> None:
        super().__init__()
        if (
            isinstance(lambda_, bool)
            or not isinstance(lambda_, (int, float))
            or not math.isfinite(lambda_)
            or lambda_ < 0
        ):
            raise ValueError(
                f"lambda_ must be a finite number >= 0 (0.0051 in the reference), got {lambda_!r}."
            )
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}.")
        self.lambda_ = float(lambda_)
        self.eps = float(eps)
        self.gather_distributed = bool(gather_distributed)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        on_diagonal, off_diagonal = self.terms(z1, z2)
        return on_diagonal + self.lambda_ * off_diagonal

    def terms(self, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``sum_i (1 - C_ii)^2`` and ``sum_{i != j} C_ij^2`` (for logging)."""
        if z1.ndim != 2 or z1.shape != z2.shape:
            raise ValueError(
                f"BarlowTwinsLoss expects two [N, D] tensors of the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}."
            )
        dtype = torch.promote_types(z1.dtype, torch.float32)
        both = torch.cat([z1, z2], dim=1).to(dtype)  # one collective for both views
        if self.gather_distributed:
            both = distributed.gather(both)
        n = both.shape[0]
        if n < 2:
            raise ValueError(
                "BarlowTwinsLoss needs at least 2 images in the (global) batch to normalise over it. "
                "Increase the batch size."
            )
        both = F.batch_norm(both, None, None, training=True, eps=self.eps)  # per column: z1's, then z2's
        a, b = both.chunk(2, dim=1)
        c = a.T @ b / n
        on_diagonal = (c.diagonal() - 1).pow(2).sum()
        off_diagonal = c.fill_diagonal_(0).pow(2).sum()  # in place: no second D x D matrix
        return on_diagonal, off_diagonal
