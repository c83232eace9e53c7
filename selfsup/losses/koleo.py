"""The KoLeo regulariser (Sablayrolles et al., 2019, "Spreading vectors for similarity search",
sec. 3.3; used on the student's class tokens by Oquab et al., 2023, "DINOv2", sec. 5.1): the
Kozachenko-Leonenko differential-entropy estimate of a batch of L2-normalised features, which pushes
every feature away from its nearest neighbour in the batch.

Followed: facebookresearch/dinov2 ``dinov2/loss/koleo_loss.py`` (``KoLeoLoss``): normalise, find
each row's nearest other row by inner product, ``-mean(log(||x_i - x_nn(i)|| + eps))``, in float32
with autocast off, per process (no gather, as the reference). Departure: the self-similarity on the
diagonal is set to -2 (below any cosine) rather than -1, so two antipodal rows (cosine -1) cannot
pick themselves as their neighbour, as lightly's ``KoLeoLoss`` does.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn


class KoLeoLoss(nn.Module):
    """``[B, D]`` features → ``-1/B sum_i log(||z_i - z_j(i)|| + eps)``, with ``z = x / ||x||`` and
    ``j(i)`` the nearest other row of ``z`` (largest inner product). The neighbour search carries no
    gradient; the distance carries it to both ``z_i`` and ``z_j(i)``, as in the reference.

    Args:
        eps: added to the distance inside the log, and used by the normalisation and
            ``pairwise_distance`` (1e-8 in the reference).

    A batch needs at least 2 rows. The loss is computed on this process's rows only (the reference's
    choice: a gather would make the neighbours global but cost an all-gather of the features).
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"eps must be a number > 0 (1e-8 in DINOv2), got {eps!r}.")
        self.eps = float(eps)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError(
                f"features must be [B, D] with B >= 2 (a nearest neighbour needs another row), got shape "
                f"{tuple(features.shape)}."
            )
        device = features.device.type
        off = (
            torch.autocast(device, enabled=False)
            if torch.amp.is_autocast_available(device)
            else nullcontext()
        )
        with off:
            z = F.normalize(
                features.float() if features.dtype != torch.float64 else features, p=2, dim=-1, eps=self.eps
            )
            with torch.no_grad():
                similarity = z @ z.t()
                similarity.fill_diagonal_(-2.0)
                neighbour = similarity.argmax(dim=1)
            distance = F.pairwise_distance(z, z[neighbour], p=2, eps=self.eps)
            return -torch.log(distance + self.eps).mean()
