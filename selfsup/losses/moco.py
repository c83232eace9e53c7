"""MoCo v3's symmetric contrastive loss (Chen, Xie, He, 2021, "An Empirical Study of Training
Self-Supervised Vision Transformers", Algorithm 1).

Followed: facebookresearch/moco-v3 ``moco/builder.py`` (``MoCo.contrastive_loss`` and ``forward``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import distributed


class MoCoV3Loss(nn.Module):
    """``ctr(q1, k2) + ctr(q2, k1)`` with

        ctr(q, k) = 2 tau * CE(q_n k_n_all^T / tau, labels = rank * N + arange(N))

    where ``q_n``, ``k_n`` are L2-normalised, ``k_all`` are the keys of every process in rank order
    (``gather_distributed``), and query ``i``'s positive is its own image's key. The factor ``2 tau``
    is the reference's (it makes the gradient's scale independent of ``tau``).

    Why not :class:`selfsup.losses.InfoNCELoss`: that is SimCLR's NT-Xent over the ``2N`` views,
    where every view is an anchor and a candidate, the other view is the positive, and the anchor
    itself is masked out. MoCo's is an ``N``-way cross-entropy of queries (base branch, with
    gradients) against keys only (momentum branch, no gradients, gathered without a backward), with
    no self-mask; no argument of ``InfoNCELoss`` turns one into the other.

    Keys are detached: they come from the momentum encoder, and a key gathered from another process
    could not carry a gradient anyway (the same loss with or without a process group).

    Args:
        temperature: ``tau`` > 0 (0.2 for ViTs in MoCo v3; the reference's default 1.0 is its ResNet's).
        gather_distributed: contrast each query with the keys of all processes (the global batch).

    Shapes:
        q1, q2: ``[N, D]`` predictor outputs of the base branch for views 1 and 2.
        k1, k2: ``[N, D]`` projector outputs of the momentum branch for views 1 and 2 (row ``i`` of
            all four is the same image).
        Returns a scalar: this process's loss (the mean over its queries). Under DDP, which averages
        gradients over processes, this optimises the mean over the global batch.
    """

    def __init__(self, temperature: float = 0.2, gather_distributed: bool = True) -> None:
        super().__init__()
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or not math.isfinite(temperature)
            or temperature <= 0
        ):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")
        self.temperature = float(temperature)
        self.gather_distributed = bool(gather_distributed)

    def negatives_per_sample(self, local_batch_size: int) -> int:
        """Keys each query is contrasted with besides its positive: global batch - 1."""
        world = distributed.world_size() if self.gather_distributed else 1
        return local_batch_size * world - 1

    def forward(self, q1: torch.Tensor, q2: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
        shapes = [tuple(t.shape) for t in (q1, q2, k1, k2)]
        if q1.ndim != 2 or len(set(shapes)) != 1:
            raise ValueError(
                f"MoCoV3Loss expects four [N, D] tensors of the same shape (q1, q2, k1, k2), got {shapes}."
            )
        n = q1.shape[0]
        world = distributed.world_size() if self.gather_distributed else 1
        if n * world < 2:
            raise ValueError(
                "MoCoV3Loss needs at least 2 images in the (global) batch: with one there are no negatives. "
                "Increase the batch size."
            )
        keys = F.normalize(torch.cat([k1, k2]).detach(), dim=1)  # [2n, D]: this process's k1 then k2
        if self.gather_distributed and world > 1:
            # one collective for both views; rank r's rows are [k1_r; k2_r]
            gathered = distributed.gather_no_grad(keys).view(world, 2, n, -1)
            k1_all, k2_all = gathered[:, 0].reshape(world * n, -1), gathered[:, 1].reshape(world * n, -1)
            offset = distributed.rank() * n
        else:
            k1_all, k2_all, offset = keys[:n], keys[n:], 0
        labels = torch.arange(n, device=q1.device) + offset
        return self._contrast(q1, k2_all, labels) + self._contrast(q2, k1_all, labels)

    def _contrast(self, q: torch.Tensor, keys: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = F.normalize(q, dim=1) @ keys.to(q.dtype).T / self.temperature  # [n, world * n]
        return F.cross_entropy(logits, labels) * (2 * self.temperature)
