"""BYOL's symmetrised regression loss (Grill et al., 2020, "Bootstrap Your Own Latent", eq. 2):
the squared distance of L2-normalised predictions and targets, ``2 - 2 cos``, for each view's
prediction against the other view's target, with no gradient to the targets.

Followed: deepmind/deepmind-research ``byol/utils/helpers.py`` (``regression_loss``,
``l2_normalize``) and ``byol/byol_experiment.py`` (``_loss_fn``: the two directions summed, then the
mean over the batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NegativeCosineLoss(nn.Module):
    """``mean_i (2 - 2 cos(p1_i, z2_i)) + mean_i (2 - 2 cos(p2_i, z1_i))``, targets detached.

    ``2 - 2 cos(p, z) = ||p / ||p|| - z / ||z||||^2`` is the reference's form; it is an affine
    function of the negative cosine similarity (lightly's ``NegativeCosineSimilarity``, SimSiam's
    ``D``), so the two have the same minimisers and gradients up to the factor 2 per direction.
    The loss lies in ``[0, 8]`` and is 0 when each prediction points along the other view's target.

    Shapes:
        p1, p2: ``[N, D]`` predictions of the online branch for views 1 and 2.
        z1, z2: ``[N, D]`` projections of the target branch for views 1 and 2 (row ``i`` of all four
            is the same image). Returns a scalar: the mean over this process's images (DDP averages
            the gradients over processes, which optimises the mean over the global batch).
    """

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}.")
        # the reference clamps the squared norm at 1e-12 (norm 1e-6) before dividing
        self.eps = float(eps)

    def forward(self, p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        shapes = [tuple(t.shape) for t in (p1, p2, z1, z2)]
        if p1.ndim != 2 or len(set(shapes)) != 1:
            raise ValueError(
                f"NegativeCosineLoss expects four [N, D] tensors of the same shape (p1, p2, z1, z2), got {shapes}."
            )
        return self.regression(p1, z2) + self.regression(p2, z1)

    def regression(self, p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``mean_i (2 - 2 cos(p_i, z_i))`` with ``z`` detached, in float32 or wider."""
        dtype = torch.promote_types(p.dtype, torch.float32)
        p = F.normalize(p.to(dtype), dim=1, eps=self.eps)
        z = F.normalize(z.detach().to(dtype), dim=1, eps=self.eps)
        return (2 - 2 * (p * z).sum(dim=1)).mean()
