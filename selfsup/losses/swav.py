"""SwAV's swapped prediction (Caron et al., 2020, "Unsupervised Learning of Visual Features by
Contrasting Cluster Assignments", eq. 1-3 and sec. 3.2): the codes of each assigned crop, computed by
Sinkhorn-Knopp over the global batch (and a queue of earlier embeddings), are predicted from the
prototype scores of every other crop, with a softmax at ``temperature``.

Followed: facebookresearch/swav ``main_swav.py`` (``train``: the loop over ``crops_for_assign``, the
queue rows placed before the batch and dropped from the codes, the mean over the other crops and the
assigned ones; ``distributed_sinkhorn``, which is :func:`selfsup.losses.sinkhorn.sinkhorn_knopp`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.losses.sinkhorn import sinkhorn_knopp


class SwAVLoss(nn.Module):
    """``mean_{i < assigned} mean_{v != i} CE(q_i, softmax(scores_v / temperature))`` where
    ``q_i = sinkhorn(scores_i)`` (no gradient) are the codes of crop ``i``.

    Args:
        temperature: of the prediction's softmax (0.1).
        epsilon: of the Sinkhorn-Knopp codes (0.05).
        sinkhorn_iterations: 3.

    Shapes:
        scores: one ``[N, K]`` tensor per crop (prototype scores of the normalised embeddings), the
            crops to assign first (the global ones).
        assigned: how many of the first crops get codes (the reference's ``crops_for_assign``: 2).
        queue_scores: None, or one ``[Q, K]`` tensor per assigned crop: the prototype scores of
            earlier embeddings of that crop, which join the Sinkhorn-Knopp normalisation only.
        Returns a scalar, this process's loss; the codes are computed over the global batch
        (Sinkhorn-Knopp's sums are all-reduced), so every process must call it.
    """

    def __init__(self, temperature: float = 0.1, epsilon: float = 0.05, sinkhorn_iterations: int = 3) -> None:
        super().__init__()
        for name, value in (("temperature", temperature), ("epsilon", epsilon)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
        if (
            isinstance(sinkhorn_iterations, bool)
            or not isinstance(sinkhorn_iterations, int)
            or sinkhorn_iterations < 1
        ):
            raise ValueError(f"sinkhorn_iterations must be an int >= 1, got {sinkhorn_iterations!r}.")
        self.temperature = float(temperature)
        self.epsilon = float(epsilon)
        self.sinkhorn_iterations = sinkhorn_iterations

    def forward(
        self,
        scores: Sequence[torch.Tensor],
        assigned: int = 2,
        queue_scores: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        crops = len(scores)
        if not 1 <= assigned <= crops or crops < 2:
            raise ValueError(
                f"SwAVLoss needs at least 2 crops and 1 <= assigned <= crops, got {crops} crops and assigned={assigned}."
            )
        if len({s.shape for s in scores}) != 1 or scores[0].ndim != 2:
            raise ValueError(
                f"SwAVLoss expects one [N, K] tensor per crop, got {[tuple(s.shape) for s in scores]}."
            )
        if queue_scores is not None and len(queue_scores) != assigned:
            raise ValueError(
                f"queue_scores must hold one tensor per assigned crop ({assigned}), got {len(queue_scores)}."
            )
        n = scores[0].shape[0]
        # the log-softmax of every crop once: [crops, N, K], in float32 or wider
        dtype = torch.promote_types(scores[0].dtype, torch.float32)
        log_probs = F.log_softmax(torch.stack(list(scores)).to(dtype) / self.temperature, dim=-1)
        loss = log_probs.new_zeros(())
        for i in range(assigned):
            with torch.no_grad():
                out = scores[i].detach()
                if queue_scores is not None:  # the queue first, then the batch, as the reference
                    out = torch.cat([queue_scores[i].detach().to(out.dtype), out])
                codes = sinkhorn_knopp(out, self.epsilon, self.sinkhorn_iterations)[-n:].to(dtype)
            others = torch.cat([log_probs[:i], log_probs[i + 1 :]])  # [crops - 1, N, K]
            loss = loss - (codes * others).sum(dim=-1).mean()  # the mean over the other crops and samples
        return loss / assigned
