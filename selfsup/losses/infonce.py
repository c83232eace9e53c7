"""InfoNCE / NT-Xent, the SimCLR objective (Chen et al., 2020, "A Simple Framework for Contrastive
Learning of Visual Representations", eq. 1)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import distributed


class InfoNCELoss(nn.Module):
    """Normalised-temperature cross entropy over the 2N views of a batch.

    For each of the 2N views, the positive is the other view of the same image and the negatives are
    the remaining 2N - 2 views (of the global batch when ``gather_distributed`` is on and a process
    group is active). The loss is the mean over all 2N anchors:

        l(i, j) = -log( exp(sim(z_i, z_j) / t) / sum_{k != i} exp(sim(z_i, z_k) / t) )

    with ``sim`` the cosine similarity.

    Args:
        temperature: ``t`` above, > 0. SimCLR uses 0.1 to 0.5 (0.1 with large batches).
        gather_distributed: gather embeddings from all processes so that every sample sees the
            global batch as negatives; gradients flow back to every rank (see ``selfsup.distributed``).

    Shapes:
        z1, z2: ``[N, D]`` projections of view 1 and view 2 (row ``i`` of each is the same image).
        Returns a scalar: the mean over this process's 2N anchors. Under DDP (which averages
        gradients over ranks) this optimises the mean over the global batch.
    """

    def __init__(self, temperature: float = 0.1, gather_distributed: bool = True) -> None:
        super().__init__()
        if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")
        self.temperature = float(temperature)
        self.gather_distributed = bool(gather_distributed)

    def negatives_per_sample(self, local_batch_size: int) -> int:
        """Number of negatives each anchor is contrasted with: 2 * (global batch) - 2."""
        world = distributed.world_size() if self.gather_distributed else 1
        return 2 * local_batch_size * world - 2

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        if z1.ndim != 2 or z1.shape != z2.shape:
            raise ValueError(
                f"InfoNCELoss expects two [N, D] tensors of the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}."
            )
        n = z1.shape[0]
        world = distributed.world_size() if self.gather_distributed else 1
        if n * world < 2:
            raise ValueError(
                "InfoNCELoss needs at least 2 images in the (global) batch: with a batch of 1 there are "
                "no negatives. Increase the batch size."
            )
        anchors = F.normalize(torch.cat([z1, z2]), dim=1)  # [2n, D]: this process's views, 1 then 2
        if self.gather_distributed and world > 1:
            # one collective for both views: rank r's rows are [z1_r; z2_r] at r * 2n
            candidates = distributed.gather(anchors)  # [world * 2n, D]
            offset = distributed.rank() * 2 * n
        else:
            candidates, offset = anchors, 0
        logits = anchors @ candidates.T / self.temperature  # [2n, world * 2n]
        rows = torch.arange(2 * n, device=z1.device)
        self_cols = rows + offset
        positive_cols = (rows + n) % (2 * n) + offset  # view 1 <-> view 2 of the same image
        # an anchor is never its own negative
        logits = logits.scatter(1, self_cols[:, None], float("-inf"))
        return F.cross_entropy(logits, positive_cols)
